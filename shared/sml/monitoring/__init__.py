"""Monitoring (run weekly by the drift λ): data drift (``drift``), data quality
(``data_quality``) and model quality (``model_quality``) in one run. Production windows
(``windows``), the run (``job``), its configuration (``config``), stored runs (``store``), the
HTML report (``report``) and the SNS alert (``alerts``). Entry point: ``functions/drift/app.py``.
"""
