"""The drift alert: subject, filterable attributes, compact body, and the SNS size guard."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import pytest

from sml.monitoring.alerts import MAX_MESSAGE_BYTES, alert_attributes, alert_message, alert_subject, publish_drift_alert
from sml.monitoring.drift.stats import DriftVerdict, FeatureTestResult
from sml.monitoring.store import DriftRun
from sml.monitoring.windows import TimeWindow

WINDOW = TimeWindow(datetime(2025, 3, 3, 6, tzinfo=timezone.utc), datetime(2025, 3, 10, 6, tzinfo=timezone.utc))


class FakeSns:
    """Records what was published, like SNS would accept it."""

    def __init__(self) -> None:
        self.published: list[dict[str, Any]] = []

    def publish(self, **request: Any) -> dict[str, str]:
        self.published.append(request)
        return {"MessageId": f"message-{len(self.published)}"}


def result(feature: str, verdict: DriftVerdict, *, test: str = "ks", p_adjusted: float = 0.5, kind: str = "numeric") -> FeatureTestResult:
    return FeatureTestResult(
        feature=feature, test=test, kind=kind, statistic=0.2, p_value=p_adjusted / 2, p_adjusted=p_adjusted,
        effect_size=0.2, effect_floor=0.1, n_reference=10_000, n_current=3_000, verdict=verdict,
    )


def drift_run(results: list[FeatureTestResult], status: DriftVerdict, *, version: str = "v3", current_rows: int = 3_000) -> DriftRun:
    return DriftRun(
        run_id="01890000-0000-7000-8000-000000000000",
        model_name="breast-cancer",
        model_version=version,
        window=WINDOW,
        reference_kind="training",
        reference_rows=10_000,
        current_rows=current_rows,
        status=status,
        results=tuple(results),
        parameters={"fdr": 0.05},
        created_at=WINDOW.end,
        report_uri="s3://bucket/reports/breast-cancer/20250310T060000Z.html",
        report_url="https://bucket.s3.amazonaws.com/reports/breast-cancer/20250310T060000Z.html?X-Amz-Signature=abc",
    )


DRIFTED = drift_run(
    [
        result("radius", DriftVerdict.DRIFT, p_adjusted=0.01),
        result("radius", DriftVerdict.NO_DRIFT, test="missing_rate"),
        result("texture", DriftVerdict.DRIFT, p_adjusted=0.0001),
        result("area", DriftVerdict.NO_DRIFT),
    ],
    DriftVerdict.DRIFT,
)


def test_subject_names_the_verdict_the_model_and_the_counts() -> None:
    assert alert_subject(DRIFTED) == "[DRIFT] breast-cancer v3: 2 of 3 features drifted"
    assert alert_subject(drift_run([result("area", DriftVerdict.NO_DRIFT)], DriftVerdict.NO_DRIFT)) == "[NO_DRIFT] breast-cancer v3: none of 1 features drifted"
    inconclusive = drift_run([result("area", DriftVerdict.INCONCLUSIVE)], DriftVerdict.INCONCLUSIVE, current_rows=20)
    assert alert_subject(inconclusive) == "[INCONCLUSIVE] breast-cancer v3: 1 of 1 features inconclusive (20 rows in the window)"
    mostly_decided = drift_run(
        [result("area", DriftVerdict.NO_DRIFT), result("depth", DriftVerdict.NO_DRIFT), result("grade", DriftVerdict.INCONCLUSIVE)], DriftVerdict.NO_DRIFT
    )
    assert alert_subject(mostly_decided) == "[NO_DRIFT] breast-cancer v3: none of 3 features drifted, 1 inconclusive"


def test_subject_tells_the_predicted_label_apart_from_the_features() -> None:
    label = result("(predicted label)", DriftVerdict.DRIFT, test="chi2", kind="label")
    with_features = drift_run([*DRIFTED.results, label], DriftVerdict.DRIFT)
    label_only = drift_run([result("area", DriftVerdict.NO_DRIFT), label], DriftVerdict.DRIFT)

    assert alert_subject(with_features) == "[DRIFT] breast-cancer v3: 2 of 3 features drifted, and the predicted label"
    assert alert_subject(label_only) == "[DRIFT] breast-cancer v3: the predicted label drifted, none of 1 features did"
    assert json.loads(alert_message(label_only))["label_drifted"] is True
    assert json.loads(alert_message(label_only))["features_drifted"] == 0


def test_a_regression_models_prediction_is_named_as_a_prediction_not_a_label() -> None:
    prediction = result("(prediction)", DriftVerdict.DRIFT, test="ks", kind="label")
    with_features = drift_run([*DRIFTED.results, prediction], DriftVerdict.DRIFT)
    prediction_only = drift_run([result("area", DriftVerdict.NO_DRIFT), prediction], DriftVerdict.DRIFT)

    assert alert_subject(with_features) == "[DRIFT] breast-cancer v3: 2 of 3 features drifted, and the prediction"
    assert alert_subject(prediction_only) == "[DRIFT] breast-cancer v3: the prediction drifted, none of 1 features did"
    assert json.loads(alert_message(prediction_only))["summary"] == "DRIFT: NO_DRIFT on 1 of 1 features; prediction DRIFT"


def test_subject_stays_printable_ascii_under_100_characters() -> None:
    subject = alert_subject(drift_run([result("a", DriftVerdict.DRIFT)], DriftVerdict.DRIFT, version="v-ü-" + "9" * 120))

    assert len(subject) < 100
    assert subject.startswith("[DRIFT] breast-cancer v-?-999") and subject.endswith("~")
    assert all(" " <= character <= "~" for character in subject)


def test_attributes_let_subscribers_filter_on_status_model_and_version() -> None:
    assert alert_attributes(DRIFTED) == {
        "status": {"DataType": "String", "StringValue": "DRIFT"},
        "model_name": {"DataType": "String", "StringValue": "breast-cancer"},
        "model_version": {"DataType": "String", "StringValue": "v3"},
        "data_quality_status": {"DataType": "String", "StringValue": "OK"},
    }


def test_body_is_compact_json_with_window_counts_drifted_tests_and_report() -> None:
    text = alert_message(DRIFTED)
    body = json.loads(text)

    assert text == json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    assert body["summary"] == "DRIFT on 2 of 3 features: radius, texture; NO_DRIFT on 1 of 3 features"
    assert body["features_inconclusive"] == 0
    assert body["window"] == {"start": "2025-03-03T06:00:00Z", "end": "2025-03-10T06:00:00Z"}
    assert (body["features_tested"], body["features_drifted"], body["current_rows"]) == (3, 2, 3_000)
    assert body["reference"] == {"kind": "training", "rows": 10_000}
    assert [entry["feature"] for entry in body["drifted"]] == ["texture", "radius"]
    assert body["drifted"][0] == {"feature": "texture", "test": "ks", "statistic": 0.2, "p_value": 5e-05, "p_adjusted": 0.0001, "effect_size": 0.2}
    assert body["drifted_omitted"] == 0 and body["label_drifted"] is False
    assert body["report"] == {"uri": DRIFTED.report_uri, "url": DRIFTED.report_url}


def test_body_of_5000_drifted_features_stays_under_the_sns_limit_and_counts_what_it_left_out() -> None:
    results = [result(f"feature_{index:04d}_" + "x" * 100, DriftVerdict.DRIFT, p_adjusted=index / 10_000) for index in range(5_000)]
    run = drift_run(results, DriftVerdict.DRIFT)

    text = alert_message(run)
    body = json.loads(text)

    assert len(text.encode("utf-8")) <= MAX_MESSAGE_BYTES
    assert 0 < len(body["drifted"]) < 5_000
    assert len(body["drifted"]) + body["drifted_omitted"] == 5_000
    assert body["features_drifted"] == 5_000
    assert body["drifted"][0]["feature"].startswith("feature_0000_")


@pytest.mark.parametrize("max_bytes", [700, 900, 1_500, 4_000])
def test_size_guard_holds_for_any_budget(max_bytes: int) -> None:
    results = [result(f"f{index}", DriftVerdict.DRIFT, p_adjusted=0.001) for index in range(100)]

    text = alert_message(drift_run(results, DriftVerdict.DRIFT), max_bytes=max_bytes)

    assert len(text.encode("utf-8")) <= max_bytes
    body = json.loads(text)
    assert len(body["drifted"]) + body["drifted_omitted"] == 100


def test_publish_sends_subject_body_and_attributes_to_the_topic() -> None:
    sns = FakeSns()

    message_id = publish_drift_alert(sns, "arn:aws:sns:us-east-1:123456789012:alerts", DRIFTED)

    assert message_id == "message-1"
    [request] = sns.published
    assert request["TopicArn"] == "arn:aws:sns:us-east-1:123456789012:alerts"
    assert request["Subject"] == alert_subject(DRIFTED)
    assert json.loads(request["Message"]) == json.loads(alert_message(DRIFTED))
    assert request["MessageAttributes"]["status"]["StringValue"] == "DRIFT"
