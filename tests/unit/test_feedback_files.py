"""Label files for `sml feedback`: CSV and JSON Lines, each bad line named by file and line, the good ones kept."""

from __future__ import annotations

import io
import json
from datetime import datetime, timezone
from typing import Any

import pytest

from sml.core.events import new_prediction_id
from sml.predict.feedback import FeedbackSchema, read_label_lines

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)
SCHEMA = FeedbackSchema(("benign", "malignant"), max_items=1, now=lambda: NOW)
IDS = [new_prediction_id() for _ in range(4)]


def read(text: str, kind: str, schema: FeedbackSchema = SCHEMA, **options: Any):
    return read_label_lines(io.StringIO(text, newline=""), name=f"labels.{kind}", kind=kind, schema=schema, **options)


def test_a_csv_file_with_optional_columns_and_empty_cells() -> None:
    text = (
        "prediction_id,label,labelled_at,source\n"
        f"{IDS[0]},benign,2026-11-01T10:00:00Z,biopsy\n"
        f"{IDS[1]},malignant,,\n"
        "\n"
        f'{IDS[2]},"malignant",2026-11-02T10:00:00+01:00,"pathology, 2nd opinion"\n'
    )

    loaded = read(text, "csv", source="bulk")

    assert loaded.problems == []
    assert loaded.lines == [2, 3, 5]
    assert [(event.prediction_id, event.label, event.source) for event in loaded.events] == [
        (IDS[0], "benign", "biopsy"),
        (IDS[1], "malignant", "bulk"),
        (IDS[2], "malignant", "pathology, 2nd opinion"),
    ]
    assert loaded.events[1].labelled_at == NOW
    assert loaded.events[2].labelled_at == datetime(2026, 11, 2, 9, tzinfo=timezone.utc)


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_a_prediction_labelled_on_several_lines_keeps_its_last_line_and_the_others_are_named(kind: str) -> None:
    # Sent in parallel chunks with tied labelled_at, which of two labels the writer kept changed from run to run.
    lines = [(IDS[0], "benign", None), (IDS[1], "benign", None), (IDS[0], "malignant", None), (IDS[0], "not-a-class", None),
             (IDS[1], "malignant", "2026-11-01T00:00:00Z"), (IDS[2], "benign", None)]
    if kind == "csv":
        text = "prediction_id,label,labelled_at\n" + "".join(f"{pid},{label},{at or ''}\n" for pid, label, at in lines)
    else:
        text = "".join(json.dumps({"prediction_id": pid, "label": label, **({"labelled_at": at} if at else {})}) + "\n" for pid, label, at in lines)
    first = 2 if kind == "csv" else 1

    loaded = read(text, kind)

    assert [(event.prediction_id, event.label) for event in loaded.events] == [(IDS[0], "malignant"), (IDS[1], "malignant"), (IDS[2], "benign")]
    assert loaded.lines == [first + 2, first + 4, first + 5]
    assert loaded.superseded == [
        f"labels.{kind}:{first}: prediction_id {IDS[0]} is labelled again on line {first + 2}; the last line wins",
        f"labels.{kind}:{first + 1}: prediction_id {IDS[1]} is labelled again on line {first + 4}; the last line wins",
    ]
    assert [problem.split(":")[1] for problem in loaded.problems] == [str(first + 3)]
    assert read(text, kind).events == loaded.events


def test_bad_csv_rows_are_reported_with_their_line_and_the_good_ones_kept() -> None:
    text = (
        "prediction_id,label\n"
        f"{IDS[0]},benign\n"
        f"{IDS[1]},cancer\n"
        "not-an-id,benign\n"
        f"{IDS[2]}\n"
        f"{IDS[3]},malignant\n"
    )

    loaded = read(text, "csv")

    assert [event.prediction_id for event in loaded.events] == [IDS[0], IDS[3]]
    assert loaded.problems == [
        "labels.csv:3: label: 'cancer' is not a class of the model; expected one of 'benign', 'malignant'",
        "labels.csv:4: prediction_id: must be the prediction_id POST /predict answered with (a UUID)",
        "labels.csv:5: has 1 cells; the header has 2",
    ]


@pytest.mark.parametrize(
    ("header", "problem"),
    [
        ("prediction_id,labels\n", "labels.csv:1: unknown column 'labels'"),
        ("prediction_id,source\n", "labels.csv:1: missing column 'label'"),
        ("prediction_id,label,label\n", "labels.csv:1: a column appears twice"),
    ],
)
def test_an_unusable_csv_header_is_the_only_problem(header: str, problem: str) -> None:
    loaded = read(header + f"{IDS[0]},benign\n", "csv")

    assert loaded.events == []
    assert len(loaded.problems) == 1 and loaded.problems[0].startswith(problem)


@pytest.mark.parametrize(("text", "kind"), [("", "csv"), ("prediction_id,label\n", "csv"), ("", "jsonl"), ("\n\n", "jsonl")])
def test_a_file_without_labels_has_neither_labels_nor_problems_whatever_its_kind(text: str, kind: str) -> None:
    # An empty CSV was a bad line (exit 1) where an empty JSON Lines file and a header-only CSV were fine (exit 0).
    loaded = read(text, kind)
    assert (loaded.events, loaded.problems) == ([], [])


def test_integer_classes_read_from_csv_text() -> None:
    schema = FeedbackSchema((0, 1), max_items=1, now=lambda: NOW)

    loaded = read(f"prediction_id,label\n{IDS[0]},1\n{IDS[1]},2\n", "csv", schema)

    assert [event.label for event in loaded.events] == [1]
    assert loaded.problems[0].startswith("labels.csv:3: label: '2' is not a class")


def test_a_jsonl_file_reports_bad_json_bad_shapes_and_bad_fields_by_line() -> None:
    lines = [
        json.dumps({"prediction_id": IDS[0], "label": "benign", "source": "crm"}),
        "",
        "{not json",
        json.dumps(["benign"]),
        json.dumps({"prediction_id": IDS[1], "label": "benign", "labelled_at": "2026-11-27"}),
        json.dumps({"prediction_id": IDS[2], "label": "malignant", "confidence": 1}),
        json.dumps({"prediction_id": IDS[3], "label": "malignant", "labelled_at": "2026-11-27T07:01:02.123456Z"}),
    ]

    loaded = read("\n".join(lines) + "\n", "jsonl")

    assert [(event.prediction_id, number) for event, number in zip(loaded.events, loaded.lines)] == [(IDS[0], 1), (IDS[3], 7)]
    assert loaded.events[1].labelled_at == datetime(2026, 11, 27, 7, 1, 2, 123456, tzinfo=timezone.utc)
    assert [problem.split(": ")[0:2] for problem in loaded.problems] == [
        ["labels.jsonl:3", "not valid JSON (Expecting property name enclosed in double quotes"],
        ["labels.jsonl:4", "must be a JSON object with prediction_id and label, got array"],
        ["labels.jsonl:5", "labelled_at"],
        ["labels.jsonl:6", "confidence"],
    ]
