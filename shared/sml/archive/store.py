"""The archive in S3: the Parquet objects of stored batches, listing and reading objects, and compaction.

**Writing** (:func:`archive_rows`): a batch's stored rows become Parquet objects, one per
partition (table, model, day) and model version, keyed
``<folder>batch,<version>,<stored_at>,<digest>.parquet``, the digest a hash of the event keys it
holds; ``stored_at`` in the name lets readers take the objects of a partition in the order
they were stored, so the first stored copy of an event is the one that counts. The conversion
step puts them from the batches the writer landed (:mod:`sml.archive.landing`, which says why
the writer does not build them itself and how no event is lost between the queue and the
archive). Any failure of a put raises :class:`ArchiveNotWritten`; the landing object then stays
for the next conversion. A redelivered event is landed again in another batch (with
another ``stored_at``), and the copy is removed where the archive is read or compacted
(:data:`sml.archive.parquet.DEDUPLICATION_KEY`, the copy stored first kept). Keys are never
reused for other content: a key named after, say, the batch's first event would let a
redelivered event's new batch overwrite an object whose other events were acknowledged.

**Compaction** (:func:`compact_partition`): a day of small objects becomes few large ones (up to
``file_bytes`` each; Athena reads files of 128 MB and more best): the objects of each model
version are read with DuckDB (which spills to disk rather than holding a day in memory),
copies dropped, sorted by event time and written as
``compacted,<version>,<earliest stored_at>,<digest>,<n>.parquet``;
then, and only then, the objects read are deleted. Objects the writer adds meanwhile are not
touched. A crash in between leaves copies that the next run removes; running it again on a
compacted day does nothing.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.parquet as pq

from sml.archive.layout import ArchiveLocation, ArchiveNotWritten, GROUND_TRUTH_TABLE, PREDICTIONS_TABLE, REFUSALS_TABLE, Partition, check_range, day_of, days, key_part
from sml.archive.parquet import (
    COMPRESSION,
    DEDUPLICATION_KEY,
    EVENT_TIME,
    METADATA_KEY,
    TABLE_BUILDERS,
    Row,
    archive_metadata,
    json_columns_of,
    null_columns_of,
    prediction_table,
    to_parquet_bytes,
    with_json_columns,
)

if TYPE_CHECKING:
    from sml.writer.batch import PredictionValues

DEFAULT_FILE_BYTES = 256 * 1024 * 1024
_OBJECT_NAME = re.compile(
    r"^(?P<kind>batch|compacted),(?P<version>[^,/]*),(?P<stored>\d{8}T\d{12}Z),(?P<digest>[0-9a-f]{16})(?:,(?P<part>\d+))?\.parquet$"
)
_STORED_FORMAT = "%Y%m%dT%H%M%S%fZ"
_NO_VERSION = ""  # labels carry no model version


@dataclass(frozen=True)
class ArchivedObject:
    """One object of a partition: its key, size in bytes and the model version its rows carry."""

    key: str
    size: int
    version: str
    compacted: bool
    stored: str
    """The earliest ``stored_at`` of its rows, as ``YYYYMMDDTHHMMSSffffffZ`` (sorts as time does)."""
    day: date | None = None
    """The day of its partition, when it was listed with its table (:func:`list_table`)."""
    model: str | None = None
    """The model of its partition, when it was listed with its table (None for ground truth)."""


# --------------------------------------------------------------------------------------------
# Writing


def archive_rows(
    s3: Any,
    location: ArchiveLocation,
    *,
    predictions: Sequence[Row] = (),
    ground_truth: Sequence[Row] = (),
    refusals: Sequence[Row] = (),
    prediction_values: Mapping[str, PredictionValues] | None = None,
) -> list[str]:
    """Put committed rows into the archive; returns the keys written.

    :param s3: a boto3 S3 client.
    :param predictions: ``predictions`` rows as the writer builds them; likewise ``ground_truth``
        and ``refusals`` (``predict_refusals`` rows, one per field and reason).
    :param prediction_values: by ``prediction_id``, the features and probabilities the rows hold
        as JSON text, as parsed (:attr:`sml.writer.batch.ParsedBatch.prediction_values`); without
        them the text is decoded.
    :raises ArchiveNotWritten: a put failed (the message names the object); some objects may be
        written, which a retry writes again under the same keys.
    """
    keys = []
    for key, (table, rows) in _objects(location, predictions, ground_truth, refusals).items():
        body = _body(table, rows, prediction_values)
        try:
            s3.put_object(Bucket=location.bucket, Key=key, Body=body, ContentType="application/vnd.apache.parquet")
        except Exception as exc:  # any failure: the batch is retried, never acknowledged
            raise ArchiveNotWritten(f"{location.uri(key)}: {exc}") from exc
        keys.append(key)
    return keys


def _objects(location: ArchiveLocation, predictions: Sequence[Row], ground_truth: Sequence[Row], refusals: Sequence[Row]) -> dict[str, tuple[str, list[Row]]]:
    """The key of each object the rows go to, with its table and rows."""
    objects = {}
    for (table, partition, version), rows in _groups(predictions, ground_truth, refusals).items():
        stored = min(row["stored_at"] for row in rows).strftime(_STORED_FORMAT)
        objects[f"{partition.folder(location.prefix)}batch,{key_part(version)},{stored},{_digest(table, rows)}.parquet"] = (table, rows)
    return objects


def _body(table: str, rows: list[Row], prediction_values: Mapping[str, PredictionValues] | None) -> bytes:
    if table == PREDICTIONS_TABLE and prediction_values:
        try:
            decoded = [prediction_values[row["prediction_id"]] for row in rows]
        except KeyError:
            decoded = None
        return to_parquet_bytes(prediction_table(rows, decoded))
    return to_parquet_bytes(TABLE_BUILDERS[table](rows))


def _groups(predictions: Sequence[Row], ground_truth: Sequence[Row], refusals: Sequence[Row]) -> dict[tuple[str, Partition, str], list[Row]]:
    # Grouped by plain keys first: a Partition per row would cost more than the rest of the grouping.
    plain: dict[tuple[str, date, str | None, str], list[Row]] = defaultdict(list)
    for row in predictions:
        plain[PREDICTIONS_TABLE, day_of(row["predicted_at"]), row["model_name"], row["model_version"]].append(row)
    for row in ground_truth:
        plain[GROUND_TRUTH_TABLE, day_of(row["labelled_at"]), None, _NO_VERSION].append(row)
    for row in refusals:
        plain[REFUSALS_TABLE, day_of(row["refused_at"]), row["model_name"], row["model_version"] or _NO_VERSION].append(row)
    return {(table, Partition(table, day, model), version): rows for (table, day, model, version), rows in plain.items()}


def _digest(table: str, rows: Sequence[Row]) -> str:
    names = DEDUPLICATION_KEY[table]
    if len(names) == 1:  # predictions: the id alone, without a join per row
        keys = sorted(str(row[names[0]]) for row in rows)
    else:
        keys = sorted("\x1f".join(str(row[name]) for name in names) for row in rows)
    return hashlib.sha256("\x1e".join(keys).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# Listing and reading


def list_partition(s3: Any, location: ArchiveLocation, partition: Partition) -> list[ArchivedObject]:
    """The archive's objects in ``partition`` (other objects in its folder are ignored), the earliest stored first."""
    found = []
    folder = partition.folder(location.prefix)
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=location.bucket, Prefix=folder):
        for item in page.get("Contents", ()):
            match = _OBJECT_NAME.match(item["Key"][len(folder) :])
            if match:
                found.append(ArchivedObject(item["Key"], item["Size"], match["version"], match["kind"] == "compacted", match["stored"]))
    return sorted(found, key=lambda item: (item.stored, item.key))


