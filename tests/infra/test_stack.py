"""The synthesized stack has the properties the architecture depends on (not just the resources)."""

from __future__ import annotations

import fnmatch
import json

import pytest
from aws_cdk.assertions import Match, Template

from infra.config import DeploymentConfig
from tests.infra.conftest import NON_DEFAULT_CONTEXT, Synthesized

pytestmark = pytest.mark.infra


@pytest.fixture(scope="module")
def template(default_stack: Synthesized) -> Template:
    return Template.from_json(default_stack.template)


def _actions(statement: dict) -> set[str]:
    actions = statement["Action"]
    return {actions} if isinstance(actions, str) else set(actions)


def _references(value: object, logical_id: str) -> bool:
    """Whether a CloudFormation value refers to ``logical_id`` (Ref or GetAtt, anywhere inside)."""
    if isinstance(value, dict):
        if value.get("Ref") == logical_id or value.get("Fn::GetAtt", [None])[0] == logical_id:
            return True
        return any(_references(inner, logical_id) for inner in value.values())
    if isinstance(value, list):
        return any(_references(inner, logical_id) for inner in value)
    return False


def _denies_plain_http(policy: dict) -> bool:
    return any(
        statement["Effect"] == "Deny" and statement.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    )


def _subnet_tags(stack: Synthesized, subnet_ref: dict) -> dict[str, str]:
    return {tag["Key"]: tag["Value"] for tag in stack.resources[subnet_ref["Ref"]]["Properties"]["Tags"]}


