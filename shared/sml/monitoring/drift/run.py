"""One drift run over summaries: every column's registered methods, then one three-way verdict each.

:func:`run_drift_methods` takes the reference (:class:`~sml.monitoring.summaries.SummaryReference`)
and the window's :class:`~sml.monitoring.summaries.WindowSummary`, runs each column's methods
(:mod:`sml.monitoring.drift.methods`), corrects all p-values of the run together and decides
DRIFT / NO_DRIFT / INCONCLUSIVE per test (:func:`sml.monitoring.drift.stats.decide_all`, whose
docstring holds the rule). :func:`drift_columns` says which columns a model's run tests and with
which method: every input feature of the manifest and the model's prediction, a classifier's
predicted label as a categorical column named ``(predicted label)`` and a regression model's
predicted number as a numeric one named ``(prediction)`` (when its manifest has the training
predictions).

:func:`run_drift_tests` is the same run for columns of values (training data, tests,
benchmarks): it summarises them against the reference first.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sml.core.errors import SmlError
from sml.lifecycle.manifest import FeatureKind
from sml.monitoring.drift.methods import DEFAULT_METHODS, DriftMethod, drift_method, missing_rate_method, registered_methods
from sml.monitoring.drift.stats import FeatureTestResult, PendingTest, decide_all
from sml.monitoring.summaries import SummaryReference, WindowSummary, reference_grids, summarise

# The model's prediction is tested under a name in parentheses, which no feature can clash with in
# a readable report (feature names come from the training data's columns): a classifier's is its
# predicted label, a regression model's a number. Runs of regression models stored before the two
# names were told apart hold their prediction's tests as "(predicted label)"; the store finds the
# prediction's tests under either name (their ``kind`` is PREDICTION_KIND).
CLASS_PREDICTION_COLUMN = "(predicted label)"
REGRESSION_PREDICTION_COLUMN = "(prediction)"
PREDICTION_COLUMNS = (CLASS_PREDICTION_COLUMN, REGRESSION_PREDICTION_COLUMN)
PREDICTION_KIND = "label"  # the ``kind`` of a prediction's results, whatever its column kind and task


def prediction_column(task: str) -> str:
    """The name a model of ``task`` (``binary``, ``multiclass`` or ``regression``) has its prediction tested under."""
    return REGRESSION_PREDICTION_COLUMN if task == "regression" else CLASS_PREDICTION_COLUMN


def prediction_phrase(column: str) -> str:
    """How text names the prediction tested as ``column``: ``predicted label`` or ``prediction``."""
    return column[1:-1] if column in PREDICTION_COLUMNS else column


@dataclass(frozen=True)
class DriftColumn:
    """A column a run tests: an input feature, or the model's prediction (``prediction=True``).

    ``kind`` is the column's kind (``numeric`` or ``categorical``, as in the manifest's
    ``FeatureSpec``); ``categories`` (optional) fixes the order of a categorical column's buckets;
    ``method`` names its main method (``None``: the kind's default, ``ks`` or ``chi2``).
    """

    name: str
    kind: FeatureKind
    categories: tuple[str, ...] | None = None
    prediction: bool = False
    method: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in DEFAULT_METHODS:
            raise ValueError(f"feature {self.name!r}: kind {self.kind!r} is not one of {', '.join(DEFAULT_METHODS)}")
        if self.categories is not None:
            object.__setattr__(self, "categories", tuple(str(category) for category in self.categories))
        main = self.main_method()
        if self.kind not in main.kinds:
            raise ValueError(f"column {self.name!r}: method {main.name!r} tests {' or '.join(main.kinds)} columns, not {self.kind} ones")

    @property
    def result_kind(self) -> str:
        """The ``kind`` its results record: the column's kind, or ``label`` for the prediction."""
        return PREDICTION_KIND if self.prediction else self.kind

    def main_method(self) -> DriftMethod:
        return drift_method(self.method or DEFAULT_METHODS[self.kind])

    def methods(self) -> list[DriftMethod]:
        """Its main method, then (for an input feature) the missing-rate method."""
        return [self.main_method()] + ([] if self.prediction else [missing_rate_method()])


def drift_columns(manifest: Any, methods: Mapping[str, str] | None = None) -> list[DriftColumn]:
    """The columns a run of ``manifest``'s model tests: its features in order, then its prediction.

    :param methods: per feature name (or the prediction's column name), the main method chosen
        by the model's drift config; others use their kind's default.
    """
    methods = methods or {}
    columns = [DriftColumn(spec.name, spec.kind, spec.categories, method=methods.get(spec.name)) for spec in manifest.features]
    name = prediction_column(manifest.task)
    features = {column.name for column in columns}
    if name in features:
        # A feature took the prediction's name (nothing refuses a training column named so): the
        # prediction keeps its other name, which a regression model's runs held before.
        name = next((other for other in PREDICTION_COLUMNS if other not in features), None)
        if name is None:
            raise SmlError(
                f"model {manifest.model_name!r}: its features {' and '.join(map(repr, PREDICTION_COLUMNS))} take both names "
                "its prediction could be tested under; rename one of them and register the model again"
            )
    if manifest.task != "regression":
        classes = tuple(str(label) for label in manifest.classes)
        columns.append(DriftColumn(name, "categorical", classes, prediction=True, method=methods.get(name)))
    elif manifest.reference.predictions is not None:
        columns.append(DriftColumn(name, "numeric", prediction=True, method=methods.get(name)))
    return columns


def run_drift_methods(
    reference: SummaryReference,
    current: WindowSummary,
    columns: Sequence[DriftColumn],
    floors: Mapping[tuple[str, str], float],
    *,
    fdr: float = 0.05,
    min_samples: int = 30,
) -> list[FeatureTestResult]:
    """Run every column's methods on the window's summary and decide a verdict per test.

    :param reference: the grids the window was summarised against (the prediction's under
        ``reference.prediction``).
    :param current: the window's summary against ``reference``.
    :param floors: per (column name, method name), the floor as an effect in the method's unit.
    :param fdr: Benjamini–Hochberg false discovery rate across all tests of the run.
    :param min_samples: fewer values than this on either side gives INCONCLUSIVE.
    :returns: per column in order, its main test then its missing-rate test (not for the prediction).
    :raises ValueError: a column without a summary, a grid or a floor.
    """
    if not 0 < fdr < 1:
        raise ValueError(f"fdr must be in (0, 1), got {fdr}")
    return decide_all(pending_tests(reference, current, columns, floors, min_samples=min_samples), fdr)


def pending_tests(
    reference: SummaryReference,
    current: WindowSummary,
    columns: Sequence[DriftColumn],
    floors: Mapping[tuple[str, str], float],
    *,
    min_samples: int = 30,
) -> list[PendingTest]:
    """Every column's methods on the window's summary, before the run-wide correction.

    :func:`run_drift_methods` is ``decide_all(pending_tests(...), fdr)``; tests computed apart
    (a benchmark scoring one set of features against several predictions) are decided together
    by passing their concatenation to :func:`~sml.monitoring.drift.stats.decide_all`.

    :raises ValueError: as :func:`run_drift_methods`.
    """
    if min_samples < 1:
        raise ValueError(f"min_samples must be at least 1, got {min_samples}")
    _check_unique(columns)
    pending = []
    for column in columns:
        grid = reference.prediction if column.prediction else reference.features.get(column.name)
        summary = current.prediction if column.prediction else current.features.get(column.name)
        if grid is None or summary is None:
            raise ValueError(f"no {'reference' if grid is None else 'window summary'} for column {column.name!r}")
        if summary.kind != column.kind:
            raise ValueError(f"column {column.name!r} is {column.kind} but its summary is {summary.kind}")
        for method in column.methods():
            try:
                floor = floors[column.name, method.name]
            except KeyError:
                raise ValueError(f"no floor for the {method.name} test of column {column.name!r}") from None
            outcome = method.compute(column, grid, summary)
            pending.append(
                PendingTest(
                    feature=column.name, test=method.name, kind=column.result_kind, statistic=outcome.statistic,
                    p_value=outcome.p_value, effect_size=outcome.effect, effect_floor=floor, n_reference=outcome.n_reference,
                    n_current=outcome.n_current, detail=dict(outcome.detail),
                    enough_samples=min(outcome.n_reference, outcome.n_current) >= min_samples, corrected=outcome.corrected,
                    min_detectable=outcome.min_detectable, effect_upper=outcome.effect_upper, effect_margin=outcome.effect_margin,
                )
            )
    return pending


def default_floors(
    columns: Sequence[DriftColumn],
    *,
    min_ks_d: float | None = None,
    min_cramers_v: float | None = None,
    min_missing_rate_h: float | None = None,
    floors: Mapping[str, float] | None = None,
    missing_rate_floors: Mapping[str, float] | None = None,
) -> dict[tuple[str, str], float]:
    """Per (column, method) the floor: the column's own (``floors`` for its main test,
    ``missing_rate_floors``), else the given deployment floor of the method, else its default.

    :raises ValueError: a floor for a column not in ``columns``, or a floor out of its method's range.
    """
    general = {"min_ks_d": min_ks_d, "min_cramers_v": min_cramers_v, "min_missing_rate_h": min_missing_rate_h}
    for name, value in general.items():
        if value is not None:
            method = next(method for method in registered_methods() if method.deployment_setting == name)
            if not method.floor_range[0] <= value < method.floor_range[1]:
                raise ValueError(f"{name} must be in [{method.floor_range[0]:g}, {method.floor_range[1]:g}), got {value}")
    own, own_missing = dict(floors or {}), dict(missing_rate_floors or {})
    names = {column.name for column in columns}
    features = {column.name for column in columns if not column.prediction}
    for given, known, what in ((own, names, "floors"), (own_missing, features, "missing-rate floors")):
        unknown = sorted(set(given).difference(known))
        if unknown:
            raise ValueError(f"{what} given for feature(s) not in the schema: {', '.join(map(repr, unknown))}")
    result = {}
    for column in columns:
        for method in column.methods():
            specific = own_missing if method.missing_rate else own
            if column.name in specific:
                value = specific[column.name]
                low, high = method.floor_range
                if not low <= value < high:
                    what = "missing-rate floor" if method.missing_rate else "floor"
                    raise ValueError(f"{what} of feature {column.name!r} must be in [{low:g}, {'pi' if high == math.pi else f'{high:g}'}), got {value}")
            else:
                deployment = general.get(method.deployment_setting or "")
                value = method.default_floor if deployment is None else deployment
            result[column.name, method.name] = float(value)
    return result


def run_drift_tests(
    reference: Mapping[str, Any],
    current: Mapping[str, np.ndarray | Sequence[Any]],
    columns: Sequence[Any],
    *,
    fdr: float = 0.05,
    min_ks_d: float = 0.1,
    min_cramers_v: float = 0.1,
    min_missing_rate_h: float = 0.2,
    min_samples: int = 30,
    floors: Mapping[str, float] | None = None,
    missing_rate_floors: Mapping[str, float] | None = None,
) -> list[FeatureTestResult]:
    """:func:`run_drift_methods` on columns of values: each is summarised against its reference first.

    :param reference: per column name, a numeric reference (``sorted_values``, ``missing``) or a
        categorical one (``counts``, ``missing``), e.g. the manifest's reference objects or
        :func:`sml.monitoring.drift.stats.reference_from_columns` of training data.
    :param current: per column name, the window's values in row order (numeric: floats with NaN
        or None for missing; categorical: values with None for missing).
    :param min_ks_d, min_cramers_v, min_missing_rate_h: the floors of the ``ks``, ``chi2`` and
        ``missing_rate`` methods (KS D 0.1 is a location shift of about a quarter of a standard
        deviation, or a 1.5× change of scale; Cramér's V 0.1 is Cohen's "small", a 50/50 binary
        column moving to 60/40; h 0.2 is Cohen's "small", a complete column starting to arrive 1%
        empty, or 10% → 19% missing); other methods use their default floor.
    :param columns: the columns to test: :class:`DriftColumn` s, or features (anything with
        ``name``, ``kind`` and ``categories``, e.g. the manifest's ``FeatureSpec``).
    :param floors: per column, a floor for its main test; ``missing_rate_floors`` for its missing-rate test.
    :raises ValueError: naming the column or option that is invalid.
    """
    columns = [column if isinstance(column, DriftColumn) else DriftColumn(column.name, column.kind, column.categories) for column in columns]
    _check_unique(columns)
    table = default_floors(
        columns, min_ks_d=min_ks_d, min_cramers_v=min_cramers_v, min_missing_rate_h=min_missing_rate_h, floors=floors,
        missing_rate_floors=missing_rate_floors,
    )
    summary_reference = reference_grids(reference, columns)
    features = [column for column in columns if not column.prediction]
    predicted = next((column for column in columns if column.prediction), None)
    missing = [column.name for column in columns if column.name not in current]
    if missing:
        raise ValueError(f"no values for feature {missing[0]!r}")
    for column in columns:
        if column.kind == "numeric":
            _check_numeric(column.name, current[column.name])
    summary = summarise({column.name: current[column.name] for column in features}, summary_reference, current[predicted.name] if predicted else None)
    return run_drift_methods(summary_reference, summary, columns, table, fdr=fdr, min_samples=min_samples)


def _check_unique(columns: Sequence[DriftColumn]) -> None:
    names = [column.name for column in columns]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"schema lists feature(s) {', '.join(map(repr, duplicates))} more than once")


def _check_numeric(name: str, values: Any) -> None:
    try:
        array = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"feature {name!r} is numeric but has a non-numeric value: {exc}") from None
    if array.ndim != 1:
        raise ValueError(f"feature {name!r}: expected a 1-D column of values, got shape {array.shape}")
