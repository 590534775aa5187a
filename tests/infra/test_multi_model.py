"""Several models in one deployment: a predict function and Function URL per model; the queue,
writer, database, bucket and drift function shared; a weekly run, alarms and a dashboard row per model."""

from __future__ import annotations

import json

import pytest

from infra.config import ContextError, config_from_context
from tests.infra.conftest import Synthesized

pytestmark = pytest.mark.infra

MODELS = ("breast-cancer", "wine")


def _predicts(stack: Synthesized) -> dict[str, tuple[str, dict]]:
    """Model -> (logical id, properties) of each predict function."""
    found = {}
    for key, resource in stack.of_type("AWS::Lambda::Function").items():
        variables = resource["Properties"].get("Environment", {}).get("Variables", {})
        if variables.get("POWERTOOLS_SERVICE_NAME") == "predict":
            found[variables["SML_MODEL_NAME"]] = (key, resource["Properties"])
    return found


def _role_statements(stack: Synthesized, function: dict) -> list[dict]:
    role_id = function["Role"]["Fn::GetAtt"][0]
    return [
        statement
        for policy in stack.of_type("AWS::IAM::Policy").values()
        if {"Ref": role_id} in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


def test_each_model_gets_its_own_predict_and_function_url_and_shares_the_rest(multi_model_stack: Synthesized) -> None:
    predicts = _predicts(multi_model_stack)
    assert set(predicts) == set(MODELS)
    urls = multi_model_stack.of_type("AWS::Lambda::Url")
    assert len(urls) == 2
    assert {url["Properties"]["TargetFunctionArn"]["Fn::GetAtt"][0] for url in urls.values()} == {key for key, _ in predicts.values()}
    assert len(multi_model_stack.of_type("AWS::SQS::Queue")) == 2  # the events queue and its DLQ, once
    assert len(multi_model_stack.of_type("AWS::Lambda::EventSourceMapping")) == 1  # one writer
    assert len(multi_model_stack.of_type("AWS::RDS::DBInstance")) == 1
    assert len(multi_model_stack.of_type("AWS::S3::Bucket")) == 1
    queue_id = next(k for k, v in multi_model_stack.of_type("AWS::SQS::Queue").items() if "RedrivePolicy" in v["Properties"])
    for _, properties in predicts.values():
        assert properties["Environment"]["Variables"]["SML_QUEUE_URL"] == {"Ref": queue_id}


def test_the_first_model_keeps_the_single_model_ids_so_adding_one_keeps_its_url(
    default_stack: Synthesized, multi_model_stack: Synthesized
) -> None:
    (single_url_id,) = default_stack.of_type("AWS::Lambda::Url")
    assert single_url_id in multi_model_stack.of_type("AWS::Lambda::Url")
    assert _predicts(multi_model_stack)["breast-cancer"][0] == default_stack.function("predict")[0]
    outputs = multi_model_stack.template["Outputs"]
    assert outputs["FunctionUrl"]["Value"] == default_stack.template["Outputs"]["FunctionUrl"]["Value"]
    wine_url = outputs["FunctionUrlWine"]["Value"]["Fn::GetAtt"]
    assert wine_url[1] == "FunctionUrl" and wine_url[0] != single_url_id
    assert outputs["ModelNames"]["Value"] == "breast-cancer,wine"
    assert outputs["ChampionParameterWine"]["Value"] == "/sml-dev/wine/champion"
    assert "PredictFunctionArnWine" in outputs and "PredictCallerPolicyArnWine" in outputs


def test_each_predict_reads_only_its_own_model_and_drift_reads_both(multi_model_stack: Synthesized) -> None:
    for model, (_, properties) in _predicts(multi_model_stack).items():
        (listing,) = [s for s in _role_statements(multi_model_stack, properties) if s["Action"] == "s3:ListBucket"]
        assert listing["Condition"]["StringLike"]["s3:prefix"] == [f"models/{model}/", f"models/{model}/*"]
        (champion,) = [s for s in _role_statements(multi_model_stack, properties) if s["Action"] == "ssm:GetParameter"]
        assert json.dumps(champion["Resource"]).count("/champion") == 1 and f"/{model}/champion" in json.dumps(champion["Resource"])
    (listing,) = [s for s in multi_model_stack.statements_of("drift") if s["Action"] == "s3:ListBucket"]
    assert listing["Condition"]["StringLike"]["s3:prefix"] == [p for m in MODELS for p in (f"models/{m}/", f"models/{m}/*")]


def test_the_weekly_run_covers_each_model_with_its_own_rule_naming_it(multi_model_stack: Synthesized) -> None:
    drift_id, _ = multi_model_stack.function("drift")
    rules = [
        rule["Properties"]
        for rule in multi_model_stack.of_type("AWS::Events::Rule").values()
        if rule["Properties"].get("ScheduleExpression") == "cron(0 6 ? * MON *)"
    ]
    assert len(rules) == 2
    named = set()
    for rule in rules:
        (target,) = rule["Targets"]
        assert target["Arn"] == {"Fn::GetAtt": [drift_id, "Arn"]}
        transformer = target["InputTransformer"]
        assert transformer["InputPathsMap"] == {"time": "$.time"}
        template = json.loads(transformer["InputTemplate"].replace("<time>", '"T"'))
        assert template["time"] == "T"
        named.add(template["model_name"])
    assert named == set(MODELS)


def test_the_daily_summaries_step_covers_each_model_with_its_own_rule_naming_it(multi_model_stack: Synthesized) -> None:
    rules = [r["Properties"] for r in multi_model_stack.of_type("AWS::Events::Rule").values() if r["Properties"].get("ScheduleExpression") == "cron(0 1 * * ? *)"]
    inputs = [json.loads(rule["Targets"][0]["InputTransformer"]["InputTemplate"].replace("<time>", '"T"')) for rule in rules]
    assert sorted(inputs, key=lambda event: event["model_name"]) == [
        {"sml_action": "daily_summaries", "time": "T", "model_name": model} for model in sorted(MODELS)
    ]


def test_a_single_model_keeps_the_plain_scheduled_event(default_stack: Synthesized) -> None:
    weekly = [r for r in default_stack.of_type("AWS::Events::Rule").values() if r["Properties"].get("ScheduleExpression") == "cron(0 6 ? * MON *)"]
    (rule,) = weekly
    assert "InputTransformer" not in rule["Properties"]["Targets"][0] and "Input" not in rule["Properties"]["Targets"][0]


def test_each_model_has_its_alarms_and_the_dashboard_shows_each(multi_model_stack: Synthesized) -> None:
    predicts = _predicts(multi_model_stack)
    alarms = [a["Properties"] for a in multi_model_stack.of_type("AWS::CloudWatch::Alarm").values()]
    for model, (function_id, _) in predicts.items():
        dimension = [{"Name": "FunctionName", "Value": {"Ref": function_id}}]
        assert [a for a in alarms if a.get("MetricName") == "Url5xxCount" and a["Dimensions"] == dimension], model
        assert [a for a in alarms if a.get("MetricName") == "Errors" and a["Dimensions"] == dimension], model
    champion = {a["MetricName"] for a in alarms if a.get("MetricName", "").startswith("ChampionUnavailable")}
    assert champion == {"ChampionUnavailable", "ChampionUnavailable-wine"}
    filters = multi_model_stack.of_type("AWS::Logs::MetricFilter").values()
    assert {f["Properties"]["LogGroupName"]["Ref"] for f in filters} == {
        p["LoggingConfig"]["LogGroup"]["Ref"] for _, p in predicts.values()
    }
    (dashboard,) = multi_model_stack.of_type("AWS::CloudWatch::Dashboard").values()
    body = json.dumps(dashboard["Properties"]["DashboardBody"])
    for model, (function_id, _) in predicts.items():
        assert f"URL 5xx {model}" in body and f"champion unavailable {model}" in body and function_id in body
    assert "drift_run.model_name" in body


@pytest.mark.parametrize(
    ("context", "fragment"),
    [
        ({"models": "wine,wine"}, "twice"),
        ({"models": "Wine"}, "lower-case"),
        ({"models": ",".join(f"m{i}" for i in range(11))}, "at most 10"),
        ({"models": "a,b", "model_name": "c"}, "not one of a, b"),
    ],
)
def test_a_models_list_that_cannot_be_deployed_names_the_key(context: dict, fragment: str) -> None:
    with pytest.raises(ContextError, match=fragment) as raised:
        config_from_context(context.get)
    assert raised.value.key == "models"


def test_models_come_from_the_cli_or_cdk_json_and_the_first_is_the_model_name() -> None:
    from_cli = config_from_context({"models": "breast-cancer, wine"}.get)
    from_json = config_from_context({"models": ["breast-cancer", "wine"]}.get)
    assert from_cli == from_json
    assert from_cli.model_names == MODELS and from_cli.model_name == "breast-cancer"
    assert config_from_context({}.get).model_names == ("breast-cancer",)
    assert config_from_context({"models": "a,b", "model_name": "b"}.get).model_name == "a"
