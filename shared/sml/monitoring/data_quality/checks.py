"""Data quality of a window against the training profile: range, categories and completeness per feature.

Where the drift tests ask whether a distribution moved, these checks ask whether values break
what training saw, the constraints of SageMaker Model Monitor's data-quality monitor and of
whylogs (per feature, a share compared with a threshold):

- ``out_of_range`` (numeric): share of the window's present values below the training minimum
  or above the training maximum. Even without any change a value falls outside the range of
  ``n`` training rows with probability about ``2 / (n + 1)`` (0.5% for 426 rows), so the
  default threshold is 2%.
- ``unseen_category`` (categorical): share of present values in a category training never saw.
- ``missing_excess`` (every feature): the window's missing rate minus the training one, when
  positive (completeness, as SageMaker compares it with the baseline's).
- ``refused`` (every feature, when the refusals were read): the share of the feature's values
  that predict refused (HTTP 4xx naming it: out of range beyond what the model can compute, not
  finite, wrong type, unknown category, missing), ``refused / (refused + rows served)``. Refused
  values never reach the window, so the other checks cannot see them; predict counts them in
  refusal events, the writer stores them in ``predict_refusals`` and
  :func:`read_refused_counts` sums them over the window. A client sending bad values 1% of the
  time is a problem worth hearing about; the default threshold is 1%.

A check is violated when its value exceeds its threshold. Refusals that name no feature (a body
that is not JSON or not a request, under :data:`~sml.core.events.REQUEST_FIELD`) are no
feature's quality: the run reports them on one line (:attr:`RefusedCounts.requests`), outside
the checks and the status.

Example::

    refused = read_refused_counts(engine, "breast-cancer", window.start, window.end)
    checks = run_data_quality_checks(reference, window_summary, manifest.features, DataQualityThresholds(), refused)
    status = data_quality_status(checks)  # "OK" or "VIOLATIONS"
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from sml.core.db import PREDICT_REFUSALS, to_db_timestamp
from sml.core.events import REQUEST_FIELD
from sml.monitoring.summaries import NumericSummary, SummaryReference, WindowSummary

CheckName = Literal["out_of_range", "unseen_category", "missing_excess", "refused"]
DataQualityStatus = Literal["OK", "VIOLATIONS"]


@dataclass(frozen=True)
class DataQualityThresholds:
    """Largest share each check accepts (0–1): out-of-range values, unseen categories, extra missing
    rate, values predict refused."""

    max_out_of_range: float = 0.02
    max_unseen_category: float = 0.01
    max_missing_excess: float = 0.05
    max_refused_rate: float = 0.01

    def __post_init__(self) -> None:
        for name in ("max_out_of_range", "max_unseen_category", "max_missing_excess", "max_refused_rate"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {value}")


@dataclass(frozen=True)
class DataQualityCheck:
    """One check on one feature: ``value`` (a share) against ``threshold``; ``count`` of ``n`` values behind it."""

    feature: str
    check: CheckName
    value: float
    threshold: float
    count: int
    n: int

    @property
    def violated(self) -> bool:
        return self.value > self.threshold


@dataclass(frozen=True)
class RefusedCounts:
    """Values predict refused in a window: per feature, and per reason for :data:`REQUEST_FIELD`."""

    features: Mapping[str, int] = field(default_factory=dict)
    requests: Mapping[str, int] = field(default_factory=dict)

    @property
    def requests_refused(self) -> int:
        return sum(self.requests.values())

    @classmethod
    def from_sums(cls, rows: Iterable[Sequence[Any]]) -> RefusedCounts:
        """From ``(field_name, reason, refused)`` sums (one per field and reason, any order), as each source reads them."""
        features: dict[str, int] = {}
        requests: dict[str, int] = {}
        for field_name, reason, total in rows:
            if field_name == REQUEST_FIELD:
                requests[reason] = int(total)
            else:
                features[field_name] = features.get(field_name, 0) + int(total)
        return cls(features, dict(sorted(requests.items(), key=lambda item: -item[1])))


def read_refused_counts(engine: Engine, model_name: str, start: datetime, end: datetime) -> RefusedCounts:
    """Sum ``predict_refusals`` of ``model_name`` refused in ``[start, end)`` per field and reason (one GROUP BY)."""
    query = (
        sa.select(PREDICT_REFUSALS.c.field_name, PREDICT_REFUSALS.c.reason, sa.func.sum(PREDICT_REFUSALS.c.refused_count))
        .where(
            PREDICT_REFUSALS.c.model_name == model_name,
            PREDICT_REFUSALS.c.refused_at >= to_db_timestamp(start),
            PREDICT_REFUSALS.c.refused_at < to_db_timestamp(end),
        )
        .group_by(PREDICT_REFUSALS.c.field_name, PREDICT_REFUSALS.c.reason)
    )
    with engine.connect() as connection:
        return RefusedCounts.from_sums(connection.execute(query).all())


def run_data_quality_checks(
    reference: SummaryReference,
    current: WindowSummary,
    features: Sequence[Any],
    thresholds: DataQualityThresholds,
    refused: RefusedCounts | None = None,
) -> list[DataQualityCheck]:
    """Every check for every input feature, from the window's summary against the training reference.

    :param reference: the training reference's grids (out-of-range is a count of the cells below
        the smallest and above the largest training value; unseen categories are the values
        outside the training counts).
    :param current: the window's summary against ``reference``.
    :param features: the input features (``name`` and ``kind``), e.g. the manifest's.
    :param refused: the window's refused values (:func:`read_refused_counts`); ``None`` leaves out
        the ``refused`` checks. Fields the schema does not have (another version's) are ignored.
    :returns: per feature in order: ``out_of_range`` or ``unseen_category``, then
        ``missing_excess``, then ``refused``. A feature without rows in the window or the reference
        gets value 0.
    :raises ValueError: naming a feature that has no reference or no summary.
    """
    checks: list[DataQualityCheck] = []
    for spec in features:
        if spec.name not in reference.features:
            raise ValueError(f"reference data has no feature {spec.name!r}")
        if spec.name not in current.features:
            raise ValueError(f"no values for feature {spec.name!r}")
        grid, summary = reference.features[spec.name], current.features[spec.name]
        if isinstance(summary, NumericSummary):
            checks.append(_check(spec.name, "out_of_range", summary.out_of_range, summary.n_present, thresholds.max_out_of_range))
            reference_rows = grid.n_present + int(grid.missing)
        else:
            trained = {category for category, count in grid.counts.items() if count > 0}
            unseen = summary.unseen + sum(count for category, count in summary.counts.items() if category not in trained)
            checks.append(_check(spec.name, "unseen_category", unseen, summary.n_present, thresholds.max_unseen_category))
            reference_rows = sum(grid.counts.values()) + int(grid.missing)
        reference_rate = int(grid.missing) / reference_rows if reference_rows else 0.0
        current_rate = summary.missing / summary.n_rows if summary.n_rows else 0.0
        checks.append(
            DataQualityCheck(
                spec.name, "missing_excess", max(0.0, current_rate - reference_rate), thresholds.max_missing_excess,
                int(summary.missing), int(summary.n_rows),
            )
        )
        if refused is not None:
            count = int(refused.features.get(spec.name, 0))
            checks.append(_check(spec.name, "refused", count, count + summary.n_rows, thresholds.max_refused_rate))
    return checks


def data_quality_status(checks: Sequence[DataQualityCheck]) -> DataQualityStatus:
    """``VIOLATIONS`` when any check exceeds its threshold, else ``OK``."""
    return "VIOLATIONS" if any(check.violated for check in checks) else "OK"


def _check(feature: str, check: CheckName, count: int, n: int, threshold: float) -> DataQualityCheck:
    return DataQualityCheck(feature, check, count / n if n else 0.0, threshold, count, n)
