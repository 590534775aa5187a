"""The drift Lambda: the weekly drift job."""
