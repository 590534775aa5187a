"""Synthesize the CDK app once per session per context and share the result with every infra test."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

# Node 20 prints an end-of-life banner on every jsii start; the value is the major version.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

# Every switch away from its default, so one extra synthesis covers the other branch of each.
NON_DEFAULT_CONTEXT = {
    "environment": "prod",
    "function_url_auth": "NONE",
    "alert_email": "ops@example.com",
    "deletion_protection": "false",
    "db_multi_az": True,
    "db_instance_size": "small",
    "capture_sampling_rate": "0.25",
    "capture_mode": "inline",
    "writer_batch_size": 50,
    "writer_batching_window_seconds": 2,
    "writer_max_concurrency": 10,
    "drift_feature_floors": {"mean_texture": "0.1sd"},
    "dq_max_out_of_range": "0.01",
    "dq_max_unseen_category": 0.005,
    "dq_max_refused_rate": "0.03",
    "alarm_refused_values": "250",
    "availability_zones": "us-east-1b,us-east-1d",
    "retention_days": "40",
    "label_horizon_days": 10,
    "drift_memory_mib": "4096",
    "drift_timeout_minutes": 10,
    "drift_window_source": "athena",
}


@dataclass(frozen=True)
class Synthesized:
    """One synthesized cloud assembly: the stack's template and what CDK reported about it."""

    outdir: Path
    template: dict
    messages: list[tuple[str, str, str]]  # (level, construct path, text)

    @property
    def resources(self) -> dict[str, dict]:
        return self.template["Resources"]

    def of_type(self, resource_type: str) -> dict[str, dict]:
        """Logical id -> resource for every resource of ``resource_type``."""
        return {key: value for key, value in self.resources.items() if value["Type"] == resource_type}

    def function(self, service: str) -> tuple[str, dict]:
        """(logical id, properties) of the Lambda function whose POWERTOOLS_SERVICE_NAME is ``service``."""
        for key, resource in self.of_type("AWS::Lambda::Function").items():
            variables = resource["Properties"].get("Environment", {}).get("Variables", {})
            if variables.get("POWERTOOLS_SERVICE_NAME") == service:
                return key, resource["Properties"]
        raise AssertionError(f"no function with POWERTOOLS_SERVICE_NAME={service}")

    def statements_of(self, service: str) -> list[dict]:
        """Every IAM statement attached to the execution role of the ``service`` function."""
        _, function = self.function(service)
        role_id = function["Role"]["Fn::GetAtt"][0]
        assert not self.resources[role_id]["Properties"].get("ManagedPolicyArns"), (
            "execution roles carry no managed policy"
        )
        statements = []
        for policy in self.of_type("AWS::IAM::Policy").values():
            if {"Ref": role_id} in policy["Properties"]["Roles"]:
                statements.extend(policy["Properties"]["PolicyDocument"]["Statement"])
        return statements


def _synthesize(context: dict, outdir: Path) -> Synthesized:
    from infra.app import STACK_ID, build_app

    assembly = build_app(context, outdir=str(outdir)).synth()
    artifact = assembly.get_stack_artifact(STACK_ID)
    messages = [(message.level.name.lower(), message.id, str(message.entry.data)) for message in artifact.messages]
    return Synthesized(
        outdir=outdir, template=json.loads(Path(artifact.template_full_path).read_text()), messages=messages
    )


@pytest.fixture(scope="session")
def default_stack(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """The app synthesized with no context (the defaults), cdk-nag included."""
    return _synthesize({}, tmp_path_factory.mktemp("cdk-default"))


@pytest.fixture(scope="session")
def non_default_stack(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """The app synthesized with :data:`NON_DEFAULT_CONTEXT`, cdk-nag included."""
    return _synthesize(NON_DEFAULT_CONTEXT, tmp_path_factory.mktemp("cdk-non-default"))


@pytest.fixture(scope="session")
def duckdb_stack(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """The app synthesized with a drift function that reads its window with DuckDB from the archive."""
    return _synthesize({"drift_window_source": "duckdb"}, tmp_path_factory.mktemp("cdk-duckdb"))


MULTI_MODEL_CONTEXT = {"models": "breast-cancer,wine"}


@pytest.fixture(scope="session")
def multi_model_stack(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """The app synthesized for two models (:data:`MULTI_MODEL_CONTEXT`), cdk-nag included."""
    return _synthesize(MULTI_MODEL_CONTEXT, tmp_path_factory.mktemp("cdk-multi-model"))
