"""Experiment tracking in Weights & Biases: one run per training, with config, metrics and model.

Offline unless ``WANDB_API_KEY`` is set: an offline run makes no network call, never prompts and
keeps every file it writes (run folder, artifact staging, cache, logs, config) under
``<state dir>/wandb``, so ``wandb sync`` can upload it later. ``WANDB_MODE=offline`` forces
offline even with a key; ``WANDB_MODE=disabled`` skips W&B entirely.

``wandb`` is imported only when a run starts: predict and the other Lambdas never load it.
The registry's manifest, not W&B, is the source of truth; W&B is the experiment log.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from sml.core.errors import SmlError

DEFAULT_PROJECT = "serverless-ml"
# The online init gives up after this long instead of W&B's default 90 s.
ONLINE_INIT_TIMEOUT_SECONDS = 60.0
# W&B variable -> sub-folder of the tracking root; together they keep W&B out of $HOME and /tmp.
WANDB_FOLDERS = {
    "WANDB_DIR": ".",
    "WANDB_DATA_DIR": "data",
    "WANDB_ARTIFACT_DIR": "artifacts",
    "WANDB_CACHE_DIR": "cache",
    "WANDB_CONFIG_DIR": "config",
}

TrackingMode = Literal["online", "offline", "disabled"]


@dataclass(frozen=True)
class TrackingOptions:
    """Where and how training runs are tracked.

    ``root`` is the folder that receives every file W&B writes locally; ``mode`` follows
    :func:`tracking_options`.
    """

    mode: TrackingMode
    root: Path
    project: str = DEFAULT_PROJECT
    entity: str | None = None


def tracking_options(state_dir: Path, environ: Mapping[str, str] | None = None) -> TrackingOptions:
    """Tracking options from W&B's own variables, with local files under ``state_dir / "wandb"``.

    Mode: ``disabled`` when ``WANDB_MODE=disabled``; ``online`` when ``WANDB_API_KEY`` is set and
    ``WANDB_MODE`` is not ``offline``; ``offline`` otherwise. Project and entity come from
    ``WANDB_PROJECT`` (default ``serverless-ml``) and ``WANDB_ENTITY``.
    """
    environ = os.environ if environ is None else environ
    requested = environ.get("WANDB_MODE", "").strip().lower()
    if requested == "disabled":
        mode: TrackingMode = "disabled"
    elif environ.get("WANDB_API_KEY") and requested != "offline":
        mode = "online"
    else:
        mode = "offline"
    return TrackingOptions(
        mode=mode,
        root=(state_dir / "wandb").absolute(),
        project=environ.get("WANDB_PROJECT") or DEFAULT_PROJECT,
        entity=environ.get("WANDB_ENTITY") or None,
    )


class TrackedRun(Protocol):
    """What training records about itself."""

    @property
    def path(self) -> str | None:
        """``entity/project/run_id`` online, the run folder offline, ``None`` when disabled."""

    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        """Record final metrics in the run's summary."""

    def log_model(self, artifact_path: Path, *, name: str, version: str, metadata: Mapping[str, Any]) -> None:
        """Attach the model file as a ``model`` artifact aliased with ``version``."""


@contextmanager
def tracked_run(options: TrackingOptions, *, name: str, config: Mapping[str, Any]) -> Iterator[TrackedRun]:
    """Open a W&B run for one training, finished when the block exits (failed if it raised).

    Raises:
        SmlError: W&B could not start the run (for example no network with an API key set).
    """
    if options.mode == "disabled":
        yield _UntrackedRun()
        return
    with _wandb_folders(options.root):
        import wandb

        try:
            run = wandb.init(
                project=options.project,
                entity=options.entity,
                name=name,
                job_type="train",
                config=dict(config),
                mode=options.mode,
                dir=str(options.root),
                settings=wandb.Settings(
                    silent=True,
                    console="off",
                    save_code=False,
                    x_save_requirements=False,
                    # Machine info and system stats probe cloud metadata endpoints over the network.
                    x_disable_stats=True,
                    x_disable_machine_info=True,
                    init_timeout=ONLINE_INIT_TIMEOUT_SECONDS,
                ),
            )
        except wandb.Error as exc:
            reason = " ".join(str(exc).split())
            raise SmlError(
                f"W&B could not start the {options.mode} run ({reason}); set WANDB_MODE=offline or unset WANDB_API_KEY to track offline"
            ) from None
        tracked = _WandbRun(run)
        try:
            yield tracked
        except BaseException:
            run.finish(exit_code=1)
            raise
        run.finish()


class _WandbRun:
    def __init__(self, run: Any) -> None:
        self._run = run

    @property
    def path(self) -> str:
        if self._run.offline:
            return str(self._run.settings.sync_dir)
        return str(self._run.path)

    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        self._run.summary.update(dict(metrics))

    def log_model(self, artifact_path: Path, *, name: str, version: str, metadata: Mapping[str, Any]) -> None:
        import wandb

        artifact = wandb.Artifact(name=name, type="model", metadata=dict(metadata))
        artifact.add_file(str(artifact_path), name=artifact_path.name)
        self._run.log_artifact(artifact, aliases=[version])


class _UntrackedRun:
    path = None

    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        """Nothing to record: tracking is disabled."""

    def log_model(self, artifact_path: Path, *, name: str, version: str, metadata: Mapping[str, Any]) -> None:
        """Nothing to record: tracking is disabled."""


@contextmanager
def _wandb_folders(root: Path) -> Iterator[None]:
    """Point W&B's local folders under ``root`` for the duration of a run, then restore them."""
    previous = {variable: os.environ.get(variable) for variable in WANDB_FOLDERS}
    for variable, folder in WANDB_FOLDERS.items():
        path = (root / folder).resolve()
        path.mkdir(parents=True, exist_ok=True)
        os.environ[variable] = str(path)
    try:
        yield
    finally:
        for variable, value in previous.items():
            if value is None:
                os.environ.pop(variable, None)
            else:
                os.environ[variable] = value
