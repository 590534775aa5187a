"""Predict Lambda behind a Function URL: answers from the model in memory, never waits on the database.

Routes: ``POST /predict`` (``{"features": {...}}`` or ``{"instances": [...]}``), ``POST /feedback``
(labels for past predictions: one label object or ``{"labels": [...]}``, queued as ground-truth
events for the writer, answered 202; 503 when the queue does not take them), ``GET /health``,
``GET /openapi.json``. Every error is ``{"error": {"code", "field", "message"}}``, built in
:func:`_error_response` only. The champion is loaded on the first request of a container; then
the pointer is re-read at most every ``SML_CHAMPION_TTL_SECONDS`` in a background thread, which
swaps a promoted (or rolled back) version in once it is loaded (:mod:`sml.predict.champion`):
``ChampionSwitches`` counts swaps, ``ChampionRefreshFailures`` versions that could not load (the
current one keeps serving).

Capture: one event per row to SQS. If the queue cannot be reached the prediction is still returned,
``CaptureMisses`` counts it and each missed event is logged whole (``capture_miss`` and
``message_body`` keys) so it can be re-sent; ``SML_CAPTURE_FAIL_CLOSED=true`` answers 503 instead.

Refusals: a ``POST /predict`` answered 400/413/422 (the body or its values) also goes to the queue,
as one refusal event counting the refused values per feature and error code (issue 18, data
quality), sampled like predictions, and as the ``RefusedValues`` metric with dimension ``field``.
It never changes the answer: a refusal that cannot be sent is logged as a ``capture_miss``, also
under fail-closed (which is about recording predictions, not refusals). Routes that do not exist
(404/405) and ``POST /feedback`` are not feature data and are not counted.

When: ``SML_CAPTURE_MODE=after_response`` (the default) answers first; an internal Lambda extension,
registered here at import (Lambda's init phase), sends in the invocation's post-runtime phase
(:mod:`sml.predict.capture_extension`). Without an Extensions API (``AWS_LAMBDA_RUNTIME_API``
unset: unit tests, another runtime) capture sends inline and the log says so once. Fail-closed
always sends inline, before answering: it has to know.
"""

from __future__ import annotations

import time

# Started before the other imports: importing them is most of a cold start's init time.
_IMPORT_STARTED = time.perf_counter()

import functools
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import LambdaFunctionUrlResolver, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.metrics import MetricUnit, single_metric

from sml.core.aws import aws_client
from sml.predict.capture import CAPTURE_CLIENT_CONFIG, CapturedEvent, CaptureResult, PredictionCapture, publish_message_bodies
from sml.predict.capture_extension import ExtensionsApiError, PostResponseCapture
from sml.core.events import (
    EVENT_TYPE_FIELD,
    REFUSAL_EVENT_TYPE,
    EventValidationError,
    PredictionEvent,
    build_refusal_event,
    format_timestamp,
    serialise_ground_truth_event,
)
from sml.predict.errors import ApiError, ChampionUnavailable, ModelError, as_api_error
from sml.predict.feedback import feedback_response
from sml.predict.service import NOT_DECODED, predict_response
from sml.predict.validation import decode_json_body
from sml.lifecycle.registry import ModelRegistry
from sml.predict.champion import ChampionHolder, ChampionSwitch, ServedModel, load_served
from sml.core.settings import CaptureSettings, PredictSettings, SettingsError, load_settings

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME", "predict")
NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or "sml"
_REFUSAL_BODY_START = f'{{"{EVENT_TYPE_FIELD}":"{REFUSAL_EVENT_TYPE}"'  # how serialise_event starts a refusal
ROUTES = {"/predict": "POST", "/feedback": "POST", "/health": "GET", "/openapi.json": "GET"}

_TRUE = ("1", "y", "yes", "t", "true", "on")  # Powertools' strtobool


