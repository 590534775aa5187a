"""Predict's logic behind the Function URL: request validation, prediction, HTTP errors.

Pure apart from the model it is handed; the entry point (``functions/predict/app.py``) owns the
clients, the Powertools wiring and the mapping of :class:`~sml.inference.errors.ApiError` to
HTTP responses.
"""