def _joined(value: object) -> str:
    """A CloudFormation string as text: an ``Fn::Join``'s tokens appear as their JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return separator.join(_joined(part) for part in parts)
    return json.dumps(value)


def _only_id(resources: dict[str, dict]) -> str:
    assert len(resources) == 1, sorted(resources)
    return next(iter(resources))


# --- predict and its Function URL -------------------------------------------------------------


def test_function_url_requires_sigv4_by_default(template: Template, default_stack: Synthesized) -> None:
    template.has_resource_properties("AWS::Lambda::Url", {"AuthType": "AWS_IAM"})
    public = [
        p for p in default_stack.of_type("AWS::Lambda::Permission").values() if p["Properties"]["Principal"] == "*"
    ]
    assert public == []
    assert not [m for m in default_stack.messages if "function_url_auth" in m[2]]


def test_function_url_is_public_only_when_the_context_asks_and_then_warns(non_default_stack: Synthesized) -> None:
    Template.from_json(non_default_stack.template).has_resource_properties("AWS::Lambda::Url", {"AuthType": "NONE"})
    warnings = [m for m in non_default_stack.messages if m[0] == "warning" and "function_url_auth=NONE" in m[2]]
    assert len(warnings) == 1
    assert warnings[0][1].endswith("/FunctionUrl")


def test_predict_runs_outside_the_vpc_and_the_database_functions_inside(default_stack: Synthesized) -> None:
    assert "VpcConfig" not in default_stack.function("predict")[1]
    for service in ("writer", "drift"):
        vpc_config = default_stack.function(service)[1]["VpcConfig"]
        assert len(vpc_config["SubnetIds"]) == 2
        for subnet_ref in vpc_config["SubnetIds"]:
            assert _subnet_tags(default_stack, subnet_ref)["aws-cdk:subnet-name"] == "functions"


def test_functions_are_arm64_images_with_the_contract_environment(default_stack: Synthesized) -> None:
    expected = {
        "predict": {
            "SML_APP_NAME",
            "SML_MODEL_NAME",
            "SML_BUCKET",
            "SML_QUEUE_URL",
            "SML_CAPTURE_SAMPLING_RATE",
            "SML_CAPTURE_FAIL_CLOSED",
            "SML_CAPTURE_MODE",
            "SML_PREDICT_RANGE_WARNINGS",
            "SML_CHAMPION_TTL_SECONDS",
            "POWERTOOLS_SERVICE_NAME",
            "POWERTOOLS_METRICS_NAMESPACE",
        },
        "writer": {
            "SML_APP_NAME",
            "SML_MODEL_NAME",
            "SML_BUCKET",
            "SML_DB_USER",
            "SML_DB_HOST",
            "SML_DB_NAME",
            "POWERTOOLS_SERVICE_NAME",
            "POWERTOOLS_METRICS_NAMESPACE",
        },
    }
    expected["drift"] = expected["writer"] | {"SML_TOPIC_ARN", "SML_DRIFT_WINDOW_DAYS", "SML_REPORT_PREFIX", "SML_WINDOW_SOURCE"}
    expected["writer"] = expected["writer"] | {"SML_ARCHIVE_PREFIX"}
    for service, variables in expected.items():
        function = default_stack.function(service)[1]
        assert function["PackageType"] == "Image"
        assert function["Architectures"] == ["arm64"]
        assert set(function["Environment"]["Variables"]) == variables
        assert function["Environment"]["Variables"]["SML_APP_NAME"] == "sml-dev"
        assert not any("PASSWORD" in name for name in function["Environment"]["Variables"])


def test_drift_floors_and_data_quality_thresholds_come_from_context_and_stay_unset_without_it(
    default_stack: Synthesized, non_default_stack: Synthesized
) -> None:
    dq_and_floors = {"SML_DRIFT_FEATURE_FLOORS", "SML_DQ_MAX_OUT_OF_RANGE", "SML_DQ_MAX_UNSEEN_CATEGORY", "SML_DQ_MAX_MISSING_EXCESS", "SML_DQ_MAX_REFUSED_RATE"}
    assert not dq_and_floors & set(default_stack.function("drift")[1]["Environment"]["Variables"])
    variables = non_default_stack.function("drift")[1]["Environment"]["Variables"]
    assert {name: variables.get(name) for name in dq_and_floors} == {
        "SML_DRIFT_FEATURE_FLOORS": '{"mean_texture":"0.1sd"}',
        "SML_DQ_MAX_OUT_OF_RANGE": "0.01",
        "SML_DQ_MAX_UNSEEN_CATEGORY": "0.005",
        "SML_DQ_MAX_MISSING_EXCESS": None,
        "SML_DQ_MAX_REFUSED_RATE": "0.03",
    }


def test_capture_sampling_rate_comes_from_context(default_stack: Synthesized, non_default_stack: Synthesized) -> None:
    assert default_stack.function("predict")[1]["Environment"]["Variables"]["SML_CAPTURE_SAMPLING_RATE"] == "1.0"
    assert non_default_stack.function("predict")[1]["Environment"]["Variables"]["SML_CAPTURE_SAMPLING_RATE"] == "0.25"


def test_capture_mode_comes_from_context(default_stack: Synthesized, non_default_stack: Synthesized) -> None:
    assert default_stack.function("predict")[1]["Environment"]["Variables"]["SML_CAPTURE_MODE"] == "after_response"
    assert non_default_stack.function("predict")[1]["Environment"]["Variables"]["SML_CAPTURE_MODE"] == "inline"


# --- events queue, DLQ and the writer's event source ------------------------------------------


def test_events_queue_redrives_to_the_dlq_after_five_receives(default_stack: Synthesized) -> None:
    queues = default_stack.of_type("AWS::SQS::Queue")
    source_id = _only_id({k: v for k, v in queues.items() if "RedrivePolicy" in v["Properties"]})
    dlq_id = _only_id({k: v for k, v in queues.items() if k != source_id})
    redrive = queues[source_id]["Properties"]["RedrivePolicy"]
    assert redrive["maxReceiveCount"] == 5
    assert redrive["deadLetterTargetArn"] == {"Fn::GetAtt": [dlq_id, "Arn"]}
    assert (
        queues[dlq_id]["Properties"]["MessageRetentionPeriod"]
        > queues[source_id]["Properties"]["MessageRetentionPeriod"]
    )


def test_queue_visibility_covers_six_writer_timeouts_plus_the_batching_window(default_stack: Synthesized) -> None:
    writer = default_stack.function("writer")[1]
    (mapping,) = default_stack.of_type("AWS::Lambda::EventSourceMapping").values()
    queue = default_stack.resources[mapping["Properties"]["EventSourceArn"]["Fn::GetAtt"][0]]
    visibility = queue["Properties"]["VisibilityTimeout"]
    assert visibility >= 6 * writer["Timeout"] + mapping["Properties"]["MaximumBatchingWindowInSeconds"]


def test_writer_consumes_in_batches_with_partial_failures_under_the_connection_budget(
    default_stack: Synthesized,
) -> None:
    writer_id, _ = default_stack.function("writer")
    (mapping,) = default_stack.of_type("AWS::Lambda::EventSourceMapping").values()
    properties = mapping["Properties"]
    assert properties["FunctionName"] == {"Ref": writer_id}
    assert properties["BatchSize"] == 500
    assert properties["MaximumBatchingWindowInSeconds"] == 5
    assert properties["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    concurrency = properties["ScalingConfig"]["MaximumConcurrency"]
    assert 2 <= concurrency <= DeploymentConfig().db_connection_budget


def test_writer_event_source_settings_come_from_context(non_default_stack: Synthesized) -> None:
    (mapping,) = non_default_stack.of_type("AWS::Lambda::EventSourceMapping").values()
    assert mapping["Properties"]["BatchSize"] == NON_DEFAULT_CONTEXT["writer_batch_size"]
    assert (
        mapping["Properties"]["MaximumBatchingWindowInSeconds"] == NON_DEFAULT_CONTEXT["writer_batching_window_seconds"]
    )
    assert mapping["Properties"]["ScalingConfig"] == {
        "MaximumConcurrency": NON_DEFAULT_CONTEXT["writer_max_concurrency"]
    }


def test_queues_are_encrypted_and_refuse_plain_http(template: Template, default_stack: Synthesized) -> None:
    for queue in default_stack.of_type("AWS::SQS::Queue").values():
        assert queue["Properties"]["SqsManagedSseEnabled"] is True
    policies = default_stack.of_type("AWS::SQS::QueuePolicy")
    assert len(policies) == 2
    for policy in policies.values():
        assert _denies_plain_http(policy)


# --- drift schedule, alerts and alarms --------------------------------------------------------


def test_drift_runs_weekly(template: Template, default_stack: Synthesized) -> None:
    drift_id, _ = default_stack.function("drift")
    template.has_resource_properties(
        "AWS::Events::Rule",
        {
            "ScheduleExpression": "cron(0 6 ? * MON *)",
            "Targets": [Match.object_like({"Arn": {"Fn::GetAtt": [drift_id, "Arn"]}})],
        },
    )


def test_the_drift_function_runs_its_daily_summaries_step_daily_with_the_events_time(
    template: Template, default_stack: Synthesized
) -> None:
    drift_id, _ = default_stack.function("drift")
    (rule,) = [r["Properties"] for r in default_stack.of_type("AWS::Events::Rule").values() if r["Properties"].get("ScheduleExpression") == "cron(0 1 * * ? *)"]
    (target,) = rule["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": [drift_id, "Arn"]}
    assert target["InputTransformer"]["InputPathsMap"] == {"time": "$.time"}
    assert json.loads(target["InputTransformer"]["InputTemplate"].replace("<time>", '"T"')) == {"sml_action": "daily_summaries", "time": "T"}


def test_the_drift_did_not_run_alarm_counts_weekly_runs_not_the_daily_steps_invocations(default_stack: Synthesized) -> None:
    alarms = [a["Properties"] for a in default_stack.of_type("AWS::CloudWatch::Alarm").values()]
    assert not [a for a in alarms if a.get("MetricName") == "Invocations"]
    (alarm,) = [a for a in alarms if a.get("MetricName") == "weekly_runs"]
    assert alarm["Dimensions"] == [{"Name": "service", "Value": "drift"}] and "weekly drift job" in alarm["AlarmDescription"]
    assert alarm["ComparisonOperator"] == "LessThanThreshold" and alarm["TreatMissingData"] == "breaching"


def test_the_migration_function_runs_the_retention_step_daily_with_the_events_time(
    template: Template, default_stack: Synthesized
) -> None:
    migrate_id, migrate = default_stack.function("migrate")
    template.has_resource_properties(
        "AWS::Events::Rule",
        {
            "ScheduleExpression": "cron(30 0 * * ? *)",
            "Targets": [
                Match.object_like(
                    {"Arn": {"Fn::GetAtt": [migrate_id, "Arn"]}, "InputTransformer": Match.object_like({"InputPathsMap": {"time": "$.time"}})}
                )
            ],
        },
    )
    variables = migrate["Environment"]["Variables"]
    assert (variables["SML_DRIFT_WINDOW_DAYS"], variables["SML_LABEL_HORIZON_DAYS"]) == ("7", "7")
    assert "SML_RETENTION_DAYS" not in variables  # the application's default for the window and horizon


def test_retention_and_the_drift_functions_size_come_from_context(default_stack: Synthesized, non_default_stack: Synthesized) -> None:
    _, migrate = non_default_stack.function("migrate")
    variables = migrate["Environment"]["Variables"]
    assert (variables["SML_RETENTION_DAYS"], variables["SML_LABEL_HORIZON_DAYS"]) == ("40", "10")
    sizes = {
        name: (stack.function("drift")[1]["MemorySize"], stack.function("drift")[1]["Timeout"])
        for name, stack in (("default", default_stack), ("non-default", non_default_stack))
    }
    assert sizes == {"default": (2048, 900), "non-default": (4096, 600)}


def test_alerts_topic_is_kms_encrypted_and_cloudwatch_may_use_the_key(default_stack: Synthesized) -> None:
    (topic,) = default_stack.of_type("AWS::SNS::Topic").values()
    key_id = topic["Properties"]["KmsMasterKeyId"]["Fn::GetAtt"][0]
    key = default_stack.resources[key_id]["Properties"]
    assert key["EnableKeyRotation"] is True
    cloudwatch = [s for s in key["KeyPolicy"]["Statement"] if s["Principal"] == {"Service": "cloudwatch.amazonaws.com"}]
    assert cloudwatch and {"kms:Decrypt", "kms:GenerateDataKey*"} <= _actions(cloudwatch[0])


def test_email_subscription_exists_only_with_an_alert_email(
    default_stack: Synthesized, non_default_stack: Synthesized
) -> None:
    assert default_stack.of_type("AWS::SNS::Subscription") == {}
    (subscription,) = non_default_stack.of_type("AWS::SNS::Subscription").values()
    assert subscription["Properties"]["Protocol"] == "email"
    assert subscription["Properties"]["Endpoint"] == NON_DEFAULT_CONTEXT["alert_email"]


def test_alarms_watch_the_dlq_the_backlog_and_every_function(default_stack: Synthesized) -> None:
    (topic_id,) = default_stack.of_type("AWS::SNS::Topic")
    alarms = list(default_stack.of_type("AWS::CloudWatch::Alarm").values())
    for alarm in alarms:
        assert alarm["Properties"]["AlarmActions"] == [{"Ref": topic_id}]
    watched = {(a["Properties"].get("Namespace"), a["Properties"].get("MetricName")) for a in alarms}
    assert ("AWS/SQS", "ApproximateNumberOfMessagesVisible") in watched
    assert ("AWS/SQS", "ApproximateAgeOfOldestMessage") in watched
    errors = [a for a in alarms if a["Properties"].get("MetricName") == "Errors"]
    function_ids = {default_stack.function(service)[0] for service in ("predict", "writer", "drift", "compact")}
    assert {a["Properties"]["Dimensions"][0]["Value"]["Ref"] for a in errors} == function_ids

    queues = default_stack.of_type("AWS::SQS::Queue")
    dlq_id = next(k for k, v in queues.items() if "RedrivePolicy" not in v["Properties"])
    (depth,) = [a for a in alarms if a["Properties"].get("MetricName") == "ApproximateNumberOfMessagesVisible"]
    assert _references(depth["Properties"]["Dimensions"], dlq_id)
    assert depth["Properties"]["Threshold"] == 1


REFUSED_SEARCH = """SEARCH('{"sml-dev",field,service} MetricName="RefusedValues" service="predict"', 'Sum', 300)"""


def _dashboard_widgets(stack: Synthesized) -> list[dict]:
    """The dashboard's widgets, with every CloudFormation token in the body rendered as ``TOKEN``."""
    (dashboard,) = stack.of_type("AWS::CloudWatch::Dashboard").values()
    body = dashboard["Properties"]["DashboardBody"]
    if isinstance(body, dict):
        body = "".join(part if isinstance(part, str) else "TOKEN" for part in body["Fn::Join"][1])
    return json.loads(body)["widgets"]


