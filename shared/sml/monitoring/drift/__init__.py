"""Data drift: the statistical tests (``stats``) and what a reference can certify (``power``)."""
