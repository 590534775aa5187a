"""`sml predict` without a network: the URL, the body from each option, signing, error display."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sml.cli.main import main
from sml.cli.commands.predict import describe_error, is_local, parse_features, predict_url, request_body, signed_headers
from sml.core.errors import SmlError


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        ("http://127.0.0.1:8080/", "http://127.0.0.1:8080/predict"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080/predict"),
        ("http://localhost:8080/predict", "http://localhost:8080/predict"),
        ("https://abc123.lambda-url.eu-west-1.on.aws/", "https://abc123.lambda-url.eu-west-1.on.aws/predict"),
    ],
)
def test_the_predict_route_is_appended_to_the_function_url(base: str, expected: str) -> None:
    assert predict_url(base) == expected


def test_a_url_that_is_not_http_is_refused_naming_the_option() -> None:
    with pytest.raises(SmlError, match=r"--url 'ftp://x': expected an http\(s\) URL"):
        predict_url("ftp://x")


@pytest.mark.parametrize(
    ("url", "local"),
    [("http://127.0.0.1:8080/predict", True), ("http://localhost/predict", True), ("https://a.lambda-url.us-east-1.on.aws/predict", False)],
)
def test_only_local_urls_go_unsigned(url: str, local: bool) -> None:
    assert is_local(url) is local


def test_feature_options_become_a_row_of_json_scalars_and_strings() -> None:
    row = parse_features(["mean_radius=14.2", "mean_area= 1e3", "concavity_grade=low", "mean_texture=null", "note=nan"])

    assert row == {"mean_radius": 14.2, "mean_area": 1000.0, "concavity_grade": "low", "mean_texture": None, "note": "nan"}


def test_feature_options_send_booleans_and_integers_as_json_does() -> None:
    row = parse_features(["Has Promo=true", "Paperless=false", "Tenure Months=36", "Calls=99999999999999999999999"])

    assert row == {"Has Promo": True, "Paperless": False, "Tenure Months": 36, "Calls": 99999999999999999999999}
    assert type(row["Tenure Months"]) is int
    assert json.loads(json.dumps({"features": row}))["features"]["Has Promo"] is True


def test_a_quoted_feature_value_is_a_string_even_when_it_reads_as_a_number_or_boolean() -> None:
    row = parse_features(['plan="true"', 'zip="01234"', 'empty=""', "list=[1, 2]"])

    assert row == {"plan": "true", "zip": "01234", "empty": "", "list": "[1, 2]"}


@pytest.mark.parametrize(
    ("assignments", "message"),
    [
        (["mean_radius"], "--feature 'mean_radius': expected NAME=VALUE"),
        (["=3"], "expected NAME=VALUE"),
        (["a=1", "a=2"], "--feature a: given more than once"),
    ],
)
def test_bad_feature_options_name_the_option(assignments: list[str], message: str) -> None:
    with pytest.raises(SmlError, match=message):
        parse_features(assignments)


def test_the_body_from_each_option(tmp_path: Path) -> None:
    request = tmp_path / "request.json"
    request.write_bytes(b'{"features": {"a": 1}}')
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps([{"a": 1}, {"a": 2}]))

    assert json.loads(request_body(features=["a=1"], file=None, instances_file=None)) == {"features": {"a": 1.0}}
    assert request_body(features=None, file=request, instances_file=None) == b'{"features": {"a": 1}}'
    assert json.loads(request_body(features=None, file=None, instances_file=rows)) == {"instances": [{"a": 1}, {"a": 2}]}


def test_bad_files_are_named(tmp_path: Path) -> None:
    not_array = tmp_path / "rows.json"
    not_array.write_text('{"a": 1}')

    with pytest.raises(SmlError, match=r"--file .*missing.json: No such file"):
        request_body(features=None, file=tmp_path / "missing.json", instances_file=None)
    with pytest.raises(SmlError, match=r"--instances-file .*rows.json: expected a JSON array"):
        request_body(features=None, file=None, instances_file=not_array)


def test_requests_to_aws_are_signed_for_lambda_in_the_urls_region() -> None:
    headers = signed_headers(
        "https://abc123.lambda-url.eu-west-1.on.aws/predict", b"{}", {"content-type": "application/json"}, default_region="us-east-1"
    )

    assert headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=testing/")
    assert "/eu-west-1/lambda/aws4_request" in headers["Authorization"]
    assert "X-Amz-Date" in headers


def test_errors_are_shown_by_code_field_and_message() -> None:
    body = json.dumps({"error": {"code": "not_finite", "field": "features.a", "message": "must be a finite number, got NaN"}}).encode()

    assert describe_error(body) == "not_finite at features.a: must be a finite number, got NaN"
    assert describe_error(b'{"Message":"Forbidden"}') == '{"Message":"Forbidden"}'


@pytest.fixture
def in_empty_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """``tmp_path`` as the working folder, with no Function URL or state dir in the environment."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SML_FUNCTION_URL", raising=False)
    monkeypatch.delenv("SML_STATE_DIR", raising=False)
    return tmp_path


def test_without_a_url_the_command_says_where_one_comes_from(in_empty_folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", "--feature", "a=1"]) == 2
    assert "no Function URL: give --url, set SML_FUNCTION_URL, or start the local stack with `sml up`" in capsys.readouterr().err


def test_a_model_the_local_stack_does_not_serve_is_refused_naming_those_it_serves(
    in_empty_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    urls = {"churn": "http://127.0.0.1:9/", "spend": "http://127.0.0.1:8/"}
    (in_empty_folder / ".sml").mkdir()
    (in_empty_folder / ".sml" / "stack.json").write_text(json.dumps({"function_url": urls["churn"], "function_urls": urls}))

    assert main(["predict", "--feature", "a=1", "--model", "segment"]) == 2
    assert capsys.readouterr().err.strip() == (
        "sml predict: error: --model segment: the local stack (.sml/stack.json) serves churn, spend; nothing was sent "
        "(start it with --model segment, or give --url)"
    )


def test_a_file_that_is_not_json_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    rows = tmp_path / "rows.csv"
    rows.write_text("Tenure Months,Contract Type\n3,month\n")
    with pytest.raises(SmlError, match=r"^--file .*rows.csv: not valid JSON \(.*\); --file takes a request body such as \{\"features\": \{\.\.\.\}\}$"):
        request_body(features=None, file=rows, instances_file=None)
