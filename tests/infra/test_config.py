"""Deployment options are read from CDK context and refused with the key's name when unusable."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from infra.config import ContextError, DeploymentConfig, config_from_context
from infra.names import REPO_ROOT


def test_no_context_gives_the_documented_defaults() -> None:
    config = config_from_context({}.get)
    assert config == DeploymentConfig()
    assert config.function_url_auth == "AWS_IAM"
    assert config.deletion_protection is False
    assert config.deployed_app_name == "sml-dev"


def test_cli_strings_and_json_values_both_parse() -> None:
    from_cli = config_from_context(
        {
            "deletion_protection": "False",
            "capture_sampling_rate": "0.5",
            "writer_batch_size": "20",
            "db_multi_az": "true",
        }.get
    )
    from_json = config_from_context(
        {"deletion_protection": False, "capture_sampling_rate": 0.5, "writer_batch_size": 20, "db_multi_az": True}.get
    )
    assert from_cli == from_json
    assert (
        from_cli.deletion_protection,
        from_cli.capture_sampling_rate,
        from_cli.writer_batch_size,
        from_cli.db_multi_az,
    ) == (
        False,
        0.5,
        20,
        True,
    )


@pytest.mark.parametrize(
    ("context", "key", "fragment"),
    [
        ({"function_url_auth": "PUBLIC"}, "function_url_auth", "AWS_IAM, NONE"),
        ({"capture_sampling_rate": "1.5"}, "capture_sampling_rate", "between 0.0 and 1.0"),
        ({"capture_sampling_rate": "half"}, "capture_sampling_rate", "must be a number"),
        ({"capture_mode": "later"}, "capture_mode", "after_response, inline"),
        ({"deletion_protection": "yes"}, "deletion_protection", "true or false"),
        ({"db_instance_size": "huge"}, "db_instance_size", "micro"),
        ({"alert_email": "ops at example"}, "alert_email", "not an email address"),
        ({"environment": "Prod"}, "environment", "lower-case"),
        ({"writer_batch_size": 2.5}, "writer_batch_size", "integer"),
        ({"writer_max_concurrency": 1}, "writer_max_concurrency", "between 2"),
        ({"writer_batching_window_seconds": 0}, "writer_batching_window_seconds", "above 10"),
        ({"drift_feature_floors": "{mean_texture: 0.05}"}, "drift_feature_floors", "is not JSON"),
        ({"drift_feature_floors": "[0.05]"}, "drift_feature_floors", "must be a JSON object"),
        ({"dq_max_out_of_range": "1.5"}, "dq_max_out_of_range", "between 0.0 and 1.0"),
        ({"dq_max_unseen_category": "some"}, "dq_max_unseen_category", "must be a number"),
        ({"dq_max_missing_excess": True}, "dq_max_missing_excess", "must be a number"),
        ({"dq_max_refused_rate": "-0.01"}, "dq_max_refused_rate", "between 0.0 and 1.0"),
        ({"alarm_refused_values": "0"}, "alarm_refused_values", "between 1"),
        ({"alarm_refused_values": "5%"}, "alarm_refused_values", "must be an integer"),
        ({"alarm_refused_values": 0.05}, "alarm_refused_values", "must be an integer"),
        ({"availability_zones": "us-east-1a"}, "availability_zones", "at least two"),
        ({"availability_zones": "us-east-1a,eu-west-1b"}, "availability_zones", "more than one region"),
        ({"availability_zones": "use1-az1,use1-az2"}, "availability_zones", "not an Availability Zone name"),
        ({"availability_zones": "us-east-1a,us-east-1a"}, "availability_zones", "twice"),
        ({"availability_zones": "[us-east-1a"}, "availability_zones", "not a JSON array"),
        ({"availability_zones": {"a": 1}}, "availability_zones", "must be a list"),
        ({"retention_days": "0"}, "retention_days", "between 1"),
        ({"retention_days": "a month"}, "retention_days", "must be an integer"),
        ({"label_horizon_days": "-1"}, "label_horizon_days", "between 0.0"),
        ({"drift_memory_mib": "20000"}, "drift_memory_mib", "between 128 and 10240"),
        ({"drift_timeout_minutes": "16"}, "drift_timeout_minutes", "between 1 and 15"),
        ({"drift_window_source": "mysql"}, "drift_window_source", "athena"),
    ],
)
def test_unusable_values_name_their_context_key(context: dict, key: str, fragment: str) -> None:
    with pytest.raises(ContextError, match=fragment) as raised:
        config_from_context(context.get)
    assert raised.value.key == key
    assert str(raised.value).startswith(f"context {key}: ")


def test_drift_floors_pass_through_as_compact_json_from_the_cli_or_cdk_json() -> None:
    from_cli = config_from_context({"drift_feature_floors": '{"mean_texture": "0.1sd", "grade": 0.05}'}.get)
    from_json = config_from_context({"drift_feature_floors": {"grade": 0.05, "mean_texture": "0.1sd"}}.get)
    assert from_cli.drift_feature_floors == from_json.drift_feature_floors == '{"grade":0.05,"mean_texture":"0.1sd"}'
    assert DeploymentConfig().drift_feature_floors is None
    assert config_from_context({"predict_range_warnings": "true"}.get).predict_range_warnings is True
    assert DeploymentConfig().predict_range_warnings is False


def test_the_champion_ttl_is_a_whole_number_of_seconds_from_1_to_a_day() -> None:
    assert DeploymentConfig().champion_ttl_seconds == 60
    assert config_from_context({"champion_ttl_seconds": "15"}.get).champion_ttl_seconds == 15
    for bad in ("0", "86401", "soon"):
        with pytest.raises(ContextError, match="champion_ttl_seconds"):
            config_from_context({"champion_ttl_seconds": bad}.get)


def test_data_quality_thresholds_are_unset_by_default_and_read_as_shares_from_the_cli_or_cdk_json() -> None:
    assert (DeploymentConfig().dq_max_out_of_range, DeploymentConfig().dq_max_unseen_category, DeploymentConfig().dq_max_missing_excess, DeploymentConfig().dq_max_refused_rate) == (None, None, None, None)
    from_cli = config_from_context({"dq_max_out_of_range": "0.01", "dq_max_unseen_category": "0", "dq_max_missing_excess": "1", "dq_max_refused_rate": "0.02"}.get)
    from_json = config_from_context({"dq_max_out_of_range": 0.01, "dq_max_unseen_category": 0, "dq_max_missing_excess": 1, "dq_max_refused_rate": 0.02}.get)
    assert from_cli == from_json
    assert (from_cli.dq_max_out_of_range, from_cli.dq_max_unseen_category, from_cli.dq_max_missing_excess, from_cli.dq_max_refused_rate) == (0.01, 0.0, 1.0, 0.02)


def test_refused_values_alarm_threshold_is_a_count_per_hour_from_the_cli_or_cdk_json() -> None:
    assert DeploymentConfig().alarm_refused_values == 100
    assert config_from_context({"alarm_refused_values": "250"}.get).alarm_refused_values == 250
    assert config_from_context({"alarm_refused_values": 250}.get).alarm_refused_values == 250


def test_writer_concurrency_must_stay_inside_the_database_connection_budget() -> None:
    budget = DeploymentConfig(db_instance_size="micro").db_connection_budget
    assert config_from_context({"writer_max_concurrency": budget}.get).writer_max_concurrency == budget
    with pytest.raises(ContextError, match="connection budget") as raised:
        config_from_context({"writer_max_concurrency": budget + 1}.get)
    assert raised.value.key == "writer_max_concurrency"
    bigger = config_from_context({"writer_max_concurrency": budget + 1, "db_instance_size": "small"}.get)
    assert bigger.writer_max_concurrency == budget + 1


def test_connection_budget_grows_with_the_instance() -> None:
    sizes = ["micro", "small", "medium", "large"]
    budgets = [DeploymentConfig(db_instance_size=size).db_connection_budget for size in sizes]
    assert budgets == sorted(budgets) and len(set(budgets)) == len(budgets)
    assert budgets[0] >= DeploymentConfig().writer_max_concurrency


@pytest.mark.infra
def test_the_cdk_entry_point_reports_a_bad_value_in_one_line(tmp_path) -> None:
    # A subprocess, as under the CDK CLI: the jsii runtime of this process would not see a new environment.
    environment = {**os.environ, "CDK_CONTEXT_JSON": '{"function_url_auth": "OPEN"}', "CDK_OUTDIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "infra.app"],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == "infra: context function_url_auth: 'OPEN' must be one of AWS_IAM, NONE"
    assert list(tmp_path.iterdir()) == []


def test_prod_defaults_to_a_standby_a_month_of_backups_and_deletion_protection_and_context_still_overrides() -> None:
    dev = config_from_context({}.get)
    prod = config_from_context({"environment": "prod"}.get)
    assert (dev.db_multi_az, dev.db_backup_retention_days, dev.deletion_protection) == (False, 7, False)
    assert (prod.db_multi_az, prod.db_backup_retention_days, prod.deletion_protection) == (True, 30, True)
    assert config_from_context({"environment": "staging"}.get).deletion_protection is False
    assert config_from_context({"deletion_protection": "true"}.get).deletion_protection is True
    cheap_prod = config_from_context({"environment": "prod", "db_multi_az": "false", "db_backup_retention_days": 14}.get)
    assert (cheap_prod.db_multi_az, cheap_prod.db_backup_retention_days) == (False, 14)
    with pytest.raises(ContextError, match="between 1 and 35") as raised:
        config_from_context({"db_backup_retention_days": 36}.get)
    assert raised.value.key == "db_backup_retention_days"


def test_availability_zones_come_from_the_cli_or_cdk_json_and_default_to_none() -> None:
    assert DeploymentConfig().availability_zones == ()
    from_cli = config_from_context({"availability_zones": "us-east-1a, us-east-1d"}.get)
    from_json = config_from_context({"availability_zones": ["us-east-1a", "us-east-1d"]}.get)
    assert from_cli.availability_zones == from_json.availability_zones == ("us-east-1a", "us-east-1d")