def test_dashboard_graphs_refused_values_summed_over_fields_beside_predictions(default_stack: Synthesized) -> None:
    widgets = _dashboard_widgets(default_stack)
    (refused,) = [w for w in widgets if "Refused" in w["properties"].get("title", "")]
    (served,) = [w for w in widgets if "Predictions served" in w["properties"].get("title", "")]
    assert refused["y"] == served["y"]  # the same row as predict's other graphs
    expressions = [metric[0]["expression"] for metric in refused["properties"]["metrics"]]
    # The fields summed by SEARCH over RefusedValues' real dimension set {service, field}, five-minute sums.
    assert expressions == [f"SUM({REFUSED_SEARCH})", REFUSED_SEARCH], refused
    labels = [metric[0]["label"] for metric in refused["properties"]["metrics"]]
    assert labels == ["all fields", "${PROP('Dim.field')}"]  # each field's line is named by the field


def _refused_alarm(stack: Synthesized) -> dict:
    (alarm,) = [
        a["Properties"]
        for a in stack.of_type("AWS::CloudWatch::Alarm").values()
        if any("RefusedValues" in query.get("Expression", "") for query in a["Properties"].get("Metrics", []))
    ]
    return alarm


def test_refused_values_alarm_sums_every_field_per_hour_and_notifies_the_topic(default_stack: Synthesized) -> None:
    (topic_id,) = default_stack.of_type("AWS::SNS::Topic")
    alarm = _refused_alarm(default_stack)
    (query,) = alarm["Metrics"]
    # Alarms cannot SEARCH; a Metrics Insights query sums the field series without naming them.
    assert query["Expression"] == (
        """SELECT SUM(RefusedValues) FROM SCHEMA("sml-dev", field, service) WHERE service = 'predict'"""
    )
    assert query["Period"] == 3600 and query["ReturnData"] is not False
    assert alarm["Threshold"] == DeploymentConfig().alarm_refused_values == 100
    assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold" and alarm["EvaluationPeriods"] == 1
    assert alarm["TreatMissingData"] == "notBreaching"  # no datapoint at all while nothing is refused
    assert alarm["AlarmActions"] == alarm["OKActions"] == [{"Ref": topic_id}]


