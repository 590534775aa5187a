"""The writer's batch logic: SQS message bodies into ``predictions`` and ``ground_truth`` rows, idempotently.

The contract (ARCHITECTURE.md, "Writer batch semantics"):

- every record is parsed; one that does not fit the event contract fails alone;
- valid rows go in as few multi-row statements as possible, in one transaction per batch, and a
  row whose ``prediction_id`` exists is skipped (redelivery and DLQ replay never duplicate);
- a data error (a row the database rejects) is narrowed down by bisection so only the rows at
  fault fail;
- any other database error (connection refused or lost, deadlock, missing table) raises
  :class:`BatchNotStored`: nothing of the batch may be acknowledged;
- a record counts as stored only once the transaction holding its row has committed.

Ground-truth events (event type 2) share the queue and every rule above. Their rows go to
``ground_truth``, one per ``prediction_id``, and the latest ``labelled_at`` wins: a label
replaces the stored one only when its ``labelled_at`` is strictly later, so an older label, an
equal-time label (a tie keeps the label stored first) and a redelivered copy change nothing.
Labels may arrive before their prediction row (no foreign key): they are stored all the same,
and monitoring counts those whose prediction never arrives as unmatched. Classes are checked
where labels come in (``POST /feedback`` and ``sml feedback`` against the champion's classes),
not here: the writer reads nothing per label, and the model that made a prediction may no longer
be the champion. The ``label`` column
holds the label as JSON text, encoded exactly like ``predictions.prediction``, so the two compare
equal in SQL when the label is the predicted class.

Refusal events (event type 3, what predict refused) share them too. Each becomes one
``predict_refusals`` row per field and reason, keyed by ``refusal_id`` with them: a redelivered or
replayed refusal inserts nothing (refused values are never counted twice), and an event's rows
are stored in one transaction, whole or not at all (bisection never splits an event).

Parsing and row mapping are pure; :func:`insert_prediction_rows` and :func:`write_prediction_rows`
take a connection or an engine. Statements are parameterised and the table and column names come
from :data:`sml.core.db.PREDICTIONS`, never from input.

Example::

    outcome = write_batch(engine, [(record["messageId"], record["body"]) for record in records])
    failed_message_ids = [failure.message_id for failure in outcome.failures]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.engine import Connection, Engine

from sml.core.day_counts import add_inserted_rows
from sml.core.db import GROUND_TRUTH, PREDICT_REFUSALS, PREDICTIONS, dialect_family, to_db_timestamp
from sml.core.events import Event, EventValidationError, GroundTruthEvent, PredictionEvent, RefusalEvent, parse_event

MAX_ROWS_PER_STATEMENT = 1000
# Approximate bytes of values per MySQL INSERT, far below every server's max_allowed_packet
# (MySQL 8: 64 MB, MariaDB: 16 MB, MySQL 5.7: 4 MB) however many features an event carries.
MAX_STATEMENT_BYTES = 1_000_000
# A row's columns other than the JSON ones (id, names, label, timestamps) as literals, typically.
_MYSQL_ROW_OVERHEAD_BYTES = 200
_COLUMNS = tuple(column.name for column in PREDICTIONS.columns)
# What makes two prediction events the same event (stored_at is when the writer stored it).
_EVENT_COLUMNS = tuple(name for name in _COLUMNS if name != "stored_at")
_JSON = msgspec.json.Encoder()
# SQLSTATE classes of errors caused by the values of a row: data exception, constraint violation.
_DATA_ERROR_SQLSTATE_CLASSES = ("22", "23")

Row = dict[str, Any]
PredictionValues = tuple[dict[str, Any], "dict[str, float] | None"]
"""A prediction's features and probabilities as parsed from its event (JSON values)."""


class BatchNotStored(Exception):
    """The database could not take the batch (down, unreachable, or failing for a reason no row
    causes); nothing of the batch may be acknowledged. ``__cause__`` holds the database error."""


@dataclass(frozen=True)
class RecordFailure:
    """A record that was not stored, with the reason (reported as a batch item failure)."""

    message_id: str
    reason: str