def tracing_enabled(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether Powertools' ``Tracer`` would trace here, by its own rules (``Tracer._is_tracer_disabled``,
    Powertools 3): inside a Lambda execution environment (``LAMBDA_TASK_ROOT`` set), not under SAM
    or Chalice local emulation, and ``POWERTOOLS_TRACE_DISABLED`` not true.

    Where it would not, predict builds no ``Tracer``: Powertools imports the X-Ray SDK even for a
    disabled one (a tenth of a second or more of every local cold start) and wraps each
    invocation in dummy segments.
    """
    if environ.get("POWERTOOLS_TRACE_DISABLED", "false").lower() in _TRUE:
        return False
    return bool(environ.get("LAMBDA_TASK_ROOT")) and not environ.get("AWS_SAM_LOCAL") and not environ.get("AWS_CHALICE_CLI_MODE")


logger = Logger(service=SERVICE)
metrics = Metrics(service=SERVICE, namespace=NAMESPACE)
tracer = Tracer(service=SERVICE) if tracing_enabled() else None
app = LambdaFunctionUrlResolver()

# Powertools keeps the current event in class attributes: one invocation at a time, as on Lambda.
# The local stack gives each container its own process; the lock still serialises callers that
# share one process (in-process tests, a FunctionUrlServer handed this handler directly).
_invocation_lock = threading.Lock()


@dataclass(frozen=True)
class PredictRuntime:
    """What a container builds once: settings, the champion (refreshed in the background) and the capture publisher."""

    settings: PredictSettings
    champion: ChampionHolder
    capture: PredictionCapture | None
    init_seconds: float

    @functools.cached_property
    def feedback_sqs(self) -> Any:
        """The SQS client labels are sent with (never sampled, unlike capture); None without a queue."""
        if self.settings.queue_url is None:
            return None
        return aws_client("sqs", self.settings, config=CAPTURE_CLIENT_CONFIG)


@functools.cache
def load_runtime() -> PredictRuntime:
    """Settings, clients and the verified champion, once per container (a failure is retried next request)."""
    started = time.perf_counter()
    settings = load_settings(PredictSettings)
    registry = ModelRegistry(
        aws_client("s3", settings), aws_client("ssm", settings), bucket=settings.bucket, app_name=settings.app_name, model_name=settings.model_name
    )
    load = functools.partial(
        load_served,
        registry,
        cache_dir=settings.model_cache_dir,
        sklearn_version_policy=settings.sklearn_version_policy,
        max_instances=settings.max_instances,
        max_body_bytes=settings.max_body_bytes,
    )
    first = load(None, request_id=app.lambda_context.aws_request_id)
    champion = ChampionHolder(
        first,
        read_pointer=registry.champion_version,
        load=functools.partial(load, warm_up=True),
        ttl_seconds=settings.champion_ttl_seconds,
        on_switch=_report_switch,
        on_failure=_report_refresh_failure,
    )
    return PredictRuntime(
        settings=settings, champion=champion, capture=_build_capture(settings), init_seconds=_IMPORT_SECONDS + time.perf_counter() - started
    )


def _report_switch(switch: ChampionSwitch) -> None:
    """The refresher swapped models (its own thread: the metric goes out as its own EMF record)."""
    logger.info(
        f"champion switched from {switch.previous} to {switch.current}",
        extra={"champion_switch": {"previous": switch.previous, "current": switch.current, "load_seconds": round(switch.load_seconds, 6)}},
    )
    _emit_metric("ChampionSwitches")


def _report_refresh_failure(version: str | None, error: Exception) -> None:
    """A refresh that failed: the current champion keeps serving; logged with the cause and counted."""
    what = f"version {version} could not be loaded" if version is not None else "the champion pointer could not be read"
    logger.error(f"champion refresh failed: {what}; the current version keeps serving", extra={"champion_refresh_failure": str(error)}, exc_info=error)
    _emit_metric("ChampionRefreshFailures")


def _emit_metric(name: str) -> None:
    with single_metric(name=name, unit=MetricUnit.Count, value=1, namespace=NAMESPACE, default_dimensions={"service": SERVICE}):
        pass


def _build_capture(settings: PredictSettings) -> PredictionCapture | None:
    if settings.capture_sampling_rate == 0.0:
        return None
    if settings.queue_url is None:
        raise SettingsError("SML_QUEUE_URL", "predict needs the events queue unless SML_CAPTURE_SAMPLING_RATE=0")
    sqs = aws_client("sqs", settings, config=CAPTURE_CLIENT_CONFIG)
    return PredictionCapture(sqs, settings.queue_url, sampling_rate=settings.capture_sampling_rate)


@app.post("/predict")
def predict() -> Response:
    runtime = load_runtime()
    served = runtime.champion.current()
    event = app.current_event.raw_event
    payload: Any = NOT_DECODED
    try:
        payload = served.service.decode_body(event.get("body"), is_base64=bool(event.get("isBase64Encoded")))
        request = served.service.schema.parse_request(payload)
        events = served.service.predict(request.rows, batch=request.batch)
    except ApiError as error:
        _capture_refusal(runtime, served, error, payload)
        raise
    logger.set_correlation_id(events[0].prediction_id)
    if runtime.capture is not None and not _defer_capture(runtime.settings, runtime.capture, events):
        _record_capture(runtime.capture.capture(events), fail_closed=runtime.settings.capture_fail_closed)
    metrics.add_metric(name="PredictionsServed", unit=MetricUnit.Count, value=len(events))
    warnings = served.service.range_warnings(request.rows) if runtime.settings.range_warnings else None
    return Response(HTTPStatus.OK.value, content_types.APPLICATION_JSON, predict_response(request, events, warnings))


def _capture_refusal(runtime: PredictRuntime, served: ServedModel, error: ApiError, payload: Any) -> None:
    """Count a refused request's values (``RefusedValues`` per field) and capture its refusal event.

    Never raises for the capture: the caller answers the 4xx whatever happens here (a refusal that
    cannot be sent is logged as a ``capture_miss``, even under fail-closed).
    """
    refused = served.service.refused_values(error, payload)
    for field, reasons in refused.items():
        metric = {"name": "RefusedValues", "unit": MetricUnit.Count, "value": sum(reasons.values()), "namespace": NAMESPACE}
        with single_metric(**metric, default_dimensions={"service": SERVICE}) as refused_metric:
            refused_metric.add_dimension(name="field", value=field)
    if runtime.capture is None:
        return
    manifest = served.loaded.manifest
    try:
        refusal = build_refusal_event(model_name=manifest.model_name, model_version=manifest.version, refused=refused)
    except EventValidationError as exc:  # a schema whose names the event contract refuses; the 4xx stands
        logger.error("refusal event not built", extra={"refusal_error": str(exc)})
        return
    if not _defer_capture(runtime.settings, runtime.capture, [refusal]):
        _record_capture(runtime.capture.capture([refusal]), fail_closed=False)


def _defer_capture(settings: PredictSettings, capture: PredictionCapture, events: Sequence[CapturedEvent]) -> bool:
    """Capture after the response: sample now, hand the events to the capture extension.

    :returns: false when the events must be sent inline instead (fail-closed, inline mode, no extension).
    """
    if settings.capture_fail_closed or settings.capture_mode != "after_response" or _capture_extension is None:
        return False
    if not _capture_extension.active:
        return False
    sampled = capture.sample(events)
    if len(sampled) < len(events):
        metrics.add_metric(name="CaptureSampledOut", unit=MetricUnit.Count, value=len(events) - len(sampled))
    if _capture_extension.defer(app.lambda_context.aws_request_id, sampled):
        return True
    _record_capture(capture.send(sampled), fail_closed=False)  # the extension stopped in between
    return True


def _record_capture(result: CaptureResult, *, fail_closed: bool) -> None:
    if result.sampled_out:
        metrics.add_metric(name="CaptureSampledOut", unit=MetricUnit.Count, value=result.sampled_out)
    if not result.misses:
        return
    metrics.add_metric(name="CaptureMisses", unit=MetricUnit.Count, value=len(result.misses))
    if fail_closed:
        reason = result.misses[0].reason
        logger.error("prediction events not captured; answering 503 (SML_CAPTURE_FAIL_CLOSED)", extra={"capture_failure": reason})
        raise ApiError(HTTPStatus.SERVICE_UNAVAILABLE, "capture_failed", "the prediction could not be recorded; retry later")
    _log_misses(result)


def _report_after_response(result: CaptureResult) -> None:
    """What the capture extension records after the response: the handler's metrics are flushed by
    then, so the count goes out as its own EMF record (same namespace and service dimension)."""
    if result.misses:
        metric = {"name": "CaptureMisses", "unit": MetricUnit.Count, "value": len(result.misses), "namespace": NAMESPACE}
        with single_metric(**metric, default_dimensions={"service": SERVICE}):
            pass
    _log_misses(result)


def _log_misses(result: CaptureResult) -> None:
    for miss in result.misses:
        kind = "refusal" if miss.body.startswith(_REFUSAL_BODY_START) else "prediction"
        logger.error(
            f"{kind} event not captured; re-send message_body to the events queue",
            extra={"capture_miss": miss.reason, f"{kind}_id": miss.event_id, "message_body": miss.body},
        )


@app.post("/feedback")
def feedback() -> Response:
    runtime = load_runtime()
    event = app.current_event.raw_event
    request = runtime.champion.current().feedback_schema.parse_request(_feedback_body(event, runtime.settings.max_body_bytes))
    if runtime.feedback_sqs is None:
        raise ApiError(HTTPStatus.SERVICE_UNAVAILABLE, "feedback_unavailable", "no events queue is configured (SML_QUEUE_URL); labels cannot be recorded")
    bodies = [(label.prediction_id, serialise_ground_truth_event(label)) for label in request.events]
    misses = publish_message_bodies(runtime.feedback_sqs, runtime.settings.queue_url, bodies)
    if misses:
        metrics.add_metric(name="FeedbackMisses", unit=MetricUnit.Count, value=len(misses))
        logger.error("labels not queued; answering 503", extra={"feedback_failure": misses[0].reason, "missed": len(misses)})
        message = f"{len(misses)} of {len(bodies)} labels could not be recorded; send the request again (a resent label changes nothing)"
        raise ApiError(HTTPStatus.SERVICE_UNAVAILABLE, "feedback_not_recorded", message)
    metrics.add_metric(name="FeedbackLabelsAccepted", unit=MetricUnit.Count, value=len(bodies))
    return Response(HTTPStatus.ACCEPTED.value, content_types.APPLICATION_JSON, feedback_response(request))


def _feedback_body(event: dict[str, Any], max_body_bytes: int) -> Any:
    body = event.get("body")
    if not body:
        raise ApiError(HTTPStatus.BAD_REQUEST, "empty_body", "send a JSON label object or {\"labels\": [...]}", field="body")
    return decode_json_body(body, is_base64=bool(event.get("isBase64Encoded")), max_bytes=max_body_bytes)


@app.get("/health")
def health() -> dict[str, Any]:
    runtime = load_runtime()
    served = runtime.champion.current()
    return {
        "status": "ok",
        "model_name": served.loaded.manifest.model_name,
        "model_version": served.version,
        "model_loaded_at": format_timestamp(served.loaded_at),
        "model_load_seconds": round(served.loaded.load_seconds, 6),
        "init_seconds": round(runtime.init_seconds, 6),
        "cold_start": served.loaded_by_request_id == app.lambda_context.aws_request_id,
    }


@app.get("/openapi.json")
def openapi() -> dict[str, Any]:
    return load_runtime().champion.current().openapi_document


@app.not_found
def _no_route(_: NotFoundError) -> Response:
    path = app.current_event.path
    if path in ROUTES:
        error = ApiError(HTTPStatus.METHOD_NOT_ALLOWED, "method_not_allowed", f"{path} accepts {ROUTES[path]} only")
        return _error_response(error, headers={"Allow": ROUTES[path]})
    message = f"no route {path}; try POST /predict, POST /feedback, GET /health or GET /openapi.json"
    return _error_response(ApiError(HTTPStatus.NOT_FOUND, "not_found", message))


@app.exception_handler(ApiError)
def _api_error(error: ApiError) -> Response:
    return _error_response(error)


@app.exception_handler(ModelError)
def _model_error(error: ModelError) -> Response:
    # The cause (the model's exception and traceback) goes to the log, not to the caller.
    logger.exception("the model failed on validated input", extra={"model_failure": str(error)}, exc_info=error)
    metrics.add_metric(name="ModelErrors", unit=MetricUnit.Count, value=1)
    return _error_response(error)


@app.exception_handler(ChampionUnavailable)
def _champion_unavailable(error: ChampionUnavailable) -> Response:
    # The details (bucket, parameter, versions) go to the log, not to the caller; the
    # ChampionUnavailable alarm counts these lines (their champion_unavailable key).
    logger.exception("the champion model could not be loaded", extra={"champion_unavailable": str(error)}, exc_info=error)
    return _error_response(error)


def _error_response(failure: Exception, headers: dict[str, str] | None = None) -> Response:
    """Every error answer is built here, from :func:`~sml.predict.errors.as_api_error`'s one mapping."""
    error = as_api_error(failure, app.lambda_context.aws_request_id)
    if error.status < HTTPStatus.INTERNAL_SERVER_ERROR:
        metrics.add_metric(name="RejectedRequests", unit=MetricUnit.Count, value=1)
    return Response(error.status.value, content_types.APPLICATION_JSON, error.to_document(), headers=headers)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The Lambda entry point: route the Function URL event and return the HTTP response payload."""
    with _invocation_lock:
        try:
            return _resolve(event, context)
        finally:
            if _capture_extension is not None:
                _capture_extension.end_invocation(context.aws_request_id)


@metrics.log_metrics(capture_cold_start_metric=True)
def _route(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return app.resolve(event, context)


_resolve = logger.inject_lambda_context(clear_state=True)(
    tracer.capture_lambda_handler(capture_response=False)(_route) if tracer is not None else _route
)


def start_capture_extension(environ: Mapping[str, str] = os.environ) -> PostResponseCapture | None:
    """Register the capture extension if this container captures after the response.

    Runs at import, Lambda's init phase (registrations are refused later). Returns ``None``,
    and logs why once, when events are to be sent inline instead: ``SML_CAPTURE_MODE=inline``,
    fail-closed, nothing to capture, invalid settings (every request reports those), no
    Extensions API or a refused registration. ``SIGTERM`` then reports unsent events as misses.
    """
    try:
        settings = load_settings(CaptureSettings, environ)
    except SettingsError:
        return None
    if settings.capture_mode != "after_response" or settings.capture_sampling_rate == 0.0:
        return None
    if settings.capture_fail_closed:
        logger.info("capture sends inline, before answering: SML_CAPTURE_FAIL_CLOSED needs to know the outcome")
        return None
    runtime_api = environ.get("AWS_LAMBDA_RUNTIME_API")
    if not runtime_api:
        logger.warning("capture falls back to sending inline, before answering: no Lambda Extensions API (AWS_LAMBDA_RUNTIME_API unset)")
        return None
    try:
        extension = PostResponseCapture.register(runtime_api, publish=_publish_after_response, report=_report_after_response)
    except ExtensionsApiError as exc:
        logger.warning("capture falls back to sending inline, before answering: the extension could not register", extra={"reason": str(exc)})
        return None
    extension.install_sigterm_handler()
    return extension


def _publish_after_response(events: Sequence[CapturedEvent]) -> CaptureResult:
    capture = load_runtime().capture  # built by the request that deferred the (already sampled) events
    if capture is None:  # the extension reports the events as misses, whole
        raise SettingsError("SML_CAPTURE_SAMPLING_RATE", "capture is off in this container; deferred events cannot be sent")
    return capture.send(events)


_capture_extension = start_capture_extension()
_IMPORT_SECONDS = time.perf_counter() - _IMPORT_STARTED
