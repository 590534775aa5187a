"""Drift methods: each is one class in one module, registered by name and the column kinds it tests.

A method computes, from a column's reference (:class:`~sml.monitoring.summaries.NumericGrid` or
:class:`~sml.monitoring.summaries.CategoricalGrid`) and the window's summary of the column, a
statistic, a p-value, an effect size with its one-sided 95% upper bound, and what it could detect
(:class:`MethodOutcome`); the run (:mod:`sml.monitoring.drift.run`) corrects the p-values across
the run and decides the three-way verdict the same way for every method
(:func:`sml.monitoring.drift.stats.decide_all`). A method also declares its effect's name and
unit, the key of its floor in a model's drift config and its default, the deployment setting
that may hold its floor, how small a shift it can typically certify as absent (the power check,
:mod:`sml.monitoring.drift.power`) and, optionally, its own chart for the report. The run, the
floors, the power check, the stored run, the report and the alert loop over the registry; a new
method is one module with a class decorated by :func:`register_method`.

Per column the run tests the column's main method (``ks`` for numeric, ``chi2`` for categorical
columns, unless the model's drift config chooses another) and, for input features, the
``missing_rate`` method (its own method, flagged :attr:`DriftMethod.missing_rate`).

Example (a whole method)::

    @register_method
    class MeanShift(DriftMethod):
        name, kinds, effect_name = "mean_shift", ("numeric",), "standardised mean difference"
        floor_key, default_floor = "mean_shift", 0.2

        def compute(self, column, reference, current): ...
        def certifiable(self, column, reference, n_current, alpha): ...
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from sml.core.errors import SmlError

DEFAULT_METHODS = {"numeric": "ks", "categorical": "chi2"}


@dataclass(frozen=True)
class MethodOutcome:
    """What a method computed for one column, before the run-wide correction decides its verdict.

    ``n_reference``/``n_current`` count the values the method used; ``effect_upper`` is the
    effect's one-sided 95% upper bound and ``min_detectable`` the smallest effect detectable at a
    given level (both ``None`` when a sample is empty); ``corrected`` says whether the p-value can
    vary (only such tests take part in the Benjamini–Hochberg correction); ``detail`` holds
    JSON-friendly extras stored with the result.
    """

    statistic: float
    p_value: float
    effect: float
    n_reference: int
    n_current: int
    effect_upper: float | None
    min_detectable: Callable[[float], float] | None
    corrected: bool
    detail: dict[str, Any] = field(default_factory=dict)
    effect_margin: float = 0.0
    """How far the true effect may lie below ``effect`` for a reason other than sampling (a
    sketched reference's rank error): DRIFT needs ``effect - effect_margin`` over the floor."""


class DriftMethod(ABC):
    """The interface every drift method implements (see the module doc).

    Class attributes: ``name`` (the result's ``test`` and the drift config's ``method`` value),
    ``kinds`` (the column kinds it accepts), ``effect_name`` (what ``effect_size`` measures),
    ``floor_key`` (its key in a drift config's ``[floors]`` table) and ``default_floor``,
    ``floor_range`` (the open interval a floor must lie in), ``deployment_setting`` (the
    :class:`~sml.monitoring.job.DriftJobConfig` attribute holding the deployment's floor, if any),
    ``missing_rate`` (True for the method testing a feature's missing-value rate) and ``title``
    (how a sentence names it, e.g. "KS test").
    """

    name: ClassVar[str]
    kinds: ClassVar[tuple[str, ...]]
    effect_name: ClassVar[str]
    floor_key: ClassVar[str]
    default_floor: ClassVar[float]
    floor_range: ClassVar[tuple[float, float]] = (0.0, 1.0)
    deployment_setting: ClassVar[str | None] = None
    missing_rate: ClassVar[bool] = False
    title: ClassVar[str] = ""
    shown_decimals: ClassVar[int] = 3
    sketched_reference: ClassVar[bool] = False
    """Whether it can test a numeric column against a KLL-sketched reference (the ``previous``
    window's, :mod:`sml.monitoring.drift.sketch`) with the sketch's rank error accounted for."""

    @abstractmethod
    def compute(self, column: Any, reference: Any, current: Any) -> MethodOutcome:
        """The method's numbers for ``column`` (a :class:`~sml.monitoring.drift.run.DriftColumn`)
        from its reference grid and the window's summary of it."""

    @abstractmethod
    def certifiable(self, column: Any, reference: Any, n_current: int | None, alpha: float) -> float:
        """The effect bound a window of ``n_current`` values (``None``: unlimited) with no shift
        typically reaches: floors below it are rarely certified as absent."""

    def reference_size(self, reference: Any) -> int:
        """The reference values the method uses (non-missing ones, unless it tests missingness)."""
        return reference.n_present if hasattr(reference, "n_present") else sum(reference.counts.values())

    def present_share(self, reference: Any) -> float:
        """The share of a window's rows the method uses, taken at the reference's rate."""
        rows = self.reference_size(reference) + int(reference.missing)
        return self.reference_size(reference) / rows if rows else 0.0

    def parse_floor(self, feature: str, value: Any) -> float:
        """A floor as written in a config or setting (a number; ``ks`` also takes ``"<x>sd"``), as an effect.

        :raises ValueError: ``"floor of feature '<feature>': ..."`` when it is not a number in :attr:`floor_range`.
        """
        low, high = self.floor_range
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not low < value < high:
            raise ValueError(f"floor of feature {feature!r}: a {self.effect_name} floor must be a number in ({low:g}, {high:g}), got {value!r}")
        return float(value)

    def in_units(self, effect: float) -> float:
        """The effect in the unit a user reads (:attr:`unit`); the effect itself unless overridden."""
        return effect

    @property
    def unit(self) -> str:
        return self.effect_name

    def shown(self, effect: float, decimals: int = 3) -> str:
        """The effect as a warning prints it, e.g. ``Cramér's V 0.100`` or ``0.25 sd``."""
        return f"{self.unit} {self.in_units(effect):.{decimals}f}"

    def chart(self, feature: str, reference: Any, current: Any) -> str | None:
        """The report's chart for this method's column, or ``None`` for the report's chart of the column's kind."""
        return None


_METHODS: dict[str, DriftMethod] = {}


def register_method(cls: type[DriftMethod]) -> type[DriftMethod]:
    """Class decorator: make the method available to runs, configs, the power check and the report.

    :raises ValueError: another method has the same name.
    """
    existing = _METHODS.get(cls.name)
    if existing is not None and type(existing).__qualname__ != cls.__qualname__:
        raise ValueError(f"a drift method named {cls.name!r} is already registered ({type(existing).__qualname__})")
    _METHODS[cls.name] = cls()
    return cls


def unregister_method(name: str) -> None:
    """Remove a registered method (tests registering a method of their own clean up with it)."""
    _METHODS.pop(name, None)


def drift_method(name: str) -> DriftMethod:
    """The registered method called ``name``.

    :raises SmlError: no such method; the message lists the registered ones.
    """
    try:
        return _METHODS[name]
    except KeyError:
        raise SmlError(f"no drift method {name!r}; registered: {', '.join(sorted(_METHODS))}") from None


def registered_methods() -> list[DriftMethod]:
    """Every registered method, in registration order."""
    return list(_METHODS.values())


def missing_rate_method() -> DriftMethod:
    """The method that tests a feature's missing-value rate."""
    return next(method for method in _METHODS.values() if method.missing_rate)


def is_main_test(name: str) -> bool:
    """Whether a stored result's ``test`` is a column's main test (any name but the missing-rate method's)."""
    method = _METHODS.get(name)
    return method is None or not method.missing_rate


# Importing the built-in methods registers them.
from sml.monitoring.drift.methods import chi_square, jensen_shannon, ks, missing_rate, psi, wasserstein  # noqa: E402,F401