@dataclass(frozen=True)
class ParsedBatch:
    """The rows of a batch and the records that did not parse.

    ``rows`` hold one row per distinct ``prediction_id``, in arrival order;
    ``message_ids_by_prediction`` maps each to every message that carried it (SQS may deliver a
    message twice, and a replay may put a copy next to the original).
    """

    rows: list[Row]
    message_ids_by_prediction: dict[str, list[str]]
    failures: list[RecordFailure]
    ground_truth_rows: list[Row] = field(default_factory=list)
    """One ``ground_truth`` row per distinct ``prediction_id``: the latest ``labelled_at`` of the
    batch, the first one on a tie."""
    message_ids_by_label: dict[str, list[str]] = field(default_factory=dict)
    """Every message that carried a label for each ``prediction_id`` of ``ground_truth_rows``."""
    refusals: list[Row] = field(default_factory=list)
    """One item per distinct ``refusal_id``: ``{"refusal_id": ..., "rows": [predict_refusals rows]}``."""
    message_ids_by_refusal: dict[str, list[str]] = field(default_factory=dict)
    conflicting_predictions: tuple[str, ...] = ()
    """Ids carried by two events of other content in this batch (the first one's row is kept)."""
    label_events: list[Row] = field(default_factory=list)
    """Every distinct label event of the batch, in arrival order, whether or not it is the latest of
    its prediction: what the archive (the immutable log) receives. A copy (same ``prediction_id``,
    ``labelled_at`` and ``label``, the archive's identity of a label event) counts once."""
    prediction_values: dict[str, PredictionValues] = field(default_factory=dict)
    """The features and probabilities of each row of ``rows`` as parsed (what its JSON text encodes)."""
    events: list[tuple[str, Event]] = field(default_factory=list)
    """Every record that parsed, as ``(message_id, event)`` in arrival order: what the archive's
    landing object keeps of the batch, so its conversion builds these rows again without parsing
    the bodies (:mod:`sml.archive.landing`)."""


@dataclass(frozen=True)
class InsertOutcome:
    """Rows inserted and rows skipped because their ``prediction_id`` was already stored; ``conflicts``
    names the skipped ids whose stored event differs from the one skipped (same id, other content)."""

    inserted: int = 0
    duplicates: int = 0
    conflicts: tuple[str, ...] = ()


@dataclass(frozen=True)
class WriteOutcome:
    """What :func:`write_prediction_rows` committed, and the rows the database rejected."""

    inserted: int = 0
    duplicates: int = 0
    rejected: dict[str, str] = field(default_factory=dict)
    conflicts: tuple[str, ...] = ()
    """Skipped ids whose stored event differs from the one written (see :class:`InsertOutcome`)."""

    def __add__(self, other: WriteOutcome) -> WriteOutcome:
        return WriteOutcome(
            self.inserted + other.inserted, self.duplicates + other.duplicates, {**self.rejected, **other.rejected}, self.conflicts + other.conflicts
        )


@dataclass(frozen=True)
class BatchOutcome:
    """The result of one batch, counted per record: ``inserted + duplicates + labels_stored +
    labels_skipped + refusals_stored + refusals_skipped + len(failures)`` is the number of records. A duplicate is a prediction record
    acknowledged without a new row (its ``prediction_id`` was stored before, or came earlier in
    the same batch). ``labels_stored`` counts ground-truth records whose label was inserted or
    replaced an older one; ``labels_skipped`` those acknowledged without a change (a label with a
    later or equal ``labelled_at`` is stored already, or came in the same batch)."""

    inserted: int
    duplicates: int
    failures: list[RecordFailure]
    labels_stored: int = 0
    labels_skipped: int = 0
    refusals_stored: int = 0
    refusals_skipped: int = 0
    """Refusal records whose rows were inserted, and those acknowledged without a new row (stored before)."""
    conflicting_predictions: tuple[str, ...] = ()
    """Prediction ids skipped as duplicates whose stored event has other content (the stored one is
    kept); a producer reused an id, which the writer logs."""
    events: list[tuple[str, Event]] = field(default_factory=list)
    """Every record of the batch that parsed, as ``(message_id, event)`` (:attr:`ParsedBatch.events`):
    what the writer lands in the archive, less the records in ``failures``."""


# --------------------------------------------------------------------------------------------
# Pure: records into rows


def _json_text(value: Any) -> str:
    # msgspec: compact, UTF-8, shortest round-trip floats, several times faster than json.dumps.
    return _JSON.encode(value).decode("utf-8")


