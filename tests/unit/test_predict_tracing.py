"""Predict builds a Powertools Tracer only where Powertools would trace."""

from __future__ import annotations

import pytest

from functions.predict.app import tracing_enabled


@pytest.mark.parametrize(
    ("environ", "enabled"),
    [
        ({}, False),
        ({"LAMBDA_TASK_ROOT": "/var/task"}, True),
        ({"LAMBDA_TASK_ROOT": "/var/task", "POWERTOOLS_TRACE_DISABLED": "true"}, False),
        ({"LAMBDA_TASK_ROOT": "/var/task", "POWERTOOLS_TRACE_DISABLED": "0"}, True),
        ({"LAMBDA_TASK_ROOT": "/var/task", "AWS_SAM_LOCAL": "true"}, False),
        ({"LAMBDA_TASK_ROOT": "/var/task", "AWS_CHALICE_CLI_MODE": "true"}, False),
    ],
)
def test_tracing_follows_powertools_rules(environ: dict[str, str], enabled: bool) -> None:
    from aws_lambda_powertools import Tracer

    assert tracing_enabled(environ) is enabled
    with pytest.MonkeyPatch.context() as patch:
        for name in ("LAMBDA_TASK_ROOT", "POWERTOOLS_TRACE_DISABLED", "AWS_SAM_LOCAL", "AWS_CHALICE_CLI_MODE"):
            patch.delenv(name, raising=False)
        for name, value in environ.items():
            patch.setenv(name, value)
        assert (not Tracer._is_tracer_disabled()) is enabled  # the rule it mirrors