def test_refused_values_alarm_threshold_comes_from_context(non_default_stack: Synthesized) -> None:
    alarm = _refused_alarm(non_default_stack)
    assert alarm["Threshold"] == int(NON_DEFAULT_CONTEXT["alarm_refused_values"])
    assert """SCHEMA("sml-prod", field, service)""" in alarm["Metrics"][0]["Expression"]


# --- network and database ---------------------------------------------------------------------


def test_database_lives_in_isolated_subnets_of_a_vpc_without_a_way_out(default_stack: Synthesized) -> None:
    for resource_type in ("AWS::EC2::InternetGateway", "AWS::EC2::NatGateway", "AWS::EC2::Route"):
        assert default_stack.of_type(resource_type) == {}
    (subnet_group,) = default_stack.of_type("AWS::RDS::DBSubnetGroup").values()
    for subnet_ref in subnet_group["Properties"]["SubnetIds"]:
        tags = _subnet_tags(default_stack, subnet_ref)
        assert tags["aws-cdk:subnet-type"] == "Isolated"
        assert tags["aws-cdk:subnet-name"] == "database"
        assert default_stack.resources[subnet_ref["Ref"]]["Properties"]["MapPublicIpOnLaunch"] is False


def test_the_vpc_spans_the_zones_context_names_or_else_the_first_two_of_the_region(
    default_stack: Synthesized, non_default_stack: Synthesized
) -> None:
    chosen = {s["Properties"]["AvailabilityZone"] for s in non_default_stack.of_type("AWS::EC2::Subnet").values()}
    assert chosen == {"us-east-1b", "us-east-1d"}
    taken = [s["Properties"]["AvailabilityZone"] for s in default_stack.of_type("AWS::EC2::Subnet").values()]
    assert {json.dumps(zone) for zone in taken} == {
        json.dumps({"Fn::Select": [index, {"Fn::GetAZs": ""}]}) for index in (0, 1)
    }


def test_database_is_encrypted_backed_up_current_and_unprotected_outside_prod(template: Template) -> None:
    template.has_resource_properties(
        "AWS::RDS::DBInstance",
        {
            "Engine": "mysql",
            # The major version only, so RDS's automatic minor upgrades never contradict the template.
            "EngineVersion": "8.4",
            "AutoMinorVersionUpgrade": True,
            "StorageEncrypted": True,
            "BackupRetentionPeriod": 7,
            "PubliclyAccessible": False,
            # A failed first deploy must be able to delete it (protection is prod's default only).
            "DeletionProtection": False,
            "MultiAZ": False,
            "DBInstanceClass": "db.t4g.micro",
            "MasterUserPassword": Match.object_like(
                {"Fn::Join": Match.array_with([Match.array_with(["{{resolve:secretsmanager:"])])}
            ),
        },
    )