def prediction_row(event: PredictionEvent, stored_at: datetime) -> Row:
    """The ``predictions`` row of ``event``, stored at ``stored_at``.

    Features, probabilities and the label are compact JSON text (non-ASCII kept as is), so they
    read back to exactly the event's values; timestamps are naive UTC.
    """
    return {
        "prediction_id": event.prediction_id,
        "schema_version": event.schema_version,
        "model_name": event.model_name,
        "model_version": event.model_version,
        "predicted_at": to_db_timestamp(event.predicted_at),
        "prediction": _json_text(event.prediction),
        "probabilities": None if event.probabilities is None else _json_text(event.probabilities),
        "features": _json_text(event.features),
        "stored_at": to_db_timestamp(stored_at),
    }


def ground_truth_row(event: GroundTruthEvent, stored_at: datetime) -> Row:
    """The ``ground_truth`` row of ``event``: the label as JSON text (as ``predictions.prediction``), naive UTC times."""
    return {
        "prediction_id": event.prediction_id,
        "label": _json_text(event.label),
        "labelled_at": to_db_timestamp(event.labelled_at),
        "source": event.source,
        "stored_at": to_db_timestamp(stored_at),
    }


def refusal_rows(event: RefusalEvent, stored_at: datetime) -> list[Row]:
    """The ``predict_refusals`` rows of ``event``: one per field and reason, naive UTC times."""
    common = {
        "refusal_id": event.refusal_id,
        "model_name": event.model_name,
        "model_version": event.model_version,
        "refused_at": to_db_timestamp(event.refused_at),
        "stored_at": to_db_timestamp(stored_at),
    }
    return [
        {**common, "field_name": field_name, "reason": reason, "refused_count": count}
        for field_name, reasons in event.refused.items()
        for reason, count in reasons.items()
    ]


def parse_records(records: Iterable[tuple[str, str]], stored_at: datetime) -> ParsedBatch:
    """Parse ``(message_id, body)`` pairs of either event type into rows; bodies that do not fit the contract fail.

    :param records: the batch, in order.
    :param stored_at: the ``stored_at`` of every row.
    :returns: a :class:`ParsedBatch`; a failure's reason is the parser's message, naming the field.
    """
    return rows_of_events(_parsed(records), stored_at)


def _parsed(records: Iterable[tuple[str, str]]) -> Iterator[tuple[str, Event | RecordFailure]]:
    for message_id, body in records:
        try:
            yield message_id, parse_event(body)
        except EventValidationError as exc:
            yield message_id, RecordFailure(message_id, f"unparseable event: {exc}")


def rows_of_events(events: Iterable[tuple[str, Event | RecordFailure]], stored_at: datetime) -> ParsedBatch:
    """The rows of a batch's parsed events (``(message_id, event)``, in arrival order; a
    :class:`RecordFailure` in place of an event that did not parse), as :func:`parse_records` gives them.

    :param stored_at: the ``stored_at`` of every row.
    """
    rows: dict[str, Row] = {}
    message_ids: dict[str, list[str]] = {}
    values: dict[str, PredictionValues] = {}
    labels: dict[str, Row] = {}
    label_events: dict[tuple[Any, ...], Row] = {}
    label_message_ids: dict[str, list[str]] = {}
    refusals: dict[str, Row] = {}
    refusal_message_ids: dict[str, list[str]] = {}
    failures = []
    conflicts: list[str] = []
    parsed: list[tuple[str, Event]] = []
    stored_at_in_db = to_db_timestamp(stored_at)  # once per batch, not per row
    for message_id, event in events:
        if type(event) is RecordFailure:
            failures.append(event)
            continue
        parsed.append((message_id, event))  # type: ignore[arg-type]
        if type(event) is PredictionEvent:
            row = prediction_row(event, stored_at_in_db)
            kept = rows.setdefault(row["prediction_id"], row)
            if kept is row:
                values[row["prediction_id"]] = (event.features, event.probabilities)
            elif row["prediction_id"] not in conflicts and any(kept[name] != row[name] for name in _EVENT_COLUMNS):
                conflicts.append(row["prediction_id"])
            message_ids.setdefault(row["prediction_id"], []).append(message_id)
            continue
        if type(event) is RefusalEvent:
            refusals.setdefault(event.refusal_id, {"refusal_id": event.refusal_id, "rows": refusal_rows(event, stored_at_in_db)})
            refusal_message_ids.setdefault(event.refusal_id, []).append(message_id)
            continue
        row = ground_truth_row(event, stored_at_in_db)
        label_events.setdefault((row["prediction_id"], row["labelled_at"], row["label"]), row)
        kept = labels.get(row["prediction_id"])
        if kept is None or row["labelled_at"] > kept["labelled_at"]:
            labels[row["prediction_id"]] = row
        label_message_ids.setdefault(row["prediction_id"], []).append(message_id)
    return ParsedBatch(
        list(rows.values()), message_ids, failures, list(labels.values()), label_message_ids, list(refusals.values()), refusal_message_ids,
        tuple(conflicts), list(label_events.values()), values, parsed,
    )


