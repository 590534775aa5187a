"""The context object Lambda hands a handler, rebuilt for local invocations.

Powertools' ``Logger.inject_lambda_context`` and most handlers read only these attributes.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

LOCAL_ACCOUNT_ID = "123456789012"  # moto's default account


@dataclass(frozen=True)
class LocalLambdaContext:
    """The attributes and method of ``awslambdaric``'s ``LambdaContext`` that handlers use."""

    function_name: str
    invoked_function_arn: str
    aws_request_id: str
    deadline_epoch_s: float
    memory_limit_in_mb: int = 1024
    function_version: str = "$LATEST"
    log_group_name: str = ""
    log_stream_name: str = "local"

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds until the invocation's timeout (the local stack's containers enforce it)."""
        return max(0, int((self.deadline_epoch_s - time.time()) * 1000))


def new_lambda_context(
    function_name: str,
    *,
    region: str,
    timeout_s: float,
    request_id: str | None = None,
    memory_limit_in_mb: int = 1024,
) -> LocalLambdaContext:
    """A context for one invocation of ``function_name``.

    :param region: region in the function ARN.
    :param timeout_s: the function's timeout; ``get_remaining_time_in_millis`` counts down from it.
    :param request_id: the invocation id; a new UUID4 when omitted, as Lambda does.
    :param memory_limit_in_mb: what ``memory_limit_in_mb`` reports.
    :returns: a frozen :class:`LocalLambdaContext`.
    """
    return LocalLambdaContext(
        function_name=function_name,
        invoked_function_arn=f"arn:aws:lambda:{region}:{LOCAL_ACCOUNT_ID}:function:{function_name}",
        aws_request_id=request_id or str(uuid.uuid4()),
        deadline_epoch_s=time.time() + timeout_s,
        memory_limit_in_mb=memory_limit_in_mb,
        log_group_name=f"/aws/lambda/{function_name}",
    )
