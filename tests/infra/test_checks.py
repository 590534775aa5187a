"""cdk-nag and cfn-lint pass on every synthesized template, and each acknowledgement says why."""

from __future__ import annotations

import json

import aws_cdk as cdk
import pytest
from aws_cdk import aws_sqs as sqs
from cfnlint.api import ManualArgs, lint

from infra.nag import PLUGIN_NAME, add_nag_checks
from tests.infra.conftest import Synthesized

pytestmark = pytest.mark.infra

MIN_REASON_LENGTH = 40


@pytest.fixture(scope="module", params=["default_stack", "non_default_stack", "multi_model_stack"])
def synthesized(request: pytest.FixtureRequest) -> Synthesized:
    return request.getfixturevalue(request.param)


def _acknowledgements(synthesized: Synthesized) -> dict[str, str]:
    """Construct path + rule id -> reason, for every acknowledged cdk-nag finding."""
    metadata = json.loads(next(synthesized.outdir.glob("*.metadata.json")).read_text())
    found = {}
    for path, entries in metadata.items():
        for entry in entries:
            if entry["type"] == "aws:cdk:acknowledged-rules":
                found.update(
                    {
                        f"{path} {rule}": reason
                        for rule, reason in entry["data"].items()
                        if rule.startswith(f"{PLUGIN_NAME}::")
                    }
                )
    return found


def test_nag_checks_reject_an_unacknowledged_finding(tmp_path) -> None:
    app = cdk.App(outdir=str(tmp_path))
    stack = cdk.Stack(app, "NagControl")
    sqs.Queue(stack, "PlainQueue")
    add_nag_checks(app)
    with pytest.raises(RuntimeError, match="ValidationFailed"):
        app.synth()
    report = json.loads((tmp_path / "validation-report.json").read_text())
    rules = {violation["ruleName"] for plugin in report["pluginReports"] for violation in plugin["violations"]}
    assert "AwsSolutions-SQS4" in rules


def test_stack_has_no_unacknowledged_nag_finding(synthesized: Synthesized) -> None:
    report = json.loads((synthesized.outdir / "validation-report.json").read_text())
    assert [plugin for plugin in report["pluginReports"] if plugin.get("conclusion") != "success"] == []
    assert _acknowledgements(synthesized), "the stack's acknowledgements were not recorded"


def test_every_nag_acknowledgement_gives_a_reason(synthesized: Synthesized) -> None:
    short = {
        finding: reason for finding, reason in _acknowledgements(synthesized).items() if len(reason) < MIN_REASON_LENGTH
    }
    assert short == {}


def test_template_has_no_cfn_lint_errors(synthesized: Synthesized) -> None:
    matches = lint(json.dumps(synthesized.template), config=ManualArgs(regions=["us-east-1", "eu-west-1"]))
    errors = [f"{match.rule.id} {match.path} {match.message}" for match in matches if match.rule.id.startswith("E")]
    assert errors == []


def test_image_assets_hold_only_what_each_image_uses(default_stack: Synthesized) -> None:
    # An asset's content is its image's hash: anything else in it (README.md, the CLI, another
    # function's code, sql/ for predict) would rebuild and redeploy the image when it changes.
    allowed = {".dockerignore", "pyproject.toml", "constraints.txt", "shared", "functions", "sql"}
    # Image assets only (the CDK trigger's provider is a zip asset); the migration function reuses
    # the writer's image, so three images are built for four functions.
    manifest = json.loads(next(default_stack.outdir.glob("*.assets.json")).read_text())
    assets = {
        image["source"]["dockerFile"]: default_stack.outdir / image["source"]["directory"]
        for image in manifest["dockerImages"].values()
    }
    assert set(assets) == {"functions/predict/Dockerfile", "functions/writer/Dockerfile", "functions/drift/Dockerfile"}
    for dockerfile, asset_dir in assets.items():
        function = dockerfile.split("/")[1]
        assert {entry.name for entry in asset_dir.iterdir()} <= allowed, dockerfile
        assert not list(asset_dir.rglob("__pycache__"))
        assert {entry.name for entry in (asset_dir / "functions").iterdir()} == {"__init__.py", function}, dockerfile
        assert not {"cli", "local", "demo"} & {entry.name for entry in (asset_dir / "shared" / "sml").iterdir()}, dockerfile
    assert not (assets["functions/predict/Dockerfile"] / "sql").exists()
    assert (assets["functions/writer/Dockerfile"] / "sql").is_dir() and (assets["functions/drift/Dockerfile"] / "sql").is_dir()