# --------------------------------------------------------------------------------------------
# Database adapter


def insert_prediction_rows(connection: Connection, rows: Sequence[Row]) -> InsertOutcome:
    """Insert ``rows`` in the caller's transaction, skipping ``prediction_id``\\ s already stored.

    At most :data:`MAX_ROWS_PER_STATEMENT` rows per statement, and on MySQL at most about
    :data:`MAX_STATEMENT_BYTES` of values. Each statement's skipped rows are counted exactly, and
    a skipped row whose stored content differs (same id, another event) is named in
    ``InsertOutcome.conflicts``; the stored row is kept (the first event wins):

    - SQLite: ``INSERT ... ON CONFLICT DO NOTHING``, whose rowcount counts only inserted rows; the
      stored rows of a statement that skipped some are then read to compare them.
    - MySQL: ``predictions`` is partitioned by day of ``predicted_at`` and its primary key is
      ``(prediction_id, predicted_at)`` (MySQL requires the partitioning column in every unique
      key), so the key alone would let an event reusing an id with another ``predicted_at`` in.
      The statement's ids are therefore looked up first (in every partition: one index probe per
      id and partition), and only the others inserted, with ``ON DUPLICATE KEY UPDATE`` as a
      guard against a concurrent writer storing the same event in between (that row is then
      counted as inserted by both). Two writers storing *different* events under one new id at the
      same moment could both insert; SQS delivers one event's copies, so only a producer reusing
      ids concurrently could do that. ``ON DUPLICATE KEY UPDATE``'s rowcount cannot count skipped
      rows (SQLAlchemy's MySQL dialects connect with ``CLIENT_FOUND_ROWS``), hence the lookup.

    The rows inserted are added to their days' counts in the same transaction
    (:func:`sml.core.day_counts.add_inserted_rows`); skipped rows add nothing. On SQLite a
    statement that skipped some rows tells the inserted ones by the ``stored_at`` read back: a
    skipped row that carried the stored row's own ``stored_at`` (``sml rebuild`` inserting an
    archived copy of a row that is there) is counted too, which only makes its day look changed.

    :param connection: a connection inside a transaction; the caller commits.
    :param rows: rows as built by :func:`prediction_row`, distinct ``prediction_id``\\ s.
    :returns: an :class:`InsertOutcome`.
    :raises sqlalchemy.exc.DBAPIError: as raised by the database.
    """
    insert = _insert_into_sqlite if dialect_family(connection.engine) == "sqlite" else _insert_into_mysql
    inserted_rows: list[Row] = []
    outcome = insert(connection, rows, inserted_rows)
    add_inserted_rows(connection, inserted_rows)
    return outcome


def _insert_into_sqlite(connection: Connection, rows: Sequence[Row], inserted_rows: list[Row]) -> InsertOutcome:
    statement = sqlite.insert(PREDICTIONS).on_conflict_do_nothing(index_elements=[PREDICTIONS.c.prediction_id])
    inserted = 0
    conflicts: list[str] = []
    for start in range(0, len(rows), MAX_ROWS_PER_STATEMENT):
        chunk = rows[start : start + MAX_ROWS_PER_STATEMENT]
        chunk_inserted = connection.execute(statement, chunk).rowcount
        inserted += chunk_inserted
        if chunk_inserted < len(chunk):
            stored = _stored_predictions(connection, [row["prediction_id"] for row in chunk])
            conflicts += _conflicting_ids(chunk, stored)
            if chunk_inserted:
                inserted_rows += [row for row in chunk if stored[row["prediction_id"]]["stored_at"] == row["stored_at"]]
        else:
            inserted_rows += chunk
    return InsertOutcome(inserted, len(rows) - inserted, tuple(conflicts))


