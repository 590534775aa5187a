"""Drift runs: the record of one run, and its rows in ``drift_runs`` and ``drift_features``.

A run is keyed by (model, window end): :func:`save_drift_run` deletes the run stored for the same
key and inserts the new one in a single transaction, so a rerun replaces its own rows and a
reader never sees a half-written run.

Example::

    save_drift_run(engine, run)
    stored = load_drift_run(engine, "breast-cancer", run.window.end)
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from sml.core.db import DATA_QUALITY_CHECKS, DRIFT_FEATURE_BOUNDS, DRIFT_FEATURES, DRIFT_RUNS, to_db_timestamp
from sml.monitoring.data_quality.checks import DataQualityCheck, DataQualityStatus, data_quality_status
from sml.monitoring.model_quality.store import insert_quality
from sml.monitoring.drift.methods import registered_methods
from sml.monitoring.drift.run import PREDICTION_COLUMNS, PREDICTION_KIND, prediction_phrase
from sml.monitoring.drift.stats import DriftVerdict, FeatureTestResult
from sml.monitoring.windows import TimeWindow, latest_window_first

if TYPE_CHECKING:
    from sml.monitoring.model_quality.metrics import QualityResult


@dataclass(frozen=True)
class DriftRun:
    """One drift run: what was compared, every test's result, and where the report is.

    :param reference_rows: rows behind the reference (the training split's, or the previous
        window's); ``current_rows`` those of the window.
    :param parameters: the settings the verdicts depend on (JSON-friendly), stored with the run.
    :param report_uri: ``s3://bucket/key`` of the HTML report; ``report_url`` a link a browser
        can open (presigned), not stored.
    :param quality: the window's model quality (issue 16), stored in ``quality_runs`` and
        ``quality_metrics`` in the same transaction; ``None`` when not assessed.
    """

    run_id: str
    model_name: str
    model_version: str
    window: TimeWindow
    reference_kind: str
    reference_rows: int
    current_rows: int
    status: DriftVerdict
    results: tuple[FeatureTestResult, ...]
    parameters: dict[str, Any]
    created_at: datetime
    report_uri: str | None = None
    report_url: str | None = None
    reference_window: TimeWindow | None = field(default=None)
    quality: QualityResult | None = None
    data_quality: tuple[DataQualityCheck, ...] = ()
    refused_requests: dict[str, int] = field(default_factory=dict)
    """Requests predict refused in the window for a problem that names no feature, per reason code
    (``_request`` refusals: not JSON, too large, not a request, unknown feature names; each counted
    once per request); shown in the report and the job's summary,
    not a data-quality check, not stored (``predict_refusals`` holds them)."""
    other_versions: dict[str, int] = field(default_factory=dict)
    """Predictions in the window made by other versions of the model, per version: counted, not
    tested (their features and reference are not this version's). Stored in ``parameters`` under
    ``window_versions``."""
    version_since: datetime | None = None
    """The first prediction of ``model_version`` in the window when another version predicted
    before it there (it became the champion inside the window), else ``None``."""

    def versions_note(self) -> str | None:
        """One line on the window's other versions, e.g. ``v2 since 2025-03-06T10:00:00Z; rows of
        other versions in the window, not tested: v1 1200``; ``None`` when this version served the
        whole window alone."""
        parts = []
        if self.version_since is not None:
            parts.append(f"{self.model_version} since {self.version_since.isoformat().replace('+00:00', 'Z')}")
        if self.other_versions:
            counts = ", ".join(f"{version} {rows}" for version, rows in sorted(self.other_versions.items()))
            parts.append(f"rows of other versions in the window, not tested: {counts}")
        return "; ".join(parts) or None

    @property
    def data_quality_status(self) -> DataQualityStatus:
        """``VIOLATIONS`` when a data-quality check broke its threshold, else ``OK``."""
        return data_quality_status(self.data_quality)

    @property
    def features_tested(self) -> int:
        """Distinct input features tested; the prediction is not counted."""
        return len({result.feature for result in self.results if result.kind != PREDICTION_KIND})

    @property
    def drifted_features(self) -> list[str]:
        """Input features with at least one DRIFT test, in test order; the prediction is not one."""
        return list(dict.fromkeys(result.feature for result in self.results if result.verdict is DriftVerdict.DRIFT and result.kind != PREDICTION_KIND))

    @property
    def label_drifted(self) -> bool:
        """Whether the distribution of the prediction (a classifier's predicted label, a regression model's number) drifted."""
        return any(result.verdict is DriftVerdict.DRIFT for result in self.results if result.kind == PREDICTION_KIND)

    @property
    def prediction_tested(self) -> str | None:
        """How text names the prediction this run tested (``predicted label`` or ``prediction``), ``None`` when it tested none."""
        return next((prediction_phrase(result.feature) for result in self.results if result.kind == PREDICTION_KIND), None)


def save_drift_run(engine: Engine, run: DriftRun) -> None:
    """Store ``run``, replacing any run of the same model, version and window end, in one transaction.

    A run of another version of the model for the same window (the champion's scheduled run and
    ``sml drift --version`` of the one it replaced, say) is kept: each version has its own record.
    Two stores of one run key at once leave one run, the later: the stored run is read with a lock
    (MySQL ``FOR UPDATE``; SQLite's write lock from ``BEGIN IMMEDIATE``), and a store that still meets
    the other's run on the unique key, or is ended by InnoDB as a deadlock, is done again
    (:data:`SAVE_ATTEMPTS` in all).

    :param engine: the database with the ``drift_runs`` and ``drift_features`` tables.
    :raises sqlalchemy.exc.IntegrityError: the run's own rows clash (a feature and test twice), or
        the key still clashed after every attempt.
    """
    for attempt in range(1, SAVE_ATTEMPTS + 1):
        try:
            _save_drift_run_once(engine, run)
            return
        except (sa.exc.IntegrityError, sa.exc.OperationalError) as exc:
            # MySQL: two stores of one window at once each read the other's run as absent (or as the
            # one both replace), so the later insert meets the unique key (1062) or InnoDB ends one
            # of them as a deadlock over the key's gap locks (1213). Done again, it finds the run
            # the other stored and replaces it, as a rerun does.
            code = getattr(exc.orig, "args", (None,))[0] if exc.orig is not None else None
            if attempt == SAVE_ATTEMPTS or code not in (MYSQL_DUPLICATE_KEY, MYSQL_DEADLOCK):
                raise


SAVE_ATTEMPTS = 3
MYSQL_DUPLICATE_KEY = 1062
MYSQL_DEADLOCK = 1213


def _save_drift_run_once(engine: Engine, run: DriftRun) -> None:
    window_end = to_db_timestamp(run.window.end)
    with engine.begin() as connection:
        if connection.dialect.name == "sqlite":
            # The write lock from the start: two runs of one window at once (`sml drift` twice) each
            # read no other's run, and the second insert ended on the unique key.
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        previous_ids = connection.execute(
            sa.select(DRIFT_RUNS.c.run_id)
            .where(
                DRIFT_RUNS.c.model_name == run.model_name, DRIFT_RUNS.c.model_version == run.model_version, DRIFT_RUNS.c.window_end == window_end
            )
            .with_for_update()
        ).scalars().all()
        if previous_ids:
            connection.execute(DATA_QUALITY_CHECKS.delete().where(DATA_QUALITY_CHECKS.c.run_id.in_(previous_ids)))
            connection.execute(DRIFT_FEATURE_BOUNDS.delete().where(DRIFT_FEATURE_BOUNDS.c.run_id.in_(previous_ids)))
            connection.execute(DRIFT_FEATURES.delete().where(DRIFT_FEATURES.c.run_id.in_(previous_ids)))
            connection.execute(DRIFT_RUNS.delete().where(DRIFT_RUNS.c.run_id.in_(previous_ids)))
        connection.execute(DRIFT_RUNS.insert().values(_run_row(run)))
        if run.results:
            connection.execute(DRIFT_FEATURES.insert(), [_feature_row(run.run_id, result) for result in run.results])
            connection.execute(DRIFT_FEATURE_BOUNDS.insert(), [_bounds_row(run.run_id, result) for result in run.results])
        if run.quality is not None:
            insert_quality(connection, run.run_id, run.quality)
        if run.data_quality:
            connection.execute(DATA_QUALITY_CHECKS.insert(), [_check_row(run.run_id, check) for check in run.data_quality])


@dataclass(frozen=True)
class StoredDriftRun:
    """A run as read back, as dicts: the ``drift_runs`` row with ``data_quality_status`` (``OK``,
    ``VIOLATIONS``, or None for runs stored before issue 18), its ``drift_features`` rows with
    ``effect_upper`` and ``reason`` (from ``drift_feature_bounds``), its ``data_quality_checks`` rows."""

    run: dict[str, Any]
    features: list[dict[str, Any]]
    data_quality: list[dict[str, Any]] = field(default_factory=list)


def load_drift_run(engine: Engine, model_name: str, window_end: datetime, *, version: str | None = None) -> StoredDriftRun | None:
    """The stored run of ``model_name`` (of ``version``, else the latest stored of any version)
    whose window ends at ``window_end``, or ``None``."""
    with engine.connect() as connection:
        run = connection.execute(
            sa.select(DRIFT_RUNS)
            .where(
                DRIFT_RUNS.c.model_name == model_name,
                DRIFT_RUNS.c.window_end == to_db_timestamp(window_end),
                *([] if version is None else [DRIFT_RUNS.c.model_version == version]),
            )
            .order_by(DRIFT_RUNS.c.created_at.desc())
        ).mappings().first()
        if run is None:
            return None
        features = connection.execute(
            sa.select(DRIFT_FEATURES, DRIFT_FEATURE_BOUNDS.c.effect_upper, DRIFT_FEATURE_BOUNDS.c.reason)
            .select_from(_features_with_bounds())
            .where(DRIFT_FEATURES.c.run_id == run["run_id"])
            .order_by(DRIFT_FEATURES.c.feature_name, DRIFT_FEATURES.c.test)
        ).mappings().all()
        checks = connection.execute(
            sa.select(DATA_QUALITY_CHECKS)
            .where(DATA_QUALITY_CHECKS.c.run_id == run["run_id"])
            .order_by(DATA_QUALITY_CHECKS.c.feature_name, DATA_QUALITY_CHECKS.c.check_name)
        ).mappings().all()
    status = _status_of_checks([bool(row["violated"]) for row in checks])
    return StoredDriftRun(
        run={**dict(run), "data_quality_status": status}, features=[dict(row) for row in features], data_quality=[dict(row) for row in checks]
    )


def _features_with_bounds() -> sa.FromClause:
    return DRIFT_FEATURES.outerjoin(
        DRIFT_FEATURE_BOUNDS,
        sa.and_(
            DRIFT_FEATURE_BOUNDS.c.run_id == DRIFT_FEATURES.c.run_id,
            DRIFT_FEATURE_BOUNDS.c.feature_name == DRIFT_FEATURES.c.feature_name,
            DRIFT_FEATURE_BOUNDS.c.test == DRIFT_FEATURES.c.test,
        ),
    )


def _status_of_checks(violated: list[bool]) -> str | None:
    if not violated:
        return None
    return "VIOLATIONS" if any(violated) else "OK"


def drift_history(
    engine: Engine, model_name: str, *, limit: int = 12, feature: str | None = None, version: str | None = None
) -> list[dict[str, Any]]:
    """The last ``limit`` stored runs of ``model_name``, latest window end first (runs of windows
    that end in the future last: :func:`~sml.monitoring.windows.latest_window_first`), as dicts.

    Without ``feature``: one row per run (``window_end``, ``model_version``, ``status``,
    ``data_quality_status``, ``n_reference``, ``n_current``, ``features_tested``,
    ``features_drifted``, ``other_versions_rows``: the window's rows of other versions per version,
    ``version_since``: when the run's version took over inside its window, ISO 8601, or None).
    With ``version``, only the runs of that model version. With ``feature``: one row per run and test of that feature, adding
    ``test``, ``effect_size``, ``effect_upper``, ``effect_floor``, ``p_adjusted``, ``verdict``
    and ``reason``; runs that did not test it are left out. The prediction's tests are found under
    either of its names (``(predicted label)``, ``(prediction)``), whichever one a run stored them
    under: runs of a regression model stored before its prediction was named ``(prediction)`` hold
    them as ``(predicted label)``.

    :raises ValueError: ``limit`` is below 1.
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    runs = (
        sa.select(
            DRIFT_RUNS.c.run_id, DRIFT_RUNS.c.window_end, DRIFT_RUNS.c.model_version, DRIFT_RUNS.c.status,
            DRIFT_RUNS.c.n_reference, DRIFT_RUNS.c.n_current,
            DRIFT_RUNS.c.features_tested, DRIFT_RUNS.c.features_drifted, DRIFT_RUNS.c.parameters,
        )
        .where(DRIFT_RUNS.c.model_name == model_name, *([] if version is None else [DRIFT_RUNS.c.model_version == version]))
        .order_by(*latest_window_first(DRIFT_RUNS.c.window_end), DRIFT_RUNS.c.created_at.desc())
        .limit(limit)
    )
    with engine.connect() as connection:
        rows = []
        for row in connection.execute(runs).mappings():
            entry = dict(row)
            entry["other_versions_rows"], entry["version_since"] = stored_window_versions(entry.pop("parameters"))
            rows.append(entry)
        if not rows:
            return rows
        checks = connection.execute(
            sa.select(DATA_QUALITY_CHECKS.c.run_id, DATA_QUALITY_CHECKS.c.violated)
            .where(DATA_QUALITY_CHECKS.c.run_id.in_([row["run_id"] for row in rows]))
        ).all()
        violated: dict[str, list[bool]] = {}
        for run_id, flag in checks:
            violated.setdefault(run_id, []).append(bool(flag))
        for row in rows:
            row["data_quality_status"] = _status_of_checks(violated.get(row["run_id"], []))
        if feature is None:
            return rows
        tests = connection.execute(
            sa.select(
                DRIFT_FEATURES.c.run_id, DRIFT_FEATURES.c.test, DRIFT_FEATURES.c.effect_size, DRIFT_FEATURE_BOUNDS.c.effect_upper,
                DRIFT_FEATURES.c.effect_floor, DRIFT_FEATURES.c.p_adjusted, DRIFT_FEATURES.c.verdict, DRIFT_FEATURE_BOUNDS.c.reason,
            )
            .select_from(_features_with_bounds())
            .where(_tests_of(feature), DRIFT_FEATURES.c.run_id.in_([row["run_id"] for row in rows]))
            .order_by(DRIFT_FEATURES.c.test)
        ).mappings().all()
    by_run: dict[str, list[dict[str, Any]]] = {}
    for test in tests:
        by_run.setdefault(test["run_id"], []).append(dict(test))
    return [{**row, **test} for row in rows for test in by_run.get(row["run_id"], [])]


@dataclass(frozen=True)
class TrendPoint:
    """One run's main test of a feature (any method but the missing-rate one): what a trend chart plots."""

    window_end: datetime
    effect_size: float | None
    effect_upper: float | None
    effect_floor: float | None
    verdict: str


def _tests_of(feature: str) -> sa.ColumnElement[bool]:
    """The tests of ``feature``; for a prediction's name, the run's prediction tests under either
    name, unless the run has an input feature of that name (a training column named so), whose
    tests are then its own."""
    named = DRIFT_FEATURES.c.feature_name == feature
    if feature not in PREDICTION_COLUMNS:
        return named
    same_run = DRIFT_FEATURES.alias("same_run")
    feature_of_that_name = (
        sa.select(same_run.c.run_id)
        .where(same_run.c.run_id == DRIFT_FEATURES.c.run_id, same_run.c.feature_name == feature, same_run.c.kind != PREDICTION_KIND)
        .exists()
    )
    prediction = sa.and_(DRIFT_FEATURES.c.kind == PREDICTION_KIND, DRIFT_FEATURES.c.feature_name.in_(PREDICTION_COLUMNS), ~feature_of_that_name)
    return sa.or_(sa.and_(named, sa.or_(DRIFT_FEATURES.c.kind != PREDICTION_KIND, ~feature_of_that_name)), prediction)


def feature_trends(
    engine: Engine, model_name: str, *, before: datetime, limit: int = 12, version: str | None = None
) -> dict[str, list[TrendPoint]]:
    """Per feature, the main test of the last ``limit`` stored runs ending before ``before``, oldest first.

    With ``version``, only the runs of that model version: another version's feature of the same
    name was compared with another reference.

    The prediction's points are under each of its names (``(predicted label)``, ``(prediction)``),
    whichever one a run stored them under, so a regression model's trend goes on across the runs
    stored before its prediction was named ``(prediction)``. Runs stored before upper bounds were
    recorded have none (``effect_upper`` None).
    """
    with engine.connect() as connection:
        run_ids = connection.execute(
            sa.select(DRIFT_RUNS.c.run_id)
            .where(
                DRIFT_RUNS.c.model_name == model_name,
                DRIFT_RUNS.c.window_end < to_db_timestamp(before),
                *([] if version is None else [DRIFT_RUNS.c.model_version == version]),
            )
            .order_by(DRIFT_RUNS.c.window_end.desc())
            .limit(limit)
        ).scalars().all()
        if not run_ids:
            return {}
        rows = connection.execute(
            sa.select(
                DRIFT_FEATURES.c.run_id, DRIFT_FEATURES.c.feature_name, DRIFT_FEATURES.c.kind, DRIFT_RUNS.c.window_end, DRIFT_FEATURES.c.effect_size,
                DRIFT_FEATURE_BOUNDS.c.effect_upper, DRIFT_FEATURES.c.effect_floor, DRIFT_FEATURES.c.verdict,
            )
            .select_from(_features_with_bounds().join(DRIFT_RUNS, DRIFT_RUNS.c.run_id == DRIFT_FEATURES.c.run_id))
            .where(DRIFT_FEATURES.c.run_id.in_(run_ids), DRIFT_FEATURES.c.test.not_in([method.name for method in registered_methods() if method.missing_rate]))
            .order_by(DRIFT_RUNS.c.window_end)
        ).all()
    # An input feature can hold a prediction's name (a training column named so): that name is then the feature's in its run.
    features_of_run = {(run_id, feature) for run_id, feature, kind, *_ in rows if kind != PREDICTION_KIND}
    trends: dict[str, list[TrendPoint]] = {}
    for run_id, feature, kind, *point in rows:
        prediction = kind == PREDICTION_KIND and feature in PREDICTION_COLUMNS
        names = [name for name in PREDICTION_COLUMNS if name == feature or (run_id, name) not in features_of_run] if prediction else [feature]
        for name in names:
            trends.setdefault(name, []).append(TrendPoint(*point))
    return trends


def _run_row(run: DriftRun) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "model_name": run.model_name,
        "model_version": run.model_version,
        "window_start": to_db_timestamp(run.window.start),
        "window_end": to_db_timestamp(run.window.end),
        "reference_kind": run.reference_kind,
        "status": run.status.value,
        "n_reference": run.reference_rows,
        "n_current": run.current_rows,
        "features_tested": run.features_tested,
        "features_drifted": len(run.drifted_features),
        "report_uri": run.report_uri,
        "parameters": json.dumps({**run.parameters, **_window_versions(run)}, sort_keys=True, separators=(",", ":")),
        "created_at": to_db_timestamp(run.created_at),
    }


def _window_versions(run: DriftRun) -> dict[str, Any]:
    if not run.other_versions and run.version_since is None:
        return {}
    since = None if run.version_since is None else run.version_since.isoformat()
    return {"window_versions": {"other_rows": dict(sorted(run.other_versions.items())), "version_since": since}}


def stored_window_versions(parameters: str | None) -> tuple[dict[str, int], str | None]:
    """From a stored run's ``parameters`` text: the other versions' rows in its window per version,
    and when its version took over inside the window (ISO 8601), as :class:`DriftRun` has them."""
    stored = json.loads(parameters or "{}").get("window_versions") or {}
    return dict(stored.get("other_rows") or {}), stored.get("version_since")


def _check_row(run_id: str, check: DataQualityCheck) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "feature_name": check.feature,
        "check_name": check.check,
        "value": float(check.value),
        "threshold": float(check.threshold),
        "violation_count": check.count,
        "n_values": check.n,
        "violated": check.violated,
    }


def _feature_row(run_id: str, result: FeatureTestResult) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "feature_name": result.feature,
        "test": result.test,
        "kind": result.kind,
        "statistic": _finite_or_none(result.statistic),
        "p_value": _finite_or_none(result.p_value),
        "p_adjusted": _finite_or_none(result.p_adjusted),
        "effect_size": _finite_or_none(result.effect_size),
        "effect_floor": _finite_or_none(result.effect_floor),
        "n_reference": result.n_reference,
        "n_current": result.n_current,
        "verdict": result.verdict.value,
    }


def _bounds_row(run_id: str, result: FeatureTestResult) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "feature_name": result.feature,
        "test": result.test,
        "effect_upper": _finite_or_none(result.effect_upper),
        "reason": result.detail.get("reason"),
    }


def _finite_or_none(value: float | None) -> float | None:
    # MySQL's DOUBLE has no NaN or infinity; a missing number is NULL.
    if value is None or not math.isfinite(value):
        return None
    return float(value)
