"""What a first real deploy depends on after `cdk deploy` returns (issue 14): alarms reach the topic,
the schema is migrated before anything consumes, and the proxy can pool."""

from __future__ import annotations

import pytest

from infra.database import PROXY_BORROW_TIMEOUT
from infra.writer import TIMEOUT as WRITER_TIMEOUT
from tests.infra.conftest import Synthesized

pytestmark = pytest.mark.infra

CLOUDWATCH = {"Service": "cloudwatch.amazonaws.com"}


def _actions(statement: dict) -> set[str]:
    actions = statement["Action"]
    return {actions} if isinstance(actions, str) else set(actions)


def _only(resources: dict[str, dict]) -> tuple[str, dict]:
    assert len(resources) == 1, sorted(resources)
    return next(iter(resources.items()))


def _assert_this_accounts_alarms_only(statement: dict) -> None:
    condition = statement["Condition"]
    assert condition["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    source_arn = condition["ArnLike"]["aws:SourceArn"]["Fn::Join"][1]
    assert source_arn[2] == ":cloudwatch:" and source_arn[-1] == ":alarm:*"
    assert {"Ref": "AWS::AccountId"} in source_arn and {"Ref": "AWS::Region"} in source_arn


# --- alarms reach people ----------------------------------------------------------------------------


def test_the_topic_policy_lets_this_accounts_alarms_publish(default_stack: Synthesized) -> None:
    topic_id, _ = _only(default_stack.of_type("AWS::SNS::Topic"))
    _, policy = _only(default_stack.of_type("AWS::SNS::TopicPolicy"))
    assert policy["Properties"]["Topics"] == [{"Ref": topic_id}]
    allows = [
        s
        for s in policy["Properties"]["PolicyDocument"]["Statement"]
        if s["Effect"] == "Allow" and s["Principal"] == CLOUDWATCH
    ]
    assert len(allows) == 1 and _actions(allows[0]) == {"sns:Publish"}
    assert allows[0]["Resource"] == {"Ref": topic_id}
    _assert_this_accounts_alarms_only(allows[0])


def test_the_topic_key_lets_only_this_accounts_alarms_use_it(default_stack: Synthesized) -> None:
    (topic,) = default_stack.of_type("AWS::SNS::Topic").values()
    key = default_stack.resources[topic["Properties"]["KmsMasterKeyId"]["Fn::GetAtt"][0]]["Properties"]
    statements = [s for s in key["KeyPolicy"]["Statement"] if s.get("Principal") == CLOUDWATCH]
    assert len(statements) == 1
    assert _actions(statements[0]) == {"kms:Decrypt", "kms:GenerateDataKey*"}
    _assert_this_accounts_alarms_only(statements[0])


def test_alarm_text_names_the_real_replay_command(default_stack: Synthesized) -> None:
    descriptions = [a["Properties"]["AlarmDescription"] for a in default_stack.of_type("AWS::CloudWatch::Alarm").values()]
    dlq = [d for d in descriptions if "DLQ" in d]
    assert dlq and all("`sml dlq replay`" in d for d in dlq)
    assert not [d for d in descriptions if "`sml replay`" in d]


# --- migrations are a deploy step before anything reads or writes the schema --------------------------


def test_migrations_run_in_a_trigger_before_the_writer_its_event_source_and_drift(default_stack: Synthesized) -> None:
    migrate_id, migrate = default_stack.function("migrate")
    writer_id, writer = default_stack.function("writer")
    drift_id, _ = default_stack.function("drift")
    # The writer's image with another command: the same sql/ the writer was built with.
    assert migrate["Code"] == writer["Code"]
    assert migrate["ImageConfig"]["Command"] == ["functions.writer.migrate.handler"]
    assert migrate["VpcConfig"] == writer["VpcConfig"]
    assert default_stack.template["Outputs"]["MigrateLogGroup"]["Value"] == migrate["LoggingConfig"]["LogGroup"]

    trigger_id, trigger = _only(default_stack.of_type("Custom::Trigger"))
    properties = trigger["Properties"]
    version = default_stack.resources[properties["HandlerArn"]["Ref"]]
    assert version["Type"] == "AWS::Lambda::Version"
    assert version["Properties"]["FunctionName"] == {"Ref": migrate_id}
    assert properties["InvocationType"] == "RequestResponse"  # waits, and a function error fails the deploy
    assert int(properties["Timeout"]) >= migrate["Timeout"] * 1000
    assert properties["ExecuteOnHandlerChange"] is True  # a new handler version runs it again

    (mapping_id,) = default_stack.of_type("AWS::Lambda::EventSourceMapping")
    for dependent in (writer_id, mapping_id, drift_id):
        assert trigger_id in default_stack.resources[dependent].get("DependsOn", []), dependent
    instance_id, _ = _only(default_stack.of_type("AWS::RDS::DBInstance"))
    proxy_id, _ = _only(default_stack.of_type("AWS::RDS::DBProxy"))
    target_group_id, _ = _only(default_stack.of_type("AWS::RDS::DBProxyTargetGroup"))
    assert {instance_id, proxy_id, target_group_id} <= set(trigger["DependsOn"])


# --- the proxy can pool ----------------------------------------------------------------------------------


def test_strict_utc_and_the_slow_query_log_come_from_a_parameter_group(default_stack: Synthesized) -> None:
    _, instance = _only(default_stack.of_type("AWS::RDS::DBInstance"))
    group_id, group = _only(default_stack.of_type("AWS::RDS::DBParameterGroup"))
    assert instance["Properties"]["DBParameterGroupName"] == {"Ref": group_id}
    parameters = group["Properties"]["Parameters"]
    assert set(parameters["sql_mode"].split(",")) >= {"STRICT_ALL_TABLES", "NO_ENGINE_SUBSTITUTION"}
    assert parameters["time_zone"] == "UTC"
    assert parameters["slow_query_log"] == "1" and parameters["log_output"] == "FILE"
    assert "slowquery" in instance["Properties"]["EnableCloudwatchLogsExports"]
    assert group["Properties"]["Family"] == "mysql8.4"


def test_the_proxy_borrow_timeout_is_below_the_writer_timeout_and_it_leaves_connections_free(
    default_stack: Synthesized,
) -> None:
    _, target_group = _only(default_stack.of_type("AWS::RDS::DBProxyTargetGroup"))
    pool = target_group["Properties"]["ConnectionPoolConfigurationInfo"]
    assert pool["ConnectionBorrowTimeout"] == PROXY_BORROW_TIMEOUT.to_seconds()
    assert pool["ConnectionBorrowTimeout"] < default_stack.function("writer")[1]["Timeout"] == WRITER_TIMEOUT.to_seconds()
    assert pool["MaxConnectionsPercent"] < 100
    assert pool["MaxIdleConnectionsPercent"] <= pool["MaxConnectionsPercent"]


# --- security ---------------------------------------------------------------------------------------------


def test_predict_and_drift_may_list_only_the_models_prefix(default_stack: Synthesized) -> None:
    for service in ("predict", "drift"):
        (listing,) = [s for s in default_stack.statements_of(service) if "s3:ListBucket" in _actions(s)]
        assert listing["Condition"] == {
            "StringLike": {"s3:prefix": ["models/breast-cancer/", "models/breast-cancer/*"]}
        }, service


def test_the_caller_policy_invokes_predict_only_through_its_url(
    default_stack: Synthesized, non_default_stack: Synthesized
) -> None:
    for stack, auth in ((default_stack, "AWS_IAM"), (non_default_stack, "NONE")):
        predict_id, _ = stack.function("predict")
        (policy_id, policy) = next(
            (k, v) for k, v in stack.of_type("AWS::IAM::ManagedPolicy").items() if "predict Function URL" in v["Properties"]["Description"]
        )
        by_action = {s["Action"]: s for s in policy["Properties"]["PolicyDocument"]["Statement"]}
        assert set(by_action) == {"lambda:InvokeFunctionUrl", "lambda:InvokeFunction"}
        for statement in by_action.values():
            assert statement["Resource"] == {"Fn::GetAtt": [predict_id, "Arn"]}
        assert by_action["lambda:InvokeFunction"]["Condition"] == {"Bool": {"lambda:InvokedViaFunctionUrl": "true"}}
        assert by_action["lambda:InvokeFunctionUrl"]["Condition"] == {"StringEquals": {"lambda:FunctionUrlAuthType": auth}}
        assert stack.template["Outputs"]["PredictCallerPolicyArn"]["Value"] == {"Ref": policy_id}


def test_a_public_predict_is_capped_by_reserved_concurrency(
    default_stack: Synthesized, non_default_stack: Synthesized
) -> None:
    assert "ReservedConcurrentExecutions" not in default_stack.function("predict")[1]
    assert non_default_stack.function("predict")[1]["ReservedConcurrentExecutions"] == 20


def test_a_default_deployment_reserves_no_concurrency_so_a_low_quota_account_can_take_it(default_stack: Synthesized) -> None:
    # Any reservation must leave the account 100 unreserved, which a new account's quota of 10 cannot
    # (infra/preflight.py checks only predict's); the archive function stays unreserved for that reason.
    reserved = {key: f["Properties"]["ReservedConcurrentExecutions"] for key, f in default_stack.of_type("AWS::Lambda::Function").items()
                if "ReservedConcurrentExecutions" in f["Properties"]}
    assert reserved == {}


# --- operability ------------------------------------------------------------------------------------------


def test_prod_gets_a_standby_and_a_month_of_backups_by_default(non_default_stack: Synthesized) -> None:
    _, instance = _only(non_default_stack.of_type("AWS::RDS::DBInstance"))
    assert instance["Properties"]["BackupRetentionPeriod"] == 30
    assert instance["Properties"]["MultiAZ"] is True


def test_the_proxy_requires_iam_auth_and_each_function_logs_in_as_its_own_user(default_stack: Synthesized) -> None:
    _, proxy = _only(default_stack.of_type("AWS::RDS::DBProxy"))
    auth = proxy["Properties"]["Auth"]
    assert len(auth) == 3 and all(entry["IAMAuth"] == "REQUIRED" for entry in auth)
    users = {"writer": "sml_writer", "drift": "sml_drift", "migrate": "sml_admin"}
    for service, user in users.items():
        assert default_stack.function(service)[1]["Environment"]["Variables"]["SML_DB_USER"] == user
        statements = default_stack.statements_of(service)
        connects = [s for s in statements if "rds-db:connect" in _actions(s)]
        assert [s["Resource"]["Fn::Join"][1][-1] for s in connects] == [f"/{user}"], service


def test_only_the_migration_step_reads_secrets_and_never_the_master_secret(default_stack: Synthesized) -> None:
    (attachment_id,) = default_stack.of_type("AWS::SecretsManager::SecretTargetAttachment")
    for service in ("predict", "writer", "drift"):
        assert not [s for s in default_stack.statements_of(service) if "secretsmanager:GetSecretValue" in _actions(s)]
    read = [s["Resource"] for s in default_stack.statements_of("migrate") if "secretsmanager:GetSecretValue" in _actions(s)]
    variables = default_stack.function("migrate")[1]["Environment"]["Variables"]
    assert sorted(r["Ref"] for r in read) == sorted(
        [variables["SML_WRITER_DB_SECRET_ARN"]["Ref"], variables["SML_DRIFT_DB_SECRET_ARN"]["Ref"]]
    )
    assert {"Ref": attachment_id} not in read
    _, proxy = _only(default_stack.of_type("AWS::RDS::DBProxy"))
    proxy_secrets = [entry["SecretArn"] for entry in proxy["Properties"]["Auth"]]
    assert {"Ref": attachment_id} in proxy_secrets and all(r in proxy_secrets for r in read)


def _alarms_by_metric(stack: Synthesized) -> dict[tuple[str, str], list[dict]]:
    found: dict[tuple[str, str], list[dict]] = {}
    for alarm in stack.of_type("AWS::CloudWatch::Alarm").values():
        properties = alarm["Properties"]
        if "Metrics" not in properties:  # a metric math or Metrics Insights alarm: tested in test_stack.py
            found.setdefault((properties["Namespace"], properties["MetricName"]), []).append(properties)
    return found


def test_alarms_cover_url_5xx_capture_misses_writer_throttles_and_a_broken_champion(default_stack: Synthesized) -> None:
    alarms = _alarms_by_metric(default_stack)
    predict_id, _ = default_stack.function("predict")
    writer_id, _ = default_stack.function("writer")
    (url_5xx,) = alarms[("AWS/Lambda", "Url5xxCount")]
    assert url_5xx["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": predict_id}}]
    (misses,) = alarms[("sml-dev", "CaptureMisses")]
    assert misses["Dimensions"] == [{"Name": "service", "Value": "predict"}]
    (throttles,) = alarms[("AWS/Lambda", "Throttles")]
    assert throttles["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": writer_id}}]
    for alarm in (url_5xx, misses, throttles):
        assert alarm["Threshold"] == 1 and alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"

    (champion,) = alarms[("sml-dev", "ChampionUnavailable")]
    (metric_filter,) = default_stack.of_type("AWS::Logs::MetricFilter").values()
    predict_logs = default_stack.function("predict")[1]["LoggingConfig"]["LogGroup"]
    assert metric_filter["Properties"]["LogGroupName"] == predict_logs
    assert "$.champion_unavailable" in metric_filter["Properties"]["FilterPattern"]  # predict logs it with every 503
    transformation = metric_filter["Properties"]["MetricTransformations"][0]
    assert (transformation["MetricNamespace"], transformation["MetricName"]) == ("sml-dev", "ChampionUnavailable")
    assert champion["Threshold"] == 1
    (model_errors,) = alarms[("sml-dev", "ModelErrors")]
    assert model_errors["Dimensions"] == [{"Name": "service", "Value": "predict"}]
    assert model_errors["Threshold"] == 1 and model_errors["Statistic"] == "Sum"
    (refresh_failures,) = alarms[("sml-dev", "ChampionRefreshFailures")]
    assert refresh_failures["Dimensions"] == [{"Name": "service", "Value": "predict"}] and refresh_failures["Threshold"] == 1