def _insert_into_mysql(connection: Connection, rows: Sequence[Row], inserted_rows: list[Row]) -> InsertOutcome:
    inserted = duplicates = 0
    conflicts: list[str] = []
    for chunk in _mysql_statement_chunks(rows):
        stored = _stored_predictions(connection, [row["prediction_id"] for row in chunk])
        new_rows = [row for row in chunk if row["prediction_id"] not in stored]
        if new_rows:
            _execute_mysql_insert(connection, new_rows)
        inserted_rows += new_rows
        inserted += len(new_rows)
        duplicates += len(chunk) - len(new_rows)
        conflicts += _conflicting_ids(chunk, stored)
    return InsertOutcome(inserted, duplicates, tuple(conflicts))


def _stored_predictions(connection: Connection, prediction_ids: list[str]) -> dict[str, Row]:
    columns = [PREDICTIONS.c[name] for name in (*_EVENT_COLUMNS, "stored_at")]
    query = sa.select(*columns).where(PREDICTIONS.c.prediction_id.in_(prediction_ids))
    return {row.prediction_id: row._asdict() for row in connection.execute(query)}


def _conflicting_ids(rows: Sequence[Row], stored: dict[str, Row]) -> list[str]:
    """Ids of ``rows`` stored with other content (a row this statement stored equals itself)."""
    return [
        row["prediction_id"]
        for row in rows
        if (found := stored.get(row["prediction_id"])) is not None and any(found[name] != row[name] for name in _EVENT_COLUMNS)
    ]


