"""serverless-ml: scikit-learn inference on AWS Lambda with prediction capture and drift alerts.

Keep this module free of imports: each Lambda image installs only its own extra, so importing
``sml`` must never pull in a dependency that one of them lacks.
"""

__version__ = "0.1.0"
