"""Where the weekly run reads its window: one seam, chosen by ``SML_WINDOW_SOURCE``.

A window source turns the predictions of one model made in a window (of one of its versions,
when ``version`` is given) into one :class:`~sml.monitoring.summaries.WindowSummary` per reference. Every source counts the same
values with the same summariser, so a window gives the same verdicts from each:

- ``database`` (default; small installs and the demo): :func:`sml.monitoring.windows.read_window_summaries`;
- ``duckdb``: DuckDB over the event archive in S3 (:class:`sml.archive.sources.ArchiveWindowSource`),
  for windows the database or the function's memory cannot take.

Model quality (labels joined to predictions) and refusals are read from the database whichever
source the drift summaries come from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.engine import Engine

from sml.lifecycle.manifest import FeatureSpec
from sml.monitoring.summaries import SummaryReference, WindowSummary
from sml.monitoring.windows import TimeWindow, read_window_summaries

SOURCES = ("database", "duckdb")


class WindowSource(Protocol):
    """Reads a window into summaries; ``name`` is the ``SML_WINDOW_SOURCE`` value that selects it."""

    name: str

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