_DAY_FOLDER = re.compile(r"(?:^|/)(?:model=(?P<model>[^/]*)/)?date=(?P<day>\d{4}-\d{2}-\d{2})/[^/]+$")


def list_table(
    s3: Any, location: ArchiveLocation, table: str, models: Sequence[str] | None = None, *, since: date | None = None, until: date | None = None
) -> list[ArchivedObject]:
    """Every archive object of ``table`` (of ``models``, or all) from ``since`` to ``until`` (both
    included, either open), with its day and model, in one listing per model.

    One listing of the whole table is cheaper than one per day once a table is compacted (an
    object or two a day); :func:`list_partition` is the per-day way. A model's folders sort by
    day, so its listing starts at ``since`` (``StartAfter``) and stops past ``until``: a range
    reaching back years costs no more than the days that hold objects.
    """
    if table == GROUND_TRUTH_TABLE or (models is None and since is None and until is None):
        prefixes = [f"{location.prefix}{table}/"]
    else:
        chosen = list_models(s3, location, table) if models is None else models
        prefixes = [f"{location.prefix}{table}/model={key_part(model)}/" for model in chosen]
    found = []
    for prefix in prefixes:
        start = {"StartAfter": f"{prefix}date={since.isoformat()}"} if since is not None else {}  # before the first key of since's folder
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=location.bucket, Prefix=prefix, **start):
            past_until = False
            for item in page.get("Contents", ()):
                folder = _DAY_FOLDER.search(item["Key"])
                match = _OBJECT_NAME.match(item["Key"].rsplit("/", 1)[-1])
                if not (folder and match):
                    continue
                day = date.fromisoformat(folder["day"])
                if until is not None and day > until:
                    past_until = True
                    break
                if since is not None and day < since:
                    continue
                model = None if folder["model"] is None else unquote(folder["model"])
                found.append(ArchivedObject(item["Key"], item["Size"], match["version"], match["kind"] == "compacted", match["stored"], day, model))
            if past_until:
                break
    return sorted(found, key=lambda item: (item.stored, item.key))