def test_database_and_proxy_log_to_groups_the_stack_owns_with_a_retention(default_stack: Synthesized) -> None:
    instance_id = _only_id(default_stack.of_type("AWS::RDS::DBInstance"))
    instance = default_stack.resources[instance_id]
    groups = {
        key: value["Properties"]
        for key, value in default_stack.of_type("AWS::Logs::LogGroup").items()
        if _joined(value["Properties"].get("LogGroupName", "")).startswith("/aws/rds/instance/")
    }
    identifier = _joined(instance["Properties"]["DBInstanceIdentifier"])
    assert {_joined(g["LogGroupName"]) for g in groups.values()} == {
        f"/aws/rds/instance/{identifier}/{export}" for export in instance["Properties"]["EnableCloudwatchLogsExports"]
    }
    assert all(g["RetentionInDays"] == 30 for g in groups.values())
    assert set(groups) <= set(instance["DependsOn"])
    proxy_id = _only_id(default_stack.of_type("AWS::RDS::DBProxy"))
    proxy = default_stack.resources[proxy_id]
    (proxy_group_id,) = [
        key
        for key, value in default_stack.of_type("AWS::Logs::LogGroup").items()
        if _joined(value["Properties"].get("LogGroupName", "")) == f"/aws/rds/proxy/{_joined(proxy['Properties']['DBProxyName'])}"
    ]
    assert proxy_group_id in proxy["DependsOn"]


def test_database_names_change_with_each_creation_of_the_stack_so_a_failed_first_deploy_can_be_retried(
    default_stack: Synthesized,
) -> None:
    (instance,) = default_stack.of_type("AWS::RDS::DBInstance").values()
    (proxy,) = default_stack.of_type("AWS::RDS::DBProxy").values()
    stack_uuid_prefix = json.dumps(
        {"Fn::Select": [0, {"Fn::Split": ["-", {"Fn::Select": [2, {"Fn::Split": ["/", {"Ref": "AWS::StackId"}]}]}]}]}
    )
    assert _joined(instance["Properties"]["DBInstanceIdentifier"]) == f"sml-dev-mysql-{stack_uuid_prefix}"
    assert _joined(proxy["Properties"]["DBProxyName"]) == f"sml-dev-proxy-{stack_uuid_prefix}"
    outputs = default_stack.template["Outputs"]
    assert outputs["DatabaseInstanceId"]["Value"] == {"Ref": _only_id(default_stack.of_type("AWS::RDS::DBInstance"))}
    assert outputs["ProxyName"]["Value"] == {"Ref": _only_id(default_stack.of_type("AWS::RDS::DBProxy"))}


def test_database_options_come_from_context(non_default_stack: Synthesized) -> None:
    Template.from_json(non_default_stack.template).has_resource_properties(
        "AWS::RDS::DBInstance", {"DeletionProtection": False, "MultiAZ": True, "DBInstanceClass": "db.t4g.small"}
    )


def test_functions_reach_the_database_only_through_the_tls_proxy(default_stack: Synthesized) -> None:
    proxy_id = _only_id(default_stack.of_type("AWS::RDS::DBProxy"))
    proxy = default_stack.resources[proxy_id]["Properties"]
    assert proxy["RequireTLS"] is True
    for service in ("writer", "drift", "migrate"):
        variables = default_stack.function(service)[1]["Environment"]["Variables"]
        assert variables["SML_DB_HOST"] == {"Fn::GetAtt": [proxy_id, "Endpoint"]}
        assert "SML_DB_SECRET_ARN" not in variables
    instance_id = _only_id(default_stack.of_type("AWS::RDS::DBInstance"))
    instance_group = default_stack.resources[instance_id]["Properties"]["VPCSecurityGroups"][0]["Fn::GetAtt"][0]
    ingress = [
        r["Properties"]
        for r in default_stack.of_type("AWS::EC2::SecurityGroupIngress").values()
        if r["Properties"]["GroupId"]["Fn::GetAtt"][0] == instance_group
    ]
    assert [rule["SourceSecurityGroupId"] for rule in ingress] == [
        {"Fn::GetAtt": [proxy["VpcSecurityGroupIds"][0]["Fn::GetAtt"][0], "GroupId"]}
    ]


# --- model registry ---------------------------------------------------------------------------


def test_model_bucket_is_versioned_private_and_tls_only(template: Template, default_stack: Synthesized) -> None:
    template.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "VersioningConfiguration": {"Status": "Enabled"},
            "PublicAccessBlockConfiguration": {
                "BlockPublicAcls": True,
                "BlockPublicPolicy": True,
                "IgnorePublicAcls": True,
                "RestrictPublicBuckets": True,
            },
        },
    )
    (policy,) = default_stack.of_type("AWS::S3::BucketPolicy").values()
    assert _denies_plain_http(policy)
    (bucket,) = default_stack.of_type("AWS::S3::Bucket").values()
    rules = bucket["Properties"]["LifecycleConfiguration"]["Rules"]
    assert {"NoncurrentVersionExpiration": {"NoncurrentDays": 1}, "ExpiredObjectDeleteMarker": True, "Prefix": "archive/", "Status": "Enabled"} in rules


