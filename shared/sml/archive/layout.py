"""Where archived events live and what their columns are called (pure).

Keys: ``<prefix><table>/model=<model>/date=<YYYY-MM-DD>/<name>.parquet`` for ``predictions``
and ``predict_refusals``, ``<prefix>ground_truth/date=<YYYY-MM-DD>/<name>.parquet`` for labels
(a label event names no model). The date is the event's own time in UTC (``predicted_at``,
``labelled_at``, ``refused_at``), so a window's files are found from its dates alone (Athena's
partition projection, DuckDB's file list).

Column names of features and class probabilities must suit every engine: Athena (Glue) allows
lower-case letters, digits and underscores only. A feature ``name`` becomes ``f_`` + an
escaping that keeps ``a``-``z`` and ``0``-``9``, doubles ``_`` and writes any other character as
``_<hex code point>_``: ``mean radius`` is ``f_mean_20_radius``, ``Age_1`` is ``f__41_ge__1``.
The escaping is reversible, so no two names meet and rebuilding restores the names exactly.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from urllib.parse import quote

PREDICTIONS_TABLE = "predictions"
GROUND_TRUTH_TABLE = "ground_truth"
REFUSALS_TABLE = "predict_refusals"
TABLES = (PREDICTIONS_TABLE, GROUND_TRUTH_TABLE, REFUSALS_TABLE)
FEATURE_PREFIX = "f_"
PROBABILITY_PREFIX = "p_"
DEFAULT_PREFIX = "archive/"
_ESCAPED = re.compile(r"__|_([0-9a-f]+)_|[a-z0-9]")
_INTEGER = re.compile(r"-?[0-9]+")
_FLOAT_INTEGRAL = re.compile(r"-?[0-9]+\.0")


class ArchiveNotWritten(Exception):
    """An object of a batch could not be put; the batch must not be acknowledged. ``__cause__`` holds the error.

    Defined here, with no third-party import, so the writer can catch it without importing pyarrow.
    """


@dataclass(frozen=True)
class ArchiveLocation:
    """Where the archive lives: ``s3://<bucket>/<prefix>``; ``prefix`` ends with ``/``."""

    bucket: str
    prefix: str

    def __post_init__(self) -> None:
        if not self.prefix.endswith("/") or self.prefix.startswith("/"):
            raise ValueError(f"archive prefix {self.prefix!r} must end with '/' and not start with one (e.g. 'archive/')")

    def uri(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{key or self.prefix}"


def escape_name(name: str) -> str:
    """``name`` as lower-case letters, digits and underscores (reversible, see the module docstring)."""
    out = []
    for char in name:
        if "a" <= char <= "z" or "0" <= char <= "9":
            out.append(char)
        elif char == "_":
            out.append("__")
        else:
            out.append(f"_{ord(char):x}_")
    return "".join(out)


def unescape_name(escaped: str) -> str:
    """The name :func:`escape_name` escaped.

    :raises ValueError: ``escaped`` is not the output of :func:`escape_name`.
    """
    out, position = [], 0
    while position < len(escaped):
        match = _ESCAPED.match(escaped, position)
        if match is None:
            raise ValueError(f"{escaped!r} is not an escaped archive column name (at {position})")
        token = match[0]
        out.append("_" if token == "__" else chr(int(match[1], 16)) if match[1] else token)
        position = match.end()
    return "".join(out)


def feature_column(name: str) -> str:
    """The archive column of feature ``name``."""
    return FEATURE_PREFIX + escape_name(name)


def probability_column(class_name: str) -> str:
    """The archive column of the probability of class ``class_name``."""
    return PROBABILITY_PREFIX + escape_name(class_name)


def key_part(value: str) -> str:
    """``value`` as one segment of an S3 key: percent-encoded (RFC 3986) but for letters, digits and ``-._~``.

    Model names as the settings allow them (``[a-z0-9-]``) are kept as they are, which Athena's
    partition projection relies on; anything else an event may carry still makes a valid key.
    """
    return quote(value, safe="")


@dataclass(frozen=True, order=True)
class Partition:
    """One day of one table (and model): the folder its objects share."""

    table: str
    day: date
    model: str | None = None

    def __post_init__(self) -> None:
        if self.table not in TABLES:
            raise ValueError(f"unknown archive table {self.table!r} (expected one of {', '.join(TABLES)})")
        if (self.model is None) != (self.table == GROUND_TRUTH_TABLE):
            raise ValueError(f"table {self.table}: a model partition is {'not ' if self.model is not None else ''}expected")

    def folder(self, prefix: str) -> str:
        """``<prefix><table>/[model=<model>/]date=<day>/``."""
        model = f"model={key_part(self.model)}/" if self.model is not None else ""
        return f"{prefix}{self.table}/{model}date={self.day.isoformat()}/"


def days(since: date, until: date) -> list[date]:
    """Every day from ``since`` to ``until``, both included.

    :raises ValueError: ``until`` is before ``since``.
    """
    check_range(since, until)
    return [since + timedelta(days=offset) for offset in range((until - since).days + 1)]


def check_range(since: date, until: date) -> None:
    """:raises ValueError: ``until`` is before ``since`` (naming both options)."""
    if until < since:
        raise ValueError(f"--until {until.isoformat()} is before --since {since.isoformat()}")


def day_of(moment: datetime) -> date:
    """The UTC day of a naive-UTC or aware timestamp."""
    return moment.date() if moment.tzinfo is None else moment.astimezone(timezone.utc).date()


def integral_floats(known: Collection[str]) -> bool:
    """Whether a reference with the categories ``known`` counted integral numbers as floats (``"3.0"``).

    The archive keeps ``3`` and ``3.0`` alike as the double 3.0, where the database read counts
    ``str()`` of the value sent: ``"3"`` or ``"3.0"``. True when ``known`` has a float text of an
    integral number and no integer text: a model trained on float categories (a pandas column of
    integers with gaps is float64), whose clients send floats too.
    """
    return any(_FLOAT_INTEGRAL.fullmatch(text) for text in known) and not any(_INTEGER.fullmatch(text) for text in known)


def number_category(number: float, as_float: bool) -> str:
    """The category (``str()``) of a number the archive holds as a double: an integral number as the
    integer (``"3"``) unless ``as_float`` (:func:`integral_floats` of the reference), else as ``str(number)``."""
    return str(int(number)) if number.is_integer() and not as_float else str(number)


def text_category(text: str, known: Collection[str]) -> str:
    """The category (``str()``) of a text the archive holds for a categorical feature, given the
    reference's categories ``known``.

    A feature whose values are not all numbers or all text (booleans, a mix) is archived as JSON
    text (:mod:`sml.archive.parquet`), where the database read counts ``str()`` of the value sent:
    ``true`` is ``"True"``, ``"a"`` (quoted) is ``a``. Which files hold JSON is in each file's
    metadata, which neither Athena nor a query over many files sees, so a text is read as JSON
    only when that gives a category the reference knows and the text as it is does not: the known
    categories are counted as from the database; an unseen value keeps its archived text. The one
    text this misreads: a plain text that is the JSON of another known category (``"red"`` with its
    quotes, where ``red`` is known), counted as that category.
    """
    if text in known:
        return text
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except ValueError:
        return text
    decoded = text if value is None else str(value)
    return decoded if decoded in known else text


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")
