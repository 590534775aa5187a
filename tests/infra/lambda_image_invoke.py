"""Invoke a Lambda handler as the Lambda runtime does, from one task root and the standard library only.

Run as ``python -I -S lambda_image_invoke.py REQUEST REPORT`` (paths of JSON files). ``-I -S``
leaves only the standard library on ``sys.path`` (no site-packages, no ``PYTHONPATH``, not this
file's folder); the task root then goes first, as on Lambda. So this file may use the standard
library only.

REQUEST: ``{"task_root", "handler" ("module.function"), "function_name", "events": [...],
"probe_modules": [...]}``. REPORT: ``{"sys_path", "importable" (probe -> bool, checked before the
handler is imported), "responses" (one per event, as the runtime serialises them to JSON),
"module_files" (every loaded module -> its file, or null)}``.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any

ACCOUNT_ID = "123456789012"
REGION = "us-east-1"
TIMEOUT_S = 60.0


@dataclass(frozen=True)
class LambdaContext:
    """The attributes and method of the runtime's context object that the handlers and Powertools read."""

    function_name: str
    aws_request_id: str
    deadline_epoch_s: float
    memory_limit_in_mb: int = 1024
    function_version: str = "$LATEST"
    log_stream_name: str = "image-test"

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{self.function_name}"

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline_epoch_s - time.time()) * 1000))


def main(request_path: str, report_path: str) -> None:
    """Import the handler from the task root, invoke it once per event, write the report."""
    with open(request_path, encoding="utf-8") as file:
        request = json.load(file)
    sys.path.insert(0, request["task_root"])
    importable = {name: importlib.util.find_spec(name) is not None for name in request["probe_modules"]}
    module_name, _, function_name = request["handler"].rpartition(".")
    handler = getattr(importlib.import_module(module_name), function_name)
    responses: list[Any] = []
    for event in request["events"]:
        context = LambdaContext(request["function_name"], str(uuid.uuid4()), time.time() + TIMEOUT_S)
        responses.append(json.loads(json.dumps(handler(event, context))))
    report = {
        "sys_path": sys.path,
        "importable": importable,
        "responses": responses,
        "module_files": {name: getattr(module, "__file__", None) for name, module in sorted(sys.modules.items())},
    }
    with open(report_path, "w", encoding="utf-8") as file:
        json.dump(report, file)


if __name__ == "__main__":
    main(*sys.argv[1:])