def test_no_lifecycle_rule_removes_or_moves_a_landing_object_before_it_is_converted(default_stack: Synthesized) -> None:
    (bucket,) = default_stack.of_type("AWS::S3::Bucket").values()
    covering = [rule for rule in bucket["Properties"]["LifecycleConfiguration"]["Rules"] if "archive/landing/x.json".startswith(rule.get("Prefix", ""))]
    assert covering  # the noncurrent-version rules do cover it, once it is converted and deleted
    current_actions = {"ExpirationInDays", "ExpirationDate", "Transitions", "Transition"}
    assert [rule for rule in covering if current_actions & set(rule)] == []


def test_predict_and_drift_may_read_only_the_champion_parameter_which_the_stack_leaves_to_the_cli(
    default_stack: Synthesized,
) -> None:
    assert default_stack.of_type("AWS::SSM::Parameter") == {}
    for service in ("predict", "drift"):
        ssm = [s for s in default_stack.statements_of(service) if any(a.startswith("ssm:") for a in _actions(s))]
        assert [_actions(s) for s in ssm] == [{"ssm:GetParameter"}]
        assert ssm[0]["Resource"]["Fn::Join"][1][-1] == ":parameter/sml-dev/breast-cancer/champion"
    assert default_stack.template["Outputs"]["ChampionParameter"]["Value"] == "/sml-dev/breast-cancer/champion"


# --- least privilege --------------------------------------------------------------------------


def _object_prefixes(statements: list[dict], action: str) -> set[str]:
    """The key patterns (after the bucket ARN) that ``action`` is allowed on."""
    prefixes = set()
    for statement in statements:
        if action in _actions(statement):
            resource = statement["Resource"]
            prefixes.add(
                resource["Fn::Join"][1][1] if isinstance(resource, dict) and "Fn::Join" in resource else resource
            )
    return prefixes


def _allows_object(statements: list[dict], action: str, key: str) -> bool:
    """Whether some statement allows ``action`` on the object ``key`` (``/`` and the key after the bucket ARN)."""
    return any(fnmatch.fnmatchcase(key, prefix) for prefix in _object_prefixes(statements, action))


def test_predict_may_read_its_model_and_send_events_but_not_touch_the_database(default_stack: Synthesized) -> None:
    statements = default_stack.statements_of("predict")
    actions = set().union(*(_actions(s) for s in statements))
    assert not any(a.startswith(("secretsmanager:", "rds", "sns:")) for a in actions)
    assert "s3:PutObject" not in actions and "sqs:ReceiveMessage" not in actions
    assert _object_prefixes(statements, "s3:GetObject") == {"/models/breast-cancer/*"}
    assert "sqs:SendMessage" in actions and "ssm:GetParameter" in actions


def test_writer_may_log_in_as_its_user_consume_events_and_put_landing_objects_only(default_stack: Synthesized) -> None:
    statements = default_stack.statements_of("writer")
    actions = set().union(*(_actions(s) for s in statements))
    assert not any(a.startswith(("sns:", "ssm:", "secretsmanager:")) for a in actions)
    assert {a for a in actions if a.startswith("s3:")} == {"s3:PutObject"}
    # Only the landing area: the tables' folders are the archive function's (it converts the landing objects).
    assert _object_prefixes(statements, "s3:PutObject") == {"/archive/landing/*"}
    assert not _allows_object(statements, "s3:PutObject", "/archive/predictions/model=m/date=2026-12-07/batch.parquet")
    assert not _allows_object(statements, "s3:PutObject", "/archive/other.json")
    assert default_stack.function("writer")[1]["Environment"]["Variables"]["SML_ARCHIVE_PREFIX"] == "archive/"
    assert "sqs:SendMessage" not in actions
    (connect,) = [s for s in statements if "rds-db:connect" in _actions(s)]
    assert connect["Resource"]["Fn::Join"][1][-1] == "/sml_writer"


def test_drift_writes_and_links_only_reports_and_publishes_only_to_the_alerts_topic(default_stack: Synthesized) -> None:
    statements = default_stack.statements_of("drift")
    assert _object_prefixes(statements, "s3:PutObject") == {"/reports/*"}
    assert _object_prefixes(statements, "s3:GetObject") == {"/models/breast-cancer/*", "/reports/*"}
    (topic_id,) = default_stack.of_type("AWS::SNS::Topic")
    (publish,) = [s for s in statements if "sns:Publish" in _actions(s)]
    assert publish["Resource"] == {"Ref": topic_id}
    assert not any(a.startswith("sqs:") for s in statements for a in _actions(s))


def test_only_unscopable_actions_are_granted_on_every_resource(default_stack: Synthesized) -> None:
    unscopable = {
        "xray:PutTraceSegments",
        "xray:PutTelemetryRecords",
        "ec2:CreateNetworkInterface",
        "ec2:DescribeNetworkInterfaces",
        "ec2:DescribeSubnets",
        "ec2:DeleteNetworkInterface",
        "ec2:AssignPrivateIpAddresses",
        "ec2:UnassignPrivateIpAddresses",
    }
    for service in ("predict", "writer", "drift", "migrate", "compact"):
        for statement in default_stack.statements_of(service):
            if statement["Resource"] == "*":
                assert _actions(statement) <= unscopable, (service, statement)


