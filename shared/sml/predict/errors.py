"""The errors predict answers with, and their one JSON shape.

Every non-2xx response of the predict Function URL has the body::

    {"error": {"code": "not_finite", "field": "features.mean_radius", "message": "must be a finite number, got NaN"}}

``code`` is stable and machine-readable, ``field`` names where the problem is (a path into the
request body such as ``instances[3].size_band``, ``body`` for the body as a whole, or ``null``
when no field is at fault) and ``message`` says what is wrong in words.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any


class ApiError(Exception):
    """A request predict refuses or cannot serve: HTTP ``status``, ``code``, ``field``, ``message``."""

    def __init__(self, status: HTTPStatus, code: str, message: str, *, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.status = status
        self.code = code
        self.field = field
        self.message = message

    def to_document(self) -> dict[str, Any]:
        """The response body: ``{"error": {"code", "field", "message"}}``."""
        return {"error": {"code": self.code, "field": self.field, "message": self.message}}
