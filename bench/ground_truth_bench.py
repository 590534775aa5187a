"""Ground-truth ingestion: labels through the writer vs prediction events, and a label file through `sml feedback`.

- ``writer, labels``: :func:`sml.writer.batch.write_batch` on ground-truth events (new labels),
  per batch of the deployed size, into MariaDB/MySQL, against the same number of prediction
  events (30 features each) stored the same way: labels share the writer and must not be the
  slow part of its queue. ``labels replaced`` sends a later label for every stored one (the
  upsert's replace path), for information.
- ``parse_event``: the writer's parser of both event types on prediction bodies, against
  ``parse_prediction_event``, the parser it replaced: prediction bodies must not pay for the
  second type.
- ``sml feedback file``: reading and validating a CSV label file and sending it with
  :func:`sml.cli.commands.feedback.send_label_bodies` to an in-memory SQS stand-in (no network,
  so the figure is the command's own cost), against reading the same file with ``csv.reader``
  alone. For information: on AWS the SendMessageBatch round trips dominate.

Variants run in turns and keep their best turn. Run alone: ``python bench/ground_truth_bench.py [--quick]``.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from common import BenchReport, Comparison, bench_main, ratio_at_least, ratio_at_most
from writer_bench import DEPLOYED_BATCH_SIZE, bench_engine, sqs_records

from sml.cli.commands.feedback import send_label_bodies
from sml.core.events import build_ground_truth_event, parse_event, parse_prediction_event, serialise_ground_truth_event
from sml.predict.feedback import FeedbackSchema, read_label_lines
from sml.writer.batch import write_batch

BENCHMARK = "ground-truth ingestion"
BENCH_DATABASE = "sml_bench_labels"  # not writer_bench's: both may run at once on a shared machine
MIN_LABEL_SHARE_OF_PREDICTIONS = 1.0
MAX_PARSE_SLOWDOWN = 1.05  # parse_event on prediction bodies against the prediction-only parser
LABELLED_AT = datetime(2026, 11, 2, 9, 0, tzinfo=timezone.utc)

Record = tuple[str, str]


def label_records(prediction_records: Sequence[Record], labelled_at: datetime) -> list[Record]:
    """One label per prediction of ``prediction_records``, as SQS (message id, body) pairs."""
    import json

    records = []
    for index, (_, body) in enumerate(prediction_records):
        event = build_ground_truth_event(
            prediction_id=json.loads(body)["prediction_id"], label="malignant" if index % 3 else "benign", labelled_at=labelled_at, source="bench"
        )
        records.append((f"label-{index}", serialise_ground_truth_event(event)))
    return records


def _truncate(engine: Any) -> None:
    with engine.begin() as connection:
        connection.exec_driver_sql("TRUNCATE TABLE predictions")
        connection.exec_driver_sql("TRUNCATE TABLE ground_truth")


def _store(engine: Any, records: Sequence[Record]) -> tuple[int, int]:
    stored = skipped = 0
    for start in range(0, len(records), DEPLOYED_BATCH_SIZE):
        outcome = write_batch(engine, records[start : start + DEPLOYED_BATCH_SIZE])
        if outcome.failures:
            raise RuntimeError(f"the writer failed records: {outcome.failures[:3]}")
        stored += outcome.inserted + outcome.labels_stored
        skipped += outcome.duplicates + outcome.labels_skipped
    return stored, skipped


def _timed(work: Callable[[], Any]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


class AcceptingSqs:
    """An SQS stand-in that accepts every SendMessageBatch entry and keeps nothing."""

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, str]]) -> dict[str, Any]:
        return {"Successful": [{"Id": entry["Id"]} for entry in Entries], "Failed": []}

    def send_message(self, QueueUrl: str, MessageBody: str) -> dict[str, Any]:
        return {}


def label_file_text(records: Sequence[Record]) -> str:
    import json

    lines = ["prediction_id,label,labelled_at,source"]
    for _, body in records:
        raw = json.loads(body)
        lines.append(f"{raw['prediction_id']},{raw['label']},{raw['labelled_at']},{raw['source']}")
    return "\n".join(lines) + "\n"


def feedback_command(text: str, expected: int) -> Callable[[], None]:
    schema = FeedbackSchema(("benign", "malignant"), max_items=1, now=lambda: LABELLED_AT + timedelta(days=30))

    def work() -> None:
        loaded = read_label_lines(io.StringIO(text, newline=""), name="labels.csv", kind="csv", schema=schema)
        bodies = [(event.prediction_id, serialise_ground_truth_event(event)) for event in loaded.events]
        unsent = send_label_bodies(AcceptingSqs(), "https://sqs.invalid/queue", bodies, workers=8, pause_s=0)
        if loaded.problems or unsent or len(bodies) != expected:
            raise RuntimeError(f"label file: {loaded.problems[:3]} {len(unsent)} unsent")

    return work


def csv_reader_only(text: str) -> Callable[[], None]:
    import csv

    def work() -> None:
        for _ in csv.reader(io.StringIO(text, newline="")):
            pass

    return work


def parse_all(parse: Callable[[str], Any], bodies: Sequence[str]) -> Callable[[], None]:
    def work() -> None:
        for body in bodies:
            parse(body)

    return work


def run(quick: bool, out_dir: Path) -> BenchReport:
    """quick: 10k events, 3 turns; full: 100k, 2 turns."""
    size, turns = (10_000, 3) if quick else (100_000, 2)
    predictions = sqs_records(size)
    labels = label_records(predictions, LABELLED_AT)
    later = label_records(predictions, LABELLED_AT + timedelta(days=7))
    best = {"predictions": float("inf"), "labels": float("inf"), "labels replaced": float("inf")}
    with bench_engine(BENCH_DATABASE) as engine:
        for _ in range(turns):
            _truncate(engine)
            best["predictions"] = min(best["predictions"], _timed(lambda: _store(engine, predictions)))
            best["labels"] = min(best["labels"], _timed(lambda: _store(engine, labels)))
            best["labels replaced"] = min(best["labels replaced"], _timed(lambda: _store(engine, later)))
            if _store(engine, later) != (0, size):
                raise RuntimeError("a second copy of the later labels must change nothing")
    text = label_file_text(labels)
    command, reader = feedback_command(text, size), csv_reader_only(text)
    file_best = {"feedback": float("inf"), "csv.reader": float("inf")}
    for _ in range(turns):
        file_best["feedback"] = min(file_best["feedback"], _timed(command))
        file_best["csv.reader"] = min(file_best["csv.reader"], _timed(reader))
    bodies = [body for _, body in predictions]
    parse_best = {"parse_event": float("inf"), "parse_prediction_event": float("inf")}
    for _ in range(turns * 3):
        parse_best["parse_event"] = min(parse_best["parse_event"], _timed(parse_all(parse_event, bodies)))
        parse_best["parse_prediction_event"] = min(parse_best["parse_prediction_event"], _timed(parse_all(parse_prediction_event, bodies)))
    rate = {name: size / seconds for name, seconds in best.items()}
    events = f"{size // 1000}k"
    comparisons = [
        ratio_at_least(
            BENCHMARK, f"{events} labels, writer batch {DEPLOYED_BATCH_SIZE}", rate["labels"], "prediction events, same writer",
            rate["predictions"], "events/s", MIN_LABEL_SHARE_OF_PREDICTIONS, note="new labels; MariaDB",
        ),
        ratio_at_most(
            BENCHMARK, f"{events} prediction bodies, parse_event", parse_best["parse_event"] / size * 1e6, "parse_prediction_event",
            parse_best["parse_prediction_event"] / size * 1e6, "µs/body", MAX_PARSE_SLOWDOWN, note="both event types vs type 1 only",
        ),
        Comparison(BENCHMARK, f"{events} labels replaced by later ones", rate["labels replaced"], "prediction events, same writer", rate["predictions"], "events/s"),
        Comparison(
            BENCHMARK, f"{events}-line CSV through sml feedback (validate + send)", size / file_best["feedback"], "csv.reader alone",
            size / file_best["csv.reader"], "labels/s", note="in-memory SQS stand-in: the command's own cost",
        ),
    ]  # fmt: skip
    return BenchReport(
        name=BENCHMARK,
        comparisons=comparisons,
        details=[{"variant": name, "events": size, "events_per_s": round(value)} for name, value in rate.items()]
        + [{"variant": name, "labels": size, "labels_per_s": round(size / seconds)} for name, seconds in file_best.items()],
        method=[
            f"{size:,} prediction events (30 float features) and one label for each, written with `write_batch` in batches of "
            f"{DEPLOYED_BATCH_SIZE} into MariaDB/MySQL (a bench database, created and dropped); both tables emptied each turn.",
            "Labels replaced: the same predictions labelled a week later, so every row takes the upsert's replace path; a "
            "second copy of those is then checked to change nothing.",
            "sml feedback: `read_label_lines` on the CSV text, serialising, and `send_label_bodies` (8 threads, chunks of 10) to "
            "an in-memory stand-in for SQS.",
            "Parsers: every prediction body parsed once per turn by each, best of 3× as many turns.",
            "Variants run in turns and keep their best turn.",
        ],
    )


if __name__ == "__main__":
    bench_main(run, __doc__.splitlines()[0])
