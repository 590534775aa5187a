"""writer λ (SQS batches → MySQL): parse, insert idempotently, narrow down bad records (``batch``),
and send DLQ messages back to the queue (``replay``). Entry point: ``functions/writer/app.py``.
"""