def test_an_alarm_fires_when_drift_has_not_run_for_a_week(default_stack: Synthesized) -> None:
    # The weekly run's own metric: the daily step invokes the same function every day.
    (silence,) = _alarms_by_metric(default_stack)[("sml-dev", "weekly_runs")]
    assert silence["Dimensions"] == [{"Name": "service", "Value": "drift"}]
    assert silence["ComparisonOperator"] == "LessThanThreshold" and silence["Threshold"] == 1
    assert silence["TreatMissingData"] == "breaching"
    # The longest window CloudWatch evaluates (Period x EvaluationPeriods <= 7 days): a missed Monday
    # alarms in the day after it.
    assert silence["Period"] * silence["EvaluationPeriods"] == 7 * 86400


def test_the_storage_alarm_fires_when_autoscaling_did_not_help_not_when_it_first_acts(default_stack: Synthesized) -> None:
    instance_id, instance = _only(default_stack.of_type("AWS::RDS::DBInstance"))
    (storage,) = _alarms_by_metric(default_stack)[("AWS/RDS", "FreeStorageSpace")]
    assert storage["Dimensions"] == [{"Name": "DBInstanceIdentifier", "Value": {"Ref": instance_id}}]
    assert storage["ComparisonOperator"] == "LessThanThreshold" and storage["Statistic"] == "Minimum"
    # Autoscaling acts at <= 10% free for 5 minutes: the alarm must not fire on that alone.
    autoscaling_trigger = int(instance["Properties"]["AllocatedStorage"]) * 2**30 // 10
    assert storage["Threshold"] <= autoscaling_trigger
    assert storage["Period"] * storage["EvaluationPeriods"] >= 3600
    assert int(instance["Properties"]["MaxAllocatedStorage"]) > int(instance["Properties"]["AllocatedStorage"])