def list_models(s3: Any, location: ArchiveLocation, table: str) -> list[str]:
    """The models with a folder in ``table`` (``[]`` for ground truth, which has no model level)."""
    if table == GROUND_TRUTH_TABLE:
        return []
    models = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=location.bucket, Prefix=f"{location.prefix}{table}/", Delimiter="/"):
        for common in page.get("CommonPrefixes", ()):
            name = common["Prefix"].rstrip("/").rsplit("/", 1)[-1]
            if name.startswith("model="):
                models.append(unquote(name[len("model=") :]))
    return models


def partitions(s3: Any, location: ArchiveLocation, table: str, since: date, until: date, models: Sequence[str] | None = None) -> list[Partition]:
    """The partitions of ``table`` from ``since`` to ``until`` (inclusive) for ``models`` (every model by default)."""
    if table == GROUND_TRUTH_TABLE:
        return [Partition(table, day) for day in days(since, until)]
    chosen = list_models(s3, location, table) if models is None else list(models)
    return [Partition(table, day, model) for model in chosen for day in days(since, until)]


def download(s3: Any, location: ArchiveLocation, objects: Sequence[ArchivedObject], directory: Path) -> list[Path]:
    """Copy ``objects`` under ``directory``, keeping their keys below the prefix as paths
    (``predictions/model=.../date=.../name``, so engines see the partitions); returns the paths."""
    paths = []
    for item in objects:
        path = directory / item.key[len(location.prefix) :]
        path.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(location.bucket, item.key, str(path))
        paths.append(path)
    return paths


def iter_objects(s3: Any, location: ArchiveLocation, table: str, since: date, until: date, models: Sequence[str] | None = None) -> Iterator[tuple[ArchivedObject, bytes]]:
    """Every object of ``table`` in the days from ``since`` to ``until``, the earliest stored first, with its bytes, one at a time.

    :raises ValueError: ``until`` is before ``since``.
    """
    check_range(since, until)
    for item in list_table(s3, location, table, models, since=since, until=until):
        yield item, s3.get_object(Bucket=location.bucket, Key=item.key)["Body"].read()


# --------------------------------------------------------------------------------------------
# Compaction


class PartitionNotCompacted(Exception):
    """A partition's objects could not be merged; the message names the object (or partition and version) and why."""


