"""Data quality: the window's values against the training profile (``checks``)."""