def test_predict_is_updated_after_the_writer_and_its_event_source(default_stack: Synthesized) -> None:
    predict_id, _ = default_stack.function("predict")
    writer_id, _ = default_stack.function("writer")
    (mapping_id,) = default_stack.of_type("AWS::Lambda::EventSourceMapping")
    assert {writer_id, mapping_id} <= set(default_stack.resources[predict_id].get("DependsOn", []))
    (url,) = default_stack.of_type("AWS::Lambda::Url").values()
    assert writer_id in url.get("DependsOn", [])


def test_the_dashboard_shows_the_pipeline_end_to_end(default_stack: Synthesized) -> None:
    import json

    _, dashboard = _only(default_stack.of_type("AWS::CloudWatch::Dashboard"))
    body = json.dumps(dashboard["Properties"]["DashboardBody"])
    for shown in (
        "PredictionsServed",
        "CaptureMisses",
        "ApproximateNumberOfMessagesVisible",
        "ApproximateAgeOfOldestMessage",
        "rows_inserted",
        "records_failed",
        "drift_run.status",
    ):
        assert shown in body, shown
    queues = default_stack.of_type("AWS::SQS::Queue")
    dlq_id = next(k for k, v in queues.items() if "RedrivePolicy" not in v["Properties"])
    assert dlq_id in body  # the DLQ's depth has its own graph
    assert default_stack.template["Outputs"]["DashboardName"]["Value"] == {"Ref": _only(default_stack.of_type("AWS::CloudWatch::Dashboard"))[0]}


