"""The run from window summaries gives what the run from the window's values gave: the same
statistics, p-values, adjusted p-values, effects, bounds, details and verdicts, bit for bit, on
random, heavily tied and degenerate data (the array path survives only as this oracle)."""

from types import SimpleNamespace

import numpy as np
from drift_oracle import run_drift_tests_on_arrays
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sml.monitoring.drift.run import DriftColumn, run_drift_tests
from sml.monitoring.drift.stats import CategoricalReference, NumericReference

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LEVELS = ["a", "b", "c", "d", "rare", None]


@st.composite
def numeric_column(draw: st.DrawFn, size: int) -> np.ndarray:
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shape = draw(st.sampled_from(["normal", "tied", "constant", "empty", "shifted"]))
    if shape == "normal":
        values = rng.normal(0, 1, size)
    elif shape == "tied":
        values = rng.integers(0, 3, size).astype(float)
    elif shape == "constant":
        values = np.full(size, 2.0)
    elif shape == "shifted":
        values = rng.normal(0.4, 1.3, size)
    else:
        values = np.full(size, np.nan)
    missing = rng.random(size) < draw(st.sampled_from([0.0, 0.02, 0.3]))
    values[missing] = np.nan
    return values


@st.composite
def windows(draw: st.DrawFn) -> tuple[dict, dict]:
    reference_size = draw(st.sampled_from([0, 5, 40, 300]))
    current_size = draw(st.sampled_from([0, 10, 60, 500]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))

    def categories(size: int, with_new: bool) -> list:
        levels = LEVELS + (["new", "newer"] if with_new else [])
        weights = rng.dirichlet(np.ones(len(levels)) * draw(st.sampled_from([0.3, 3.0])))
        return rng.choice(np.array(levels, dtype=object), size=size, p=weights).tolist()

    reference = {"x": draw(numeric_column(reference_size)), "y": draw(numeric_column(reference_size)), "c": categories(reference_size, False)}
    current = {"x": draw(numeric_column(current_size)), "y": draw(numeric_column(current_size)), "c": categories(current_size, draw(st.booleans()))}
    reference["label"] = rng.choice(["yes", "no", "maybe"], size=reference_size).tolist()
    current["label"] = rng.choice(["yes", "no"], size=current_size).tolist()
    return reference, current


SCHEMA = [DriftColumn("x", "numeric"), DriftColumn("y", "numeric"), DriftColumn("c", "categorical", ("d", "a")), DriftColumn("label", "categorical", ("no", "yes"), prediction=True)]
ORACLE_SCHEMA = [
    SimpleNamespace(name="x", kind="numeric", categories=None), SimpleNamespace(name="y", kind="numeric", categories=None),
    SimpleNamespace(name="c", kind="categorical", categories=("d", "a")), SimpleNamespace(name="label", kind="label", categories=("no", "yes")),
]


def _reference(columns: dict) -> dict:
    return {
        "x": NumericReference.from_values(columns["x"]), "y": NumericReference.from_values(columns["y"]),
        "c": CategoricalReference.from_values(columns["c"]), "label": CategoricalReference.from_values(columns["label"]),
    }


@SETTINGS
@given(data=windows(), min_samples=st.sampled_from([1, 30]))
def test_summaries_give_the_arrays_verdicts_bit_for_bit(data: tuple[dict, dict], min_samples: int) -> None:
    reference_columns, current = data
    reference = _reference(reference_columns)
    from_summaries = run_drift_tests(reference, current, SCHEMA, min_samples=min_samples)
    from_arrays = run_drift_tests_on_arrays(reference, current, ORACLE_SCHEMA, min_samples=min_samples)
    assert from_summaries == from_arrays


def test_a_large_window_takes_the_asymptotic_path_the_same_way() -> None:
    rng = np.random.default_rng(4)
    reference_columns = {"x": rng.normal(0, 1, 12_000), "y": rng.integers(0, 50, 12_000).astype(float), "c": rng.choice(["a", "b", "d"], 12_000).tolist(),
                         "label": rng.choice(["yes", "no"], 12_000).tolist()}
    current = {"x": rng.normal(0.02, 1, 40_000), "y": rng.integers(0, 51, 40_000).astype(float), "c": rng.choice(["a", "b", "d", "e"], 40_000).tolist(),
               "label": rng.choice(["yes", "no"], 40_000).tolist()}
    reference = _reference(reference_columns)
    from_summaries = run_drift_tests(reference, current, SCHEMA)
    assert from_summaries == run_drift_tests_on_arrays(reference, current, ORACLE_SCHEMA)
    assert {result.detail["method"] for result in from_summaries if result.test == "ks"} == {"kstwo"}