def _mysql_statement_chunks(rows: Sequence[Row]) -> Iterator[list[Row]]:
    chunk: list[Row] = []
    size = 0
    for row in rows:
        # Hex doubles the JSON columns, which dominate a row; the other columns are short.
        row_size = 2 * (len(row["features"] or "") + len(row["probabilities"] or "")) + _MYSQL_ROW_OVERHEAD_BYTES
        if chunk and (len(chunk) == MAX_ROWS_PER_STATEMENT or size + row_size > MAX_STATEMENT_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(row)
        size += row_size
    if chunk:
        yield chunk


def _execute_mysql_insert(connection: Connection, rows: list[Row]) -> None:
    # One multi-row INSERT with positional parameters (%s, pymysql's paramstyle) passed to the
    # driver as they are: SQLAlchemy's multi-row paths process every parameter in Python, which
    # cost more than the database's work for these rows.
    preparer = connection.dialect.identifier_preparer
    row_placeholders = f"({', '.join(['%s'] * len(_COLUMNS))})"
    statement = (
        f"INSERT INTO {preparer.format_table(PREDICTIONS)} ({', '.join(preparer.quote(name) for name in _COLUMNS)}) "
        f"VALUES {', '.join([row_placeholders] * len(rows))}"
    )
    # Not INSERT IGNORE: that would also turn a data error into a warning and store a mangled row.
    key = preparer.quote(PREDICTIONS.c.prediction_id.name)
    statement += f" ON DUPLICATE KEY UPDATE {key} = {key}"
    connection.exec_driver_sql(statement, tuple(value for row in rows for value in _mysql_values(row)))


def _as_utf8(text: str | None) -> bytes | None:
    # pymysql escapes a str in Python, character by character; bytes travel as one hex literal
    # built in C, which MySQL reads as UTF-8 into the utf8mb4 column (strict mode refuses bad
    # bytes). Several times faster for the long JSON columns.
    return None if text is None else text.encode("utf-8")


def _as_timestamp_text(value: datetime | None) -> str | None:
    # pymysql formats a datetime in Python; isoformat is C, and DATETIME(6) reads this text as is.
    return None if value is None else value.isoformat(sep=" ", timespec="microseconds")


_MYSQL_BINDERS: dict[str, Callable[[Any], Any]] = {"features": _as_utf8, "probabilities": _as_utf8, "predicted_at": _as_timestamp_text, "stored_at": _as_timestamp_text}


def _mysql_values(row: Row) -> list[Any]:
    return [_MYSQL_BINDERS[name](row[name]) if name in _MYSQL_BINDERS else row[name] for name in _COLUMNS]


def is_data_error(error: sa.exc.DBAPIError) -> bool:
    """Whether the values of a row caused ``error`` (so bisecting can isolate that row).

    True for constraint violations and data exceptions (SQLSTATE classes 22 and 23, e.g. a value
    too long, an out-of-range date, NULL in a NOT NULL column); false for a lost or refused
    connection and for anything else (deadlock, lock timeout, missing table, access denied),
    which no row causes and which a retry of the whole batch may cure.
    """
    if error.connection_invalidated:
        return False
    if isinstance(error, (sa.exc.DataError, sa.exc.IntegrityError)):
        return True
    sqlstate = getattr(error.orig, "sqlstate", None)
    return isinstance(sqlstate, str) and sqlstate[:2] in _DATA_ERROR_SQLSTATE_CLASSES


def write_prediction_rows(engine: Engine, rows: Sequence[Row]) -> WriteOutcome:
    """Commit ``rows`` in one transaction; on a data error, bisect so only the bad rows fail.

    Each half of a bisected batch runs in its own transaction, so the good rows are committed and
    every rejected row is named with the database's message.

    :param engine: the database (MySQL/MariaDB or SQLite) with the ``predictions`` table.
    :param rows: rows as built by :func:`prediction_row`, distinct ``prediction_id``\\ s.
    :returns: a :class:`WriteOutcome` with ``rejected`` mapping ``prediction_id`` to the reason.
    :raises BatchNotStored: on any database error that is not a data error; what this call
        committed before is idempotent to write again.
    """
    return _write_bisecting(engine, rows, insert_prediction_rows)


def _write_bisecting(
    engine: Engine, rows: Sequence[Row], insert: Callable[[Connection, Sequence[Row]], InsertOutcome], key: str = "prediction_id"
) -> WriteOutcome:
    if not rows:
        return WriteOutcome()
    try:
        with engine.begin() as connection:
            outcome = insert(connection, rows)
    except sa.exc.DBAPIError as error:
        if not is_data_error(error):
            raise BatchNotStored(f"the database did not take the batch: {error.orig}") from error
        if len(rows) == 1:
            identifier = rows[0][key]
            return WriteOutcome(rejected={identifier: f"{key} {identifier} rejected by the database: {error.orig}"})
        middle = len(rows) // 2
        return _write_bisecting(engine, rows[:middle], insert, key) + _write_bisecting(engine, rows[middle:], insert, key)
    return WriteOutcome(outcome.inserted, outcome.duplicates, conflicts=outcome.conflicts)


# --------------------------------------------------------------------------------------------
# Ground truth: latest labelled_at wins


def upsert_ground_truth_rows(connection: Connection, rows: Sequence[Row]) -> InsertOutcome:
    """Insert or replace labels in the caller's transaction; the latest ``labelled_at`` wins.

    A stored label is replaced only by one with a strictly later ``labelled_at`` (its ``label``,
    ``source``, ``labelled_at`` and ``stored_at`` together); otherwise the stored row stays as it is.

    - SQLite: ``INSERT ... ON CONFLICT (prediction_id) DO UPDATE ... WHERE excluded.labelled_at >
      ground_truth.labelled_at``; its rowcount counts inserted and replaced rows only.
    - MySQL/MariaDB: ``INSERT ... ON DUPLICATE KEY UPDATE col = IF(VALUES(labelled_at) >
      labelled_at, VALUES(col), col)``, ``labelled_at`` assigned last because MySQL evaluates the
      assignments left to right, each seeing the ones before (MySQL reference manual, "INSERT ...
      ON DUPLICATE KEY UPDATE"). ``VALUES()`` rather than a row alias: MariaDB has no row alias.
      The rowcount cannot tell a skipped row from an inserted one (``CLIENT_FOUND_ROWS``), so the
      stored ``labelled_at`` of the statement's ids are read first to count; the statement alone
      decides what is stored, so a concurrent writer can only skew the counts.

    :param connection: a connection inside a transaction; the caller commits.
    :param rows: rows as built by :func:`ground_truth_row`, distinct ``prediction_id``\\ s.
    :returns: an :class:`InsertOutcome`: ``inserted`` counts inserted or replaced labels,
        ``duplicates`` the rows that changed nothing.
    :raises sqlalchemy.exc.DBAPIError: as raised by the database.
    """
    if dialect_family(connection.engine) == "sqlite":
        return _upsert_ground_truth_sqlite(connection, rows)
    return _upsert_ground_truth_mysql(connection, rows)


def _upsert_ground_truth_sqlite(connection: Connection, rows: Sequence[Row]) -> InsertOutcome:
    statement = sqlite.insert(GROUND_TRUTH)
    statement = statement.on_conflict_do_update(
        index_elements=[GROUND_TRUTH.c.prediction_id],
        set_={name: statement.excluded[name] for name in _GROUND_TRUTH_REPLACED},
        where=statement.excluded.labelled_at > GROUND_TRUTH.c.labelled_at,
    )
    stored = 0
    for start in range(0, len(rows), MAX_ROWS_PER_STATEMENT):
        stored += connection.execute(statement, rows[start : start + MAX_ROWS_PER_STATEMENT]).rowcount
    return InsertOutcome(stored, len(rows) - stored)


_GROUND_TRUTH_COLUMNS = tuple(column.name for column in GROUND_TRUTH.columns)
# labelled_at last: each MySQL assignment sees the ones before it.
_GROUND_TRUTH_REPLACED = ("label", "source", "stored_at", "labelled_at")


def _upsert_ground_truth_mysql(connection: Connection, rows: Sequence[Row]) -> InsertOutcome:
    preparer = connection.dialect.identifier_preparer
    later = f"VALUES({preparer.quote('labelled_at')}) > {preparer.quote('labelled_at')}"
    updates = ", ".join(f"{preparer.quote(name)} = IF({later}, VALUES({preparer.quote(name)}), {preparer.quote(name)})" for name in _GROUND_TRUTH_REPLACED)
    row_placeholders = f"({', '.join(['%s'] * len(_GROUND_TRUTH_COLUMNS))})"
    stored = 0
    for start in range(0, len(rows), MAX_ROWS_PER_STATEMENT):
        chunk = rows[start : start + MAX_ROWS_PER_STATEMENT]
        query = sa.select(GROUND_TRUTH.c.prediction_id, GROUND_TRUTH.c.labelled_at).where(
            GROUND_TRUTH.c.prediction_id.in_([row["prediction_id"] for row in chunk])
        )
        stored_labelled_at = {prediction_id: labelled_at for prediction_id, labelled_at in connection.execute(query)}
        stored += sum(1 for row in chunk if row["prediction_id"] not in stored_labelled_at or row["labelled_at"] > stored_labelled_at[row["prediction_id"]])
        statement = (
            f"INSERT INTO {preparer.format_table(GROUND_TRUTH)} ({', '.join(preparer.quote(name) for name in _GROUND_TRUTH_COLUMNS)}) "
            f"VALUES {', '.join([row_placeholders] * len(chunk))} ON DUPLICATE KEY UPDATE {updates}"
        )
        values = tuple(_as_timestamp_text(row[name]) if name in ("labelled_at", "stored_at") else row[name] for row in chunk for name in _GROUND_TRUTH_COLUMNS)
        connection.exec_driver_sql(statement, values)
    return InsertOutcome(stored, len(rows) - stored)


def write_ground_truth_rows(engine: Engine, rows: Sequence[Row]) -> WriteOutcome:
    """Commit labels in one transaction, latest ``labelled_at`` winning; on a data error, bisect.

    As :func:`write_prediction_rows`, for rows built by :func:`ground_truth_row`:
    ``inserted`` counts labels inserted or replaced, ``duplicates`` labels that changed nothing.

    :raises BatchNotStored: on any database error that is not a data error.
    """
    return _write_bisecting(engine, rows, upsert_ground_truth_rows)


# --------------------------------------------------------------------------------------------
# Refusals: counted once per refusal_id


def insert_refusal_rows(connection: Connection, refusals: Sequence[Row]) -> InsertOutcome:
    """Insert the rows of refusal events not stored yet, in the caller's transaction.

    The stored ``refusal_id``\\ s are read first (counting is per event); the rows of the others go
    in as multi-row inserts that skip a row whose key exists (``ON CONFLICT DO NOTHING`` on SQLite,
    ``ON DUPLICATE KEY UPDATE`` a no-op on MySQL: not ``INSERT IGNORE``, which would turn a data
    error into a warning), so a concurrent writer storing the same event can only skew the counts.

    :param refusals: items as in :attr:`ParsedBatch.refusals`, distinct ``refusal_id``\\ s.
    :returns: ``inserted`` events new to the table, ``duplicates`` events stored before.
    :raises sqlalchemy.exc.DBAPIError: as raised by the database.
    """
    ids = [refusal["refusal_id"] for refusal in refusals]
    stored: set[str] = set()
    for start in range(0, len(ids), MAX_ROWS_PER_STATEMENT):
        query = sa.select(PREDICT_REFUSALS.c.refusal_id).where(PREDICT_REFUSALS.c.refusal_id.in_(ids[start : start + MAX_ROWS_PER_STATEMENT])).distinct()
        stored.update(connection.execute(query).scalars())
    rows = [row for refusal in refusals if refusal["refusal_id"] not in stored for row in refusal["rows"]]
    if dialect_family(connection.engine) == "sqlite":
        statement: Any = sqlite.insert(PREDICT_REFUSALS).on_conflict_do_nothing()
    else:
        statement = mysql.insert(PREDICT_REFUSALS)
        statement = statement.on_duplicate_key_update(refusal_id=statement.inserted.refusal_id)
    for start in range(0, len(rows), MAX_ROWS_PER_STATEMENT):
        connection.execute(statement, rows[start : start + MAX_ROWS_PER_STATEMENT])
    return InsertOutcome(len(ids) - len(stored), len(stored))


def write_refusal_rows(engine: Engine, refusals: Sequence[Row]) -> WriteOutcome:
    """Commit refusal events in one transaction; on a data error, bisect by event (never splitting one).

    :returns: a :class:`WriteOutcome` counting events, ``rejected`` keyed by ``refusal_id``.
    :raises BatchNotStored: on any database error that is not a data error.
    """
    return _write_bisecting(engine, refusals, insert_refusal_rows, key="refusal_id")


def write_batch(
    engine: Engine,
    records: Sequence[tuple[str, str]],
    *,
    stored_at: datetime | None = None,
) -> BatchOutcome:
    """Store one SQS batch: parse, insert idempotently, report the records that were not stored.

    :param engine: the database.
    :param records: ``(message_id, body)`` of every record of the batch.
    :param stored_at: the rows' ``stored_at``; now (UTC) by default. The archive's landing
        object of the batch carries it (:func:`sml.archive.landing.put_landing`), so the rows its
        conversion parses again carry it too.
    :returns: a :class:`BatchOutcome`; every record not in ``failures`` has its row committed
        (or found already stored).
    :raises BatchNotStored: the database could not take the batch; report every record failed.
    """
    parsed = parse_records(records, stored_at or datetime.now(timezone.utc))
    written = write_prediction_rows(engine, parsed.rows)
    labelled = write_ground_truth_rows(engine, parsed.ground_truth_rows)
    refused = write_refusal_rows(engine, parsed.refusals)
    failures = list(parsed.failures)
    for prediction_id, reason in written.rejected.items():
        failures += [RecordFailure(message_id, reason) for message_id in parsed.message_ids_by_prediction[prediction_id]]
    label_records = sum(len(message_ids) for message_ids in parsed.message_ids_by_label.values())
    for prediction_id, reason in labelled.rejected.items():
        failures += [RecordFailure(message_id, f"label of {reason}") for message_id in parsed.message_ids_by_label[prediction_id]]
    rejected_label_records = sum(len(parsed.message_ids_by_label[prediction_id]) for prediction_id in labelled.rejected)
    labels_skipped = label_records - rejected_label_records - labelled.inserted
    refusal_records = sum(len(message_ids) for message_ids in parsed.message_ids_by_refusal.values())
    for refusal_id, reason in refused.rejected.items():
        failures += [RecordFailure(message_id, reason) for message_id in parsed.message_ids_by_refusal[refusal_id]]
    rejected_refusal_records = sum(len(parsed.message_ids_by_refusal[refusal_id]) for refusal_id in refused.rejected)
    refusals_skipped = refusal_records - rejected_refusal_records - refused.inserted
    duplicates = len(records) - len(failures) - written.inserted - labelled.inserted - labels_skipped - refused.inserted - refusals_skipped
    return BatchOutcome(
        written.inserted, duplicates, failures, labelled.inserted, labels_skipped, refused.inserted, refusals_skipped,
        tuple(dict.fromkeys(parsed.conflicting_predictions + written.conflicts)), parsed.events,
    )