def test_the_archive_is_queried_through_projected_glue_tables_and_a_capped_engine_v3_workgroup(default_stack: Synthesized) -> None:
    (workgroup,) = default_stack.of_type("AWS::Athena::WorkGroup").values()
    configuration = workgroup["Properties"]["WorkGroupConfiguration"]
    assert configuration["EngineVersion"]["SelectedEngineVersion"] == "Athena engine version 3"
    assert configuration["BytesScannedCutoffPerQuery"] == 10_000_000_000
    assert configuration["EnforceWorkGroupConfiguration"] is True
    assert configuration["ResultConfiguration"]["EncryptionConfiguration"] == {"EncryptionOption": "SSE_S3"}
    assert "/athena-results/" in json.dumps(configuration["ResultConfiguration"]["OutputLocation"])
    tables = {table["Properties"]["TableInput"]["Name"]: table["Properties"]["TableInput"] for table in default_stack.of_type("AWS::Glue::Table").values()}
    assert set(tables) == {"predictions", "ground_truth", "predict_refusals"}
    predictions = tables["predictions"]
    assert [key["Name"] for key in predictions["PartitionKeys"]] == ["model", "date"]
    assert predictions["Parameters"]["projection.enabled"] == "true"
    assert predictions["Parameters"]["projection.model.values"] == "breast-cancer"
    assert "model=${model}/date=${date}/" in json.dumps(predictions["Parameters"]["storage.location.template"])
    assert [key["Name"] for key in tables["ground_truth"]["PartitionKeys"]] == ["date"]
    assert not default_stack.of_type("AWS::Glue::Crawler")
    (bucket,) = default_stack.of_type("AWS::S3::Bucket").values()
    rules = bucket["Properties"]["LifecycleConfiguration"]["Rules"]
    assert any(rule.get("Prefix") == "athena-results/" and rule.get("ExpirationInDays") == 7 for rule in rules)


# --- the weekly run's window source and the archive's compaction ------------------------------


def _listing_prefixes(statements: list[dict]) -> set[str]:
    """The ``s3:prefix`` patterns ``s3:ListBucket`` is allowed for (every grant of it carries one)."""
    found = set()
    for statement in statements:
        if "s3:ListBucket" in _actions(statement):
            found |= set(statement["Condition"]["StringLike"]["s3:prefix"])
    return found


def test_drift_reads_the_database_by_default_and_is_given_nothing_of_the_archive(default_stack: Synthesized) -> None:
    statements = default_stack.statements_of("drift")
    variables = default_stack.function("drift")[1]["Environment"]["Variables"]
    assert variables["SML_WINDOW_SOURCE"] == "database" and "SML_ARCHIVE_PREFIX" not in variables
    assert "EphemeralStorage" not in default_stack.function("drift")[1]
    assert not any(prefix.startswith(("/archive/", "/athena-results/")) for action in ("s3:GetObject", "s3:PutObject") for prefix in _object_prefixes(statements, action))
    assert not any(a.startswith(("athena:", "glue:")) for s in statements for a in _actions(s))
    assert not any(p.startswith("archive/") for p in _listing_prefixes(statements))


def test_a_duckdb_drift_function_may_read_and_list_the_archive_only(duckdb_stack: Synthesized) -> None:
    statements = duckdb_stack.statements_of("drift")
    variables = duckdb_stack.function("drift")[1]["Environment"]["Variables"]
    assert (variables["SML_WINDOW_SOURCE"], variables["SML_ARCHIVE_PREFIX"]) == ("duckdb", "archive/")
    assert variables["SML_LABEL_HORIZON_DAYS"] == "7"  # which of the archive's label days a window's quality reads
    assert _object_prefixes(statements, "s3:GetObject") == {"/models/breast-cancer/*", "/reports/*", "/archive/*"}
    assert _object_prefixes(statements, "s3:PutObject") == {"/reports/*"}
    assert not any(a in ("s3:DeleteObject",) or a.startswith(("athena:", "glue:")) for s in statements for a in _actions(s))
    assert _listing_prefixes(statements) >= {"archive/", "archive/*"} and "athena-results/" not in _listing_prefixes(statements)
    # It downloads the window's days to /tmp (sml.archive.sources): Lambda's default 512 MB holds ~1.8M events.
    assert duckdb_stack.function("drift")[1]["EphemeralStorage"] == {"Size": 10240}
    services = [_joined(e["Properties"]["ServiceName"]) for e in duckdb_stack.of_type("AWS::EC2::VPCEndpoint").values()]
    assert not any(name.endswith(".athena") for name in services)


