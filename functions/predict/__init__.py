"""The predict Lambda: Function URL inference."""
