"""The writer Lambda: SQS batches into the predictions table."""
