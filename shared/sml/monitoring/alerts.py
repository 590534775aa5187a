"""Drift alerts on SNS: one message per drift run, whatever its verdict.

The subject says the verdict (DRIFT, NO_DRIFT or INCONCLUSIVE; runs before issue 18 said
INSUFFICIENT_DATA where they now say INCONCLUSIVE or, mostly, NO_DRIFT) and the model; the message attributes ``status``, ``model_name``
and ``model_version`` let a subscription filter (e.g. ``{"status": ["DRIFT"]}``) receive only
drift, and ``quality_status`` (OK, DEGRADED, INSUFFICIENT_DATA; present when the run assessed
model quality) only degraded models (``{"quality_status": ["DEGRADED"]}``); the body is compact
JSON: the window, the counts, the drifted tests, the model quality and where the report is. The
body stays below SNS's 256 KB limit by listing only as many drifted tests as fit and saying how
many it left out.

Example::

    message_id = publish_drift_alert(aws_client("sns", settings), settings.topic_arn, run)
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sml.monitoring.store import DriftRun

# SNS takes 262,144 bytes including subject and attributes; the rest is headroom for those.
MAX_MESSAGE_BYTES = 250_000
MAX_SUBJECT_CHARS = 99
MAX_LISTED_VIOLATIONS = 50


def publish_drift_alert(sns_client: Any, topic_arn: str, run: DriftRun) -> str:
    """Publish the alert of ``run`` to ``topic_arn``.

    :param sns_client: a boto3 SNS client (moto in tests and local mode).
    :returns: the SNS message id.
    """
    response = sns_client.publish(
        TopicArn=topic_arn,
        Subject=alert_subject(run),
        Message=alert_message(run),
        MessageAttributes=alert_attributes(run),
    )
    return str(response["MessageId"])


def alert_subject(run: DriftRun) -> str:
    """E.g. ``[DRIFT] breast-cancer v3: 2 of 12 features drifted``: printable ASCII, under 100 characters."""
    status = run.status.value
    if status == "DRIFT" and not run.drifted_features:
        outcome = f"the {run.prediction_tested} drifted, none of {run.features_tested} features did"
    elif status == "DRIFT":
        label = f", and the {run.prediction_tested}" if run.label_drifted else ""
        outcome = f"{len(run.drifted_features)} of {run.features_tested} features drifted{label}"
    elif status == "NO_DRIFT":
        undecided = _inconclusive_features(run)
        outcome = f"none of {run.features_tested} features drifted" + (f", {undecided} inconclusive" if undecided else "")
    else:
        undecided = _inconclusive_features(run)
        outcome = f"{undecided} of {run.features_tested} features inconclusive ({run.current_rows} rows in the window)"
    subject = f"[{status}] {run.model_name} {run.model_version}: {outcome}"
    if run.quality is not None and run.quality.status.value == "DEGRADED":
        subject = f"[{status}, quality DEGRADED] {run.model_name} {run.model_version}: {outcome}"
    printable = "".join(character if " " <= character <= "~" else "?" for character in subject)
    return printable if len(printable) <= MAX_SUBJECT_CHARS else printable[: MAX_SUBJECT_CHARS - 1] + "~"


def _inconclusive_features(run: DriftRun) -> int:
    from sml.monitoring.drift.stats import DriftVerdict, feature_verdicts

    return sum(
        verdict is DriftVerdict.INCONCLUSIVE and tests[0].kind != "label" for verdict, tests in feature_verdicts(run.results).values()
    )


def alert_attributes(run: DriftRun) -> dict[str, dict[str, str]]:
    """SNS message attributes subscribers can filter on: ``status``, ``model_name``, ``model_version``,
    ``data_quality_status`` (``OK`` or ``VIOLATIONS``), ``quality_status``."""
    attributes = {
        "status": {"DataType": "String", "StringValue": run.status.value},
        "model_name": {"DataType": "String", "StringValue": run.model_name},
        "model_version": {"DataType": "String", "StringValue": run.model_version},
        "data_quality_status": {"DataType": "String", "StringValue": run.data_quality_status},
    }
    if run.quality is not None:
        attributes["quality_status"] = {"DataType": "String", "StringValue": run.quality.status.value}
    return attributes


def alert_message(run: DriftRun, *, max_bytes: int = MAX_MESSAGE_BYTES) -> str:
    """The compact JSON body, at most ``max_bytes`` of UTF-8.

    ``summary`` is the run's one-line verdict (:func:`sml.monitoring.drift.stats.verdict_summary`);
    ``features_inconclusive`` counts the features the data could not decide.
    When the window holds other versions' predictions, ``other_versions_rows`` counts them per
    version (not tested) and ``version_since`` is when the run's version took over inside the
    window (or null); both are absent when the run's version served the window alone. ``drifted`` lists the drifted tests, smallest adjusted p-value first, as many as fit;
    ``drifted_omitted`` counts the rest.
    """
    from sml.monitoring.drift.stats import verdict_summary

    drifted = sorted((result for result in run.results if result.verdict.value == "DRIFT"), key=lambda result: result.p_adjusted)
    body: dict[str, Any] = {
        "status": run.status.value,
        "summary": verdict_summary(run.results),
        "model_name": run.model_name,
        "model_version": run.model_version,
        "run_id": run.run_id,
        "window": {"start": _timestamp(run.window.start), "end": _timestamp(run.window.end)},
        "reference": {"kind": run.reference_kind, "rows": run.reference_rows},
        "current_rows": run.current_rows,
        "features_tested": run.features_tested,
        "features_drifted": len(run.drifted_features),
        "features_inconclusive": _inconclusive_features(run),
        "label_drifted": run.label_drifted,
        "data_quality_status": run.data_quality_status,
        "data_quality_violations": [
            {"feature": check.feature, "check": check.check, "value": _rounded(check.value), "threshold": check.threshold}
            for check in run.data_quality
            if check.violated
        ][:MAX_LISTED_VIOLATIONS],
        "report": {"uri": run.report_uri, "url": run.report_url},
        "drifted": [],
        "drifted_omitted": len(drifted),
    }
    if run.quality is not None:
        body["quality"] = quality_digest(run.quality)
    if run.other_versions or run.version_since is not None:
        body["other_versions_rows"] = dict(sorted(run.other_versions.items()))
        body["version_since"] = None if run.version_since is None else _timestamp(run.version_since)
    if run.reference_window is not None:
        body["reference"]["window"] = {"start": _timestamp(run.reference_window.start), "end": _timestamp(run.reference_window.end)}
    # Room left once the omitted count could take its longest form; each entry costs its text and a comma.
    budget = max_bytes - len(_compact(body).encode("utf-8")) - len(str(len(drifted)))
    for result in drifted:
        entry = {
            "feature": result.feature,
            "test": result.test,
            "statistic": _rounded(result.statistic),
            "p_value": _rounded(result.p_value),
            "p_adjusted": _rounded(result.p_adjusted),
            "effect_size": _rounded(result.effect_size),
        }
        cost = len(_compact(entry).encode("utf-8")) + 1
        if cost > budget:
            break
        body["drifted"].append(entry)
        budget -= cost
    body["drifted_omitted"] = len(drifted) - len(body["drifted"])
    return _compact(body)


def quality_digest(quality: Any) -> dict[str, Any]:
    """The alert body's ``quality``: verdict, reason, coverage, and the chosen metric realized (with interval), estimated and held out."""
    metric = quality.config.metric
    realized = quality.realized.get(metric) if quality.realized else None
    estimated = quality.estimated.get(metric) if quality.estimated else None
    return {
        "status": quality.status.value,
        "reason": quality.reason,
        "metric": metric,
        "realized": None if realized is None else {"value": _rounded(realized.value), "low": _maybe(realized.low), "high": _maybe(realized.high)},
        "estimated": None if estimated is None else _rounded(estimated.value),
        "reference": _maybe(quality.reference_value),
        "predictions": quality.n_predictions,
        "labelled": quality.n_labelled,
        "coverage": _rounded(quality.coverage),
        "unmatched_labels": quality.n_unmatched_labels,
        "labels_before_prediction": quality.delay.before_prediction if quality.delay else 0,
    }


def _maybe(value: float | None) -> float | None:
    return None if value is None or value != value else _rounded(value)


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _rounded(value: float) -> float:
    return float(f"{value:.6g}")


def _timestamp(value: Any) -> str:
    return value.isoformat().replace("+00:00", "Z")