def test_an_athena_drift_function_may_query_the_workgroup_read_the_catalog_the_archive_and_its_results(non_default_stack: Synthesized) -> None:
    statements = non_default_stack.statements_of("drift")
    variables = non_default_stack.function("drift")[1]["Environment"]["Variables"]
    (workgroup,) = non_default_stack.of_type("AWS::Athena::WorkGroup").values()
    (database,) = non_default_stack.of_type("AWS::Glue::Database").values()
    database_name = database["Properties"]["DatabaseInput"]["Name"]
    assert variables["SML_WINDOW_SOURCE"] == "athena" and variables["SML_ARCHIVE_PREFIX"] == "archive/"
    assert (variables["SML_ATHENA_WORKGROUP"], variables["SML_ATHENA_DATABASE"]) == (workgroup["Properties"]["Name"], database_name)
    (athena,) = [s for s in statements if any(a.startswith("athena:") for a in _actions(s))]
    assert _actions(athena) == {"athena:StartQueryExecution", "athena:GetQueryExecution", "athena:GetQueryResults", "athena:StopQueryExecution"}
    assert _joined(athena["Resource"]).endswith(f":workgroup/{workgroup['Properties']['Name']}")
    (glue,) = [s for s in statements if any(a.startswith("glue:") for a in _actions(s))]
    assert all(a.startswith("glue:Get") for a in _actions(glue))
    assert sorted(_joined(resource).rsplit(":", 1)[1] for resource in glue["Resource"]) == sorted(
        ["catalog", f"database/{database_name}", f"table/{database_name}/*"]
    )
    assert _object_prefixes(statements, "s3:GetObject") == {"/models/breast-cancer/*", "/reports/*", "/archive/*", "/athena-results/*"}
    assert _object_prefixes(statements, "s3:PutObject") == {"/reports/*", "/athena-results/*"}
    assert _listing_prefixes(statements) == {"models/breast-cancer/", "models/breast-cancer/*", "archive/", "archive/*", "athena-results/", "athena-results/*"}
    assert not any("s3:DeleteObject" in _actions(s) for s in statements)
    services = [_joined(e["Properties"]["ServiceName"]) for e in non_default_stack.of_type("AWS::EC2::VPCEndpoint").values()]
    assert any(name.endswith(".athena") for name in services)


def test_the_archive_function_converts_every_five_minutes_compacts_daily_and_may_only_read_write_and_delete_under_archive(
    default_stack: Synthesized,
) -> None:
    compact_id, function = default_stack.function("compact")
    assert "VpcConfig" not in function
    assert function["ImageConfig"]["Command"] == ["functions.drift.compact.handler"]
    assert function["Environment"]["Variables"]["SML_ARCHIVE_PREFIX"] == "archive/"
    # A model version's day is downloaded, rewritten and spilled under /tmp: Lambda's default 512 MB
    # held under a million events (~277 B each, twice over), far below a day at the documented scale.
    assert function["EphemeralStorage"] == {"Size": 10240}
    statements = default_stack.statements_of("compact")
    s3_actions = {a for s in statements for a in _actions(s) if a.startswith("s3:")}
    assert s3_actions == {"s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket"}
    for action in ("s3:GetObject", "s3:PutObject", "s3:DeleteObject"):
        assert _object_prefixes(statements, action) == {"/archive/*"}
    assert _listing_prefixes(statements) == {"archive/", "archive/*"}
    assert not any(a.startswith(("rds", "sns:", "ssm:", "secretsmanager:", "sqs:")) for s in statements for a in _actions(s))
    # The conversion reads and deletes the landing objects.
    for action in ("s3:GetObject", "s3:DeleteObject"):
        assert _allows_object(statements, action, "/archive/landing/20261207T120000000000Z,0123456789abcdef.json")
    rules = {r["Properties"]["ScheduleExpression"]: r["Properties"] for r in default_stack.of_type("AWS::Events::Rule").values()
             if any(t["Arn"] == {"Fn::GetAtt": [compact_id, "Arn"]} for t in r["Properties"]["Targets"])}
    assert set(rules) == {"cron(45 0 * * ? *)", "cron(2/5 * * * ? *)"}
    (daily,) = rules["cron(45 0 * * ? *)"]["Targets"]
    assert "Input" not in daily and "InputTransformer" not in daily  # the scheduled event's time: convert, then compact the day before
    from functions.drift.compact import CONVERT_ACTION

    # Every 5 minutes, off the daily run's minute 45: the conversion alone.
    (conversion,) = rules["cron(2/5 * * * ? *)"]["Targets"]
    assert json.loads(conversion["Input"]) == {"sml_action": CONVERT_ACTION}
    # Two conversions at once are harmless; a reservation would stop a default deploy in a low-quota account.
    assert "ReservedConcurrentExecutions" not in function
    (alarm,) = [a["Properties"] for a in default_stack.of_type("AWS::CloudWatch::Alarm").values()
                if a["Properties"].get("MetricName") == "Errors" and a["Properties"]["Dimensions"][0]["Value"] == {"Ref": compact_id}]
    assert alarm["Threshold"] == 1 and "landing object" in _joined(alarm["AlarmDescription"])


def test_the_writer_lands_where_the_conversion_reads() -> None:
    from infra import names
    from sml.archive.landing import landing_prefix
    from sml.archive.layout import ArchiveLocation

    assert names.ARCHIVE_LANDING_PREFIX == landing_prefix(ArchiveLocation("bucket", names.ARCHIVE_PREFIX))


def test_the_glue_tables_declare_every_column_the_archive_writes_for_every_model(default_stack: Synthesized) -> None:
    from sml.archive.parquet import FIXED_COLUMNS

    glue_types = {"string": "string", "int16": "smallint", "int32": "int", "timestamp[us, tz=UTC]": "timestamp"}
    tables = {table["Properties"]["TableInput"]["Name"]: table["Properties"]["TableInput"] for table in default_stack.of_type("AWS::Glue::Table").values()}
    for name, schema in FIXED_COLUMNS.items():
        declared = [(column["Name"], column["Type"]) for column in tables[name]["StorageDescriptor"]["Columns"]]
        assert declared == [(field.name, glue_types[str(field.type)]) for field in schema], name
