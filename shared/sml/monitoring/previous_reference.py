"""The ``previous`` reference: the window before the current one, read a day at a time into KLL sketches and counts.

Each day of the previous window is read (:func:`sml.monitoring.windows.read_window`) and its values
go into summaries that merge: a KLL sketch per numeric column (:mod:`sml.monitoring.drift.sketch`),
category and missing counts for the others and for a classifier's predicted label. Only one day's
values are held at once, so the reference costs a day's rows plus ~18 KB per numeric column, not
a window's; the current window is then counted against the sketches' grids as against training.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

import numpy as np
from sqlalchemy.engine import Engine

from sml.monitoring.drift.sketch import DEFAULT_K, SketchedNumericGrid, add_values, new_sketch, rank_error
from sml.monitoring.drift.stats import count_categories
from sml.monitoring.summaries import CategoricalGrid, SummaryReference
from sml.monitoring.windows import TimeWindow, read_window

READ_STEP = timedelta(days=1)
# The prediction's key among the columns' sketches and counts: not a text, so no feature (whose
# name comes from the training data, "(prediction)" included) can take it.
PREDICTION = ("prediction",)


def sketch_method(k: int = DEFAULT_K) -> str:
    """How a run against the ``previous`` reference decides, in words for its parameters and report."""
    return (
        f"numeric columns against KLL sketches of the previous window (Apache DataSketches, k={k}, rank error "
        f"±{rank_error(new_sketch(k)):.2%}): DRIFT needs D - rank error over the floor and the p-value is a bound, "
        "that of D - rank error; NO_DRIFT needs the upper bound + rank error under the floor; categories, missing "
        "values and the predicted label are counted exactly"
    )


def sketched_window_reference(engine: Engine, manifest: Any, window: TimeWindow, *, k: int = DEFAULT_K) -> tuple[SummaryReference, int]:
    """The previous window of ``manifest``'s model as a :class:`SummaryReference`, and its row count:
    the predictions of the manifest's version only (another version's rows have their own schema).

    Numeric features (and a regression model's predictions) become :class:`SketchedNumericGrid`\\ s;
    categorical features and a classifier's labels :class:`CategoricalGrid`\\ s of their counts.
    """
    numeric = [spec.name for spec in manifest.features if spec.kind == "numeric"]
    categorical = [spec for spec in manifest.features if spec.kind != "numeric"]
    regression = manifest.task == "regression"
    sketches: dict[Any, Any] = {name: new_sketch(k) for name in [*numeric, *([PREDICTION] if regression else [])]}
    counts: dict[Any, Counter[str]] = {name: Counter() for name in [*(spec.name for spec in categorical), *([] if regression else [PREDICTION])]}
    missing: Counter[Any] = Counter()
    rows = 0
    start = window.start
    while start < window.end:
        day = TimeWindow(start=start, end=min(start + READ_STEP, window.end))
        sample = read_window(engine, manifest.model_name, day, manifest.features, version=manifest.version)
        columns: dict[Any, Any] = {**sample.columns(), PREDICTION: sample.labels}
        if regression:
            columns[PREDICTION] = np.array([_number(value) for value in sample.labels], dtype=float)
        for name, sketch in sketches.items():
            missing[name] += add_values(sketch, columns[name])
        for name, counter in counts.items():
            day_counts, day_missing = count_categories(columns[name])
            counter.update(day_counts)
            missing[name] += day_missing
        rows += sample.n_rows
        start = day.end
    grids: dict[str, Any] = {name: SketchedNumericGrid.from_sketch(sketches[name], missing[name]) for name in numeric}
    grids |= {spec.name: CategoricalGrid.from_counts(dict(counts[spec.name]), missing[spec.name], spec.categories) for spec in categorical}
    if regression:
        prediction: Any = SketchedNumericGrid.from_sketch(sketches[PREDICTION], missing[PREDICTION])
    else:
        prediction = CategoricalGrid.from_counts(dict(counts[PREDICTION]), missing[PREDICTION], manifest.classes)
    return SummaryReference(features=grids, prediction=prediction), rows


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else float("nan")