class CompactionFailed(Exception):
    """Some partitions could not be compacted (``failures``, one line each); ``compacted`` holds the others, compacted."""

    def __init__(self, compacted: list[tuple[Partition, CompactionOutcome]], failures: list[str]) -> None:
        super().__init__(f"{len(failures)} partitions not compacted (the others were): " + "; ".join(failures))
        self.compacted = compacted
        self.failures = failures


@dataclass
class CompactionOutcome:
    """What :func:`compact_partition` did: objects merged and deleted, objects written, rows kept."""

    merged: list[str] = field(default_factory=list)
    written: list[str] = field(default_factory=list)
    rows: int = 0


def compact_partition(
    s3: Any, location: ArchiveLocation, partition: Partition, *, file_bytes: int = DEFAULT_FILE_BYTES, memory_limit: str = "256MB"
) -> CompactionOutcome:
    """Merge the objects of one partition into as few as ``file_bytes`` allows, per model version, dropping copies.

    A version already held by one compaction's objects only (:func:`free_of_copies`) is left
    alone, so a second run does nothing; the objects of two runs at once are merged.

    :param memory_limit: DuckDB's memory limit; beyond it DuckDB spills to a temporary folder.
    :returns: a :class:`CompactionOutcome`.
    :raises PartitionNotCompacted: an object is not a readable Parquet file, or DuckDB could not
        merge a version's objects; that version's objects are left as they were.
    """
    import duckdb

    outcome = CompactionOutcome()
    by_version: dict[str, list[ArchivedObject]] = defaultdict(list)
    for item in list_partition(s3, location, partition):
        by_version[item.version].append(item)
    for version, objects in sorted(by_version.items()):
        if free_of_copies([item.key for item in objects]):
            continue
        with tempfile.TemporaryDirectory(prefix="sml-compact-") as work:
            paths = download(s3, location, objects, Path(work) / "in")
            for item, path in zip(objects, paths):
                try:
                    pq.read_metadata(path)
                except (pa.ArrowException, OSError) as exc:
                    raise PartitionNotCompacted(f"{location.uri(item.key)} is not a readable Parquet file ({exc})") from exc
            as_json = _agree_on_json_columns(paths)
            out = Path(work) / "out"
            digest = hashlib.sha256("\n".join(sorted(item.key for item in objects)).encode()).hexdigest()[:16]
            # One thread: DuckDB's Parquet writer holds buffers per column and thread (~40 KB each); with one
            # thread per core, 4,000 feature columns exhausted 256 MB on two cores, with one thread ~5,000 fit.
            connection = duckdb.connect(config={"memory_limit": memory_limit, "temp_directory": str(Path(work) / "spill"), "threads": 1})
            try:
                kept, earliest = _copy_without_copies(connection, partition.table, paths, out, file_bytes, archive_metadata(as_json, _null_columns(paths)))
            except duckdb.Error as exc:
                raise PartitionNotCompacted(f"{location.uri(partition.folder(location.prefix))} version {version}: {str(exc).splitlines()[0]}") from exc
            finally:
                connection.close()
            folder = partition.folder(location.prefix)
            written = []
            for number, path in enumerate(sorted(out.glob("*.parquet"))):
                key = f"{folder}compacted,{key_part(version)},{earliest},{digest},{number}.parquet"
                s3.upload_file(str(path), location.bucket, key)
                written.append(key)
        stale = [item.key for item in objects if item.key not in written]
        for start in range(0, len(stale), 1000):  # DeleteObjects takes at most 1,000 keys
            s3.delete_objects(Bucket=location.bucket, Delete={"Objects": [{"Key": key} for key in stale[start : start + 1000]], "Quiet": True})
        outcome.merged += stale
        outcome.written += written
        outcome.rows += kept
    return outcome


def _agree_on_json_columns(paths: Sequence[Path]) -> list[str]:
    """Rewrite the files among ``paths`` (one model version's) that hold as a double or text a
    feature column another file holds as JSON text, so that all hold it as JSON; returns those columns."""
    json_columns = [set(json_columns_of(pq.read_schema(path))) for path in paths]
    as_json = set().union(*json_columns)
    for path, columns in zip(paths, json_columns):
        if columns != as_json:
            pq.write_table(with_json_columns(pq.read_table(path), as_json), path, compression=COMPRESSION)
    return sorted(as_json)


