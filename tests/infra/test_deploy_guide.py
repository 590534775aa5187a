"""docs/deploy.md runs literally: the commands a first deploy copies work for every kind of credentials,
and every stack output the guide reads exists."""

from __future__ import annotations

import re

import pytest

from infra.names import REPO_ROOT
from tests.infra.conftest import Synthesized

pytestmark = pytest.mark.infra

GUIDE = (REPO_ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")


def test_the_region_set_in_the_environment_is_kept() -> None:
    exports = [line for line in GUIDE.splitlines() if line.strip().startswith("export AWS_REGION=")]
    assert exports and all("${AWS_REGION:-" in line for line in exports)


def test_curl_signs_with_exported_credentials_for_sso_and_profile_users() -> None:
    first_curl = GUIDE.index("curl --aws-sigv4")
    assert "aws configure export-credentials --format env" in GUIDE[:first_curl]


def test_the_first_deploy_checks_are_there() -> None:
    for command in ("aws rds describe-db-proxy-targets", "aws cloudwatch set-alarm-state", "aws lambda get-account-settings"):
        assert command in GUIDE, command
    assert "AVAILABLE" in GUIDE


def test_the_guide_migrates_in_the_deploy_not_by_hand() -> None:
    assert '"sml_action": "migrate"' not in GUIDE
    assert "`sml replay`" not in GUIDE and "`sml dlq replay`" in GUIDE


def test_every_output_the_guide_reads_exists(default_stack: Synthesized) -> None:
    read = set(re.findall(r"\$\(out (\w+)\)", GUIDE))
    assert {"PredictCallerPolicyArn", "MigrateLogGroup", "MigrateFunctionName", "FunctionUrl"} <= read
    assert read <= set(default_stack.template["Outputs"])


def test_the_guide_recovers_a_rollback_stuck_on_the_migration_trigger() -> None:
    assert "UPDATE_ROLLBACK_FAILED" in GUIDE
    assert "continue-update-rollback" in GUIDE and "--resources-to-skip" in GUIDE
    assert "newer_than_image" in GUIDE


def test_the_guide_recovers_a_failed_first_deploy_in_prod() -> None:
    assert "ROLLBACK_FAILED" in GUIDE
    assert "--no-deletion-protection" in GUIDE and "aws cloudformation delete-stack" in GUIDE
    assert '--db-proxy-name "$STACK-proxy"' not in GUIDE  # the proxy name carries the stack's suffix


def test_the_guide_runs_the_pre_deploy_checks_before_the_first_deploy() -> None:
    assert GUIDE.index("python -m infra.preflight") < GUIDE.index("## 2. Deploy")
    assert "availability_zones" in GUIDE and "use1-az3" in GUIDE
    checks = GUIDE[GUIDE.index("## Pre-deploy checks") : GUIDE.index("## 1. Bootstrap")]
    assert "reserved concurrency" in checks and "L-B99A9384" in checks


def test_the_guide_asks_for_a_supported_node_and_says_what_replaces_the_xray_sdk() -> None:
    assert "Node.js 20+" not in GUIDE and "Node.js 22" in GUIDE
    assert "2027-02-25" in GUIDE and "OpenTelemetry" in GUIDE


def test_the_guide_is_accurate_about_the_dlq_proxy_and_what_destroy_leaves() -> None:
    assert "DLQ kept\n  14 days" not in GUIDE and "original enqueue time" in GUIDE
    assert "lends a connection" not in GUIDE and "ConnectionBorrowTimeout" in GUIDE
    assert "every log group" not in GUIDE and "AWSCDKTriggerCustomResourceProvider" in GUIDE
    assert "aws lambda add-permission" in GUIDE and "--invoked-via-function-url" in GUIDE
