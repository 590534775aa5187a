"""Drift detection: pure statistics (``stats``), production windows, the weekly job and its report."""