def test_the_migration_step_reruns_only_when_its_inputs_change(default_stack: Synthesized) -> None:
    from infra.migrations import migration_inputs_digest

    migrate_id, _ = default_stack.function("migrate")
    (trigger,) = default_stack.of_type("Custom::Trigger").values()
    version_id = trigger["Properties"]["HandlerArn"]["Ref"]
    # The version (and so the trigger's HandlerArn) is named after the migration inputs, not the image.
    assert version_id.startswith(f"MigrationsVersion{migration_inputs_digest()[:16]}")
    versions = default_stack.of_type("AWS::Lambda::Version")
    assert [k for k, v in versions.items() if v["Properties"]["FunctionName"] == {"Ref": migrate_id}] == [version_id]


def test_the_migration_inputs_digest_ignores_the_writers_own_code(tmp_path) -> None:
    import shutil

    from infra.migrations import MIGRATION_INPUTS, migration_inputs_digest
    from infra.names import REPO_ROOT

    for relative in (*MIGRATION_INPUTS, "functions/writer/app.py", "README.md"):
        source, target = REPO_ROOT / relative, tmp_path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(source, target) if source.is_dir() else shutil.copy2(source, target)
    before = migration_inputs_digest(tmp_path)
    assert before == migration_inputs_digest()
    (tmp_path / "functions/writer/app.py").write_text("# the writer changed\n")
    (tmp_path / "README.md").write_text("\n")
    assert migration_inputs_digest(tmp_path) == before
    (tmp_path / "sql/9999_new.sql").write_text("CREATE TABLE IF NOT EXISTS x (id INT);\n")
    assert migration_inputs_digest(tmp_path) != before