def _null_columns(paths: Sequence[Path]) -> list[str]:
    """The feature columns some of ``paths`` leave out as null in every row and none of them holds."""
    schemas = [pq.read_schema(path) for path in paths]
    held = {name for schema in schemas for name in schema.names}
    return sorted({name for schema in schemas for name in null_columns_of(schema)} - held)


def _copy_without_copies(connection: Any, table: str, paths: Sequence[Path], out: Path, file_bytes: int, metadata: str) -> tuple[int, str]:
    key = ", ".join(f'"{name}"' for name in DEDUPLICATION_KEY[table])
    files = "[" + ", ".join("'" + str(path).replace("'", "''") + "'" for path in paths) + "]"
    source = f"read_parquet({files}, union_by_name = true, hive_partitioning = false)"
    rows = connection.execute(f"SELECT count(*) FROM (SELECT DISTINCT {key} FROM {source})").fetchone()[0]
    earliest = min(item.stored for item in objects_of(paths))
    connection.execute(
        f"COPY (SELECT * FROM {source} QUALIFY row_number() OVER (PARTITION BY {key} ORDER BY stored_at) = 1 "
        f'ORDER BY "{EVENT_TIME[table]}") TO \'{out}\' '
        f"(FORMAT parquet, COMPRESSION zstd, FILE_SIZE_BYTES {int(file_bytes)}, KV_METADATA {{'{METADATA_KEY.decode()}': '{metadata.replace(chr(39), chr(39) * 2)}'}})"
    )
    return rows, earliest


def free_of_copies(names: Sequence[str]) -> bool:
    """Whether the objects ``names`` (keys or local paths, of any partitions) hold every event once:
    all are compacted, and each partition's model version is held by the objects of one compaction
    (one ``<earliest stored_at>,<digest>``). Two compactions of a day run at once (a schedule
    delivered twice, an ``sml compact`` beside the daily one) each write what they read, so an
    event written meanwhile makes their objects differ and both stay, sharing the events read by both."""
    runs: dict[tuple[str, str], set[tuple[str, str]]] = defaultdict(set)
    for name in names:
        folder, _, file = str(name).rpartition("/")
        match = _OBJECT_NAME.match(file)
        if match is None or match["kind"] != "compacted":
            return False
        runs[folder, match["version"]].add((match["stored"], match["digest"]))
    return all(len(found) == 1 for found in runs.values())


def objects_of(paths: Sequence[Path]) -> list[ArchivedObject]:
    """The :class:`ArchivedObject` each downloaded file's name describes."""
    found = []
    for path in paths:
        match = _OBJECT_NAME.match(path.name)
        if match is None:
            raise ValueError(f"{path.name} is not an archive object's name")
        found.append(ArchivedObject(str(path), path.stat().st_size, match["version"], match["kind"] == "compacted", match["stored"]))
    return found


def compact_days(
    s3: Any, location: ArchiveLocation, since: date, until: date, tables: Sequence[str]
) -> list[tuple[Partition, CompactionOutcome]]:
    """Compact every partition of ``tables`` from ``since`` to ``until`` (inclusive; every model
    archived), what ``sml compact`` and the daily compaction function run.

    A partition that cannot be compacted (:class:`PartitionNotCompacted`: an object that is not
    Parquet, a model too wide for DuckDB's memory limit) does not keep the others from it.

    :returns: each partition with its :class:`CompactionOutcome`, in order.
    :raises CompactionFailed: some partitions could not be compacted, once every other one was.
    """
    check_range(since, until)
    compacted, failures = [], []
    for table in tables:
        for partition in sorted({Partition(table, item.day, item.model) for item in list_table(s3, location, table, since=since, until=until)}):
            try:
                compacted.append((partition, compact_partition(s3, location, partition)))
            except PartitionNotCompacted as exc:
                failures.append(str(exc))
    if failures:
        raise CompactionFailed(compacted, failures)
    return compacted
