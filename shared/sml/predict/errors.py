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


class ModelError(Exception):
    """The model raised, or answered non-finite values, on input that passed validation.

    Not the caller's fault and not fixable by the caller: answered 500 ``model_error``, the cause
    logged with its traceback (``__cause__`` holds the model's exception, when it raised one).
    """


class ChampionUnavailable(Exception):
    """The champion could not be loaded (no pointer, artifact missing or corrupt, unpicklable,
    classes differing from the manifest): answered 503 ``model_unavailable``. ``__cause__`` holds
    the registry's :class:`~sml.core.errors.SmlError`."""


def as_api_error(error: Exception, request_id: str) -> ApiError:
    """The one mapping of predict's failures to HTTP answers.

    :param error: an :class:`ApiError` (returned as is), :class:`ModelError` (500 ``model_error``)
        or :class:`ChampionUnavailable` (503 ``model_unavailable``).
    :param request_id: the invocation's request id, which the message points the caller to (the
        details are in the function's log, not in the answer).
    :raises TypeError: any other exception (it is a bug, not an answer).
    """
    if isinstance(error, ApiError):
        return error
    if isinstance(error, ModelError):
        message = f"the model failed on this input; the function's log has the cause (request {request_id})"
        return ApiError(HTTPStatus.INTERNAL_SERVER_ERROR, "model_error", message)
    if isinstance(error, ChampionUnavailable):
        message = f"the model could not be loaded; the function's log has the reason (request {request_id})"
        return ApiError(HTTPStatus.SERVICE_UNAVAILABLE, "model_unavailable", message)
    raise TypeError(f"{type(error).__name__} has no HTTP answer") from error
