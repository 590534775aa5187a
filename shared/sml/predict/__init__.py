"""predict λ (Function URL): request validation, prediction, HTTP errors, the OpenAPI document and
capture of prediction events to SQS. Entry point: ``functions/predict/app.py``; the service is
``service``, validation ``validation``, capture ``capture`` (``capture_recovery`` re-sends misses).
"""
