"""schemathesis hooks for tests/e2e/test_openapi_fuzz.py (loaded through SCHEMATHESIS_HOOKS).

POST /feedback takes a labelled_at up to the server's clock plus a few minutes (the document's
``x-latest``): a bound that moves with the clock, which JSON Schema cannot state. Generated label
times after it are moved to now, so every other refusal of /feedback stays a failure the fuzzer
reports. Only a time that is valid and late is changed: a body invalid for another reason stays
invalid, so the negative checks still see what they generated.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import schemathesis


def _capped(label: Any) -> Any:
    if not isinstance(label, dict) or not isinstance(label.get("labelled_at"), str):
        return label
    try:
        moment = datetime.fromisoformat(label["labelled_at"].replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return label
    if moment.tzinfo is None or moment <= datetime.now(timezone.utc):
        return label
    return {**label, "labelled_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")}


@schemathesis.hook
def map_body(ctx: Any, body: Any) -> Any:
    if ctx.operation.path != "/feedback":
        return body
    if isinstance(body, dict) and isinstance(body.get("labels"), list):
        return {**body, "labels": [_capped(label) for label in body["labels"]]}
    return _capped(body)
