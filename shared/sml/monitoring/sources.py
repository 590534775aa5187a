"""Where the weekly run reads its window: one seam, chosen by ``SML_WINDOW_SOURCE``.

A window source turns the predictions of one model made in a window (of one of its versions,
when ``version`` is given) into one :class:`~sml.monitoring.summaries.WindowSummary` per reference. Every source counts the same
values with the same summariser, so a window gives the same verdicts from each:

- ``database`` (default; small installs and the demo): :func:`sml.monitoring.windows.read_window_summaries`;
- ``duckdb``: DuckDB over the event archive in S3 (:class:`sml.archive.sources.ArchiveWindowSource`),
  for windows the database or the function's memory cannot take;
- ``athena``: Athena (engine v3) over the archive's Glue table, counting in SQL
  (:class:`sml.archive.athena_window.AthenaWindowSource`), for windows too large to move through a function.

:func:`window_source_from_settings` builds the one a setting names, for the drift function and ``sml drift`` alike.

What else the weekly run reads of the window (:class:`SourceWindow`): ``duckdb`` reads it all
from the archive (:func:`sml.archive.sources.archive_window`): model quality (labels joined to
predictions, counted into the quality aggregate), refusals, the versions seen and the unmatched
labels, so a past window whose predictions the database's retention dropped is recomputed whole.
``athena`` reads the drift summaries, the refusals and the versions; model quality comes from the
database, as with ``database``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from sqlalchemy.engine import Engine

from sml.lifecycle.manifest import FeatureSpec, ModelManifest
from sml.monitoring.data_quality.checks import RefusedCounts
from sml.monitoring.model_quality.store import QualitySample, RegressionSample
from sml.monitoring.summaries import SummaryReference, WindowSummary
from sml.monitoring.windows import TimeWindow, VersionRows, read_window_summaries

SOURCES = ("database", "duckdb", "athena")


@dataclass(frozen=True)
class SourceWindow:
    """What a source read of a window for one model version: the drift summaries (one per reference,
    in order) and, where the source reads them, the quality sample with its aggregate, the refusals,
    the rows per version and the labels without a prediction. ``None``: not read by this source
    (the weekly run reads it from the database)."""

    summaries: list[WindowSummary]
    quality_sample: QualitySample | RegressionSample | None = None
    refused: RefusedCounts | None = None
    versions: tuple[VersionRows, ...] | None = None
    unmatched_labels: int | None = None


class WindowSource(Protocol):
    """Reads a window into summaries; ``name`` is the ``SML_WINDOW_SOURCE`` value that selects it."""

    name: str

    def read_window(
        self, manifest: ModelManifest, window: TimeWindow, references: Sequence[SummaryReference], *, quality: bool = True
    ) -> SourceWindow:
        """The window of ``manifest``'s version: its summaries against ``references`` and what else
        the source reads (the quality sample only when ``quality``)."""
        ...

    def read_summaries(
        self,
        model_name: str,
        window: TimeWindow,
        features: Sequence[FeatureSpec],
        references: Sequence[SummaryReference],
        *,
        version: str | None = None,
    ) -> list[WindowSummary]: ...


@dataclass(frozen=True)
class DatabaseWindowSource:
    """The window from the ``predictions`` table."""

    engine: Engine
    name: str = "database"

    def read_window(
        self, manifest: ModelManifest, window: TimeWindow, references: Sequence[SummaryReference], *, quality: bool = True
    ) -> SourceWindow:
        """The summaries only: the weekly run reads the rest of the database itself (with the quality in the same pass)."""
        return SourceWindow(self.read_summaries(manifest.model_name, window, manifest.features, references, version=manifest.version))

    def read_summaries(
        self,
        model_name: str,
        window: TimeWindow,
        features: Sequence[FeatureSpec],
        references: Sequence[SummaryReference],
        *,
        version: str | None = None,
    ) -> list[WindowSummary]:
        return read_window_summaries(self.engine, model_name, window, features, references, version=version)


def window_source_from_settings(
    settings: Any, client: Callable[[str], Any], *, source: str | None = None, label_horizon_days: float | None = None
) -> WindowSource | None:
    """The window source ``source`` names (default ``settings.window_source``, ``SML_WINDOW_SOURCE``);
    ``None`` for ``database`` (the weekly run then reads the database as it always did).

    :param settings: settings with ``bucket``, ``archive_prefix``, ``athena_workgroup`` and ``athena_database``
        (:class:`sml.core.settings.ArchiveSettings`).
    :param client: a service name -> a boto3 client (``"s3"``, ``"athena"``), called only for the source chosen.
    :param label_horizon_days: how long after a prediction its label may arrive (default ``settings.label_horizon_days``,
        ``SML_LABEL_HORIZON_DAYS``, when the settings have it, else 7): which label days ``duckdb`` reads.
    :raises SettingsError: naming ``SML_WINDOW_SOURCE``: an unknown source, or one whose archive settings are unset.
    """
    from sml.core.settings import SettingsError

    name = source or settings.window_source
    if name == "database":
        return None
    if name == "duckdb":
        if settings.archive_prefix is None:
            raise SettingsError("SML_WINDOW_SOURCE", "duckdb reads the event archive: set SML_ARCHIVE_PREFIX too")
        from sml.archive.sources import ArchiveWindowSource
        from sml.archive.store import ArchiveLocation

        horizon = label_horizon_days if label_horizon_days is not None else getattr(settings, "label_horizon_days", 7.0)
        return ArchiveWindowSource(client("s3"), ArchiveLocation(settings.bucket, settings.archive_prefix), label_horizon=timedelta(days=horizon))
    if name == "athena":
        if not settings.athena_workgroup or not settings.athena_database:
            raise SettingsError("SML_WINDOW_SOURCE", "athena reads the archive's Glue table: set SML_ATHENA_WORKGROUP and SML_ATHENA_DATABASE too")
        from sml.archive.athena_window import AthenaWindowSource
        from sml.archive.query import AthenaTarget

        return AthenaWindowSource(client("athena"), AthenaTarget(settings.athena_workgroup, settings.athena_database))
    raise SettingsError("SML_WINDOW_SOURCE", f"{name!r} is not one of {', '.join(SOURCES)}")
