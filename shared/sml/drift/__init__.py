"""drift λ (weekly): the monitoring run. Pure statistics (``stats``), production windows
(``windows``), the job (``job``), stored runs (``store``), the HTML report (``report``) and the
SNS alert (``alerts``). Entry point: ``functions/drift/app.py``.
"""
