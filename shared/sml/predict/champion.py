"""The champion predict serves, and how a promotion reaches a warm container without a request waiting.

A container loads the champion on its first request (cold start). From then on
:meth:`ChampionHolder.current` hands every request the model in memory and, at most every
``ttl_seconds`` (``SML_CHAMPION_TTL_SECONDS``), starts one background thread that re-reads the
champion pointer. When the pointer names another version, that thread downloads, verifies,
unpickles and warms it up (one prediction on a row of its reference data) and only then swaps it
in, with one reference assignment: a request uses the model it started with to the end, and the
next request gets the new one. Requests never wait on the pointer, the download or the load.

A version that cannot be loaded leaves the current one serving; the failure is reported (logged
and counted by the caller's ``on_failure``) and retried at the next check. The version served
just before stays in memory, so a rollback to it needs no load at all.

On Lambda a thread runs only while its execution environment is thawed, that is during
invocations (and their post-invocation phase): under traffic the switch completes within
``ttl_seconds`` plus the load time; an environment frozen half-way finishes on its next
invocations, serving the old version meanwhile. Cost: one SSM ``GetParameter`` per container per
``ttl_seconds`` while it receives traffic (none while it idles), plus one S3 download per
promotion per container.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from sml.core.errors import SmlError
from sml.core.events import utc_now
from sml.lifecycle.modeling import allow_pandas, hide_pandas_from_array_models, needs_pandas
from sml.lifecycle.registry import ArtifactLoadError, LoadedModel, ModelRegistry, load_version
from sml.predict.errors import ApiError, ChampionUnavailable, ModelError
from sml.predict.feedback import FeedbackSchema
from sml.predict.service import PredictionService


@dataclass(frozen=True)
class ServedModel:
    """A loaded version with its service: what one request predicts with, from start to end."""

    loaded: LoadedModel
    service: PredictionService
    loaded_at: datetime
    loaded_by_request_id: str
    """The request during which it was loaded ("" for a version the refresher loaded)."""

    @property
    def version(self) -> str:
        return self.loaded.version

    @functools.cached_property
    def openapi_document(self) -> dict[str, Any]:
        from sml.predict.openapi import build_openapi_document

        return build_openapi_document(
            self.loaded.manifest, max_instances=self.service.schema.max_instances, max_body_bytes=self.service.max_body_bytes
        )

    @functools.cached_property
    def feedback_schema(self) -> FeedbackSchema:
        manifest = self.loaded.manifest
        return FeedbackSchema(manifest.classes, task=manifest.task, max_items=self.service.schema.max_instances)


@dataclass(frozen=True)
class ChampionSwitch:
    """A swap the refresher made: from which version to which, and how long loading took (0 for the version kept in memory)."""

    previous: str
    current: str
    load_seconds: float


class ChampionHolder:
    """The served champion of one container, refreshed in the background.

    :param first: the version loaded at cold start.
    :param read_pointer: returns the version the champion pointer names now (an SSM read).
    :param load: loads, verifies and warms up a version; raises when it cannot.
    :param ttl_seconds: the least time between two pointer reads; 0 checks on every request
        (still in the background).
    :param on_switch: called in the refresher thread after a swap.
    :param on_failure: called in the refresher thread with the version (None when the pointer
        could not be read) and the exception, when a refresh fails; the current version stays.
    :param clock: seconds, monotonic (tests pass a fake).
    """

    def __init__(
        self,
        first: ServedModel,
        *,
        read_pointer: Callable[[], str],
        load: Callable[[str], ServedModel],
        ttl_seconds: float,
        on_switch: Callable[[ChampionSwitch], None],
        on_failure: Callable[[str | None, Exception], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._served = first
        self._previous: ServedModel | None = None
        self._read_pointer = read_pointer
        self._load = load
        self._ttl = ttl_seconds
        self._on_switch = on_switch
        self._on_failure = on_failure
        self._clock = clock
        self._next_check = clock() + ttl_seconds
        self._refresher: threading.Thread | None = None
        self._lock = threading.Lock()

    def current(self) -> ServedModel:
        """The model to serve this request with; starts a background refresh when one is due."""
        served = self._served
        if self._clock() >= self._next_check:
            self._start_refresh()
        return served

    @property
    def refreshing(self) -> bool:
        """Whether a background refresh (pointer read, and a load if the version changed) is under way."""
        refresher = self._refresher
        return refresher is not None and refresher.is_alive()

    def refresh_now(self) -> None:
        """Re-read the pointer and switch if needed, in the calling thread (tests, the benchmark)."""
        with self._lock:
            self._next_check = float("inf")
        self._refresh()

    def wait_for_refresh(self, timeout: float | None = None) -> None:
        """Block until a background refresh that is running has finished."""
        refresher = self._refresher
        if refresher is not None:
            refresher.join(timeout)

    def _start_refresh(self) -> None:
        with self._lock:
            if self._clock() < self._next_check:  # another request started it in between
                return
            self._next_check = float("inf")  # until this refresh ends: one refresher at a time
            self._refresher = threading.Thread(target=self._refresh, name="champion-refresh", daemon=True)
        self._refresher.start()

    def _refresh(self) -> None:
        version: str | None = None
        try:
            version = self._read_pointer()
            current = self._served
            if version == current.version:
                return
            started = time.perf_counter()
            previous = self._previous
            replacement = previous if previous is not None and previous.version == version else self._load(version)
            load_seconds = 0.0 if replacement is previous else time.perf_counter() - started
            self._previous, self._served = current, replacement
            self._on_switch(ChampionSwitch(previous=current.version, current=version, load_seconds=load_seconds))
        except Exception as exc:  # reported by on_failure (logged, counted); the current version keeps serving
            self._on_failure(version, exc)
        finally:
            self._next_check = self._clock() + self._ttl


def load_served(
    registry: ModelRegistry,
    version: str | None,
    *,
    cache_dir: Path,
    sklearn_version_policy: Literal["warn", "refuse"],
    max_instances: int,
    max_body_bytes: int,
    request_id: str = "",
    warm_up: bool = False,
) -> ServedModel:
    """Load ``version`` (the champion pointer's when None): download, verify, unpickle, wrap in its service.

    Array models are unpickled with pandas hidden (:func:`~sml.lifecycle.modeling.hide_pandas_from_array_models`),
    again with it when their pickle needs it. With ``warm_up`` the model predicts one row built
    from its reference data first (:meth:`PredictionService.reference_row`), so the first request
    it serves does not pay its lazy imports and a model that fails there is never switched to.

    :raises ChampionUnavailable: any of these fails; ``__cause__`` holds the error.
    """
    started = time.perf_counter()
    try:
        version = version if version is not None else registry.champion_version()

        def load(prepare_imports: Callable[[Any], None]) -> LoadedModel:
            return load_version(
                registry, version, cache_dir=cache_dir, sklearn_version_policy=sklearn_version_policy, before_unpickle=prepare_imports
            )

        try:
            loaded = load(lambda manifest: hide_pandas_from_array_models(manifest.input_format))
        except ArtifactLoadError as exc:
            if not needs_pandas(exc):
                raise
            loaded = load(lambda manifest: allow_pandas())  # an array model whose pickle holds pandas objects
        service = PredictionService(loaded.model, loaded.manifest, max_instances=max_instances, max_body_bytes=max_body_bytes)
        if warm_up:
            _warm_up(service)
    except (SmlError, ModelError) as exc:
        raise ChampionUnavailable(str(exc)) from exc
    loaded = replace(loaded, load_seconds=time.perf_counter() - started)
    return ServedModel(loaded=loaded, service=service, loaded_at=utc_now(), loaded_by_request_id=request_id)


def _warm_up(service: PredictionService) -> None:
    row = service.reference_row()
    try:
        service.predict([row])
    except ApiError:  # the reference gives no row the schema takes (a closed category it never counted): nothing to warm
        return
