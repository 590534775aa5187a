"""Lambda entry points, one package per function."""
