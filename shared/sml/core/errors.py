"""Errors a user can cause or fix; the CLI prints their message without a traceback."""


class SmlError(Exception):
    """A failure the user can act on; the message says what and where (file, option, version)."""
