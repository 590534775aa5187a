"""Building boto3 clients from settings: the one place that knows about local endpoints.

Adapters take a client as an argument; entry points build them here, lazily, never at import.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import boto3
from botocore.config import Config

from sml.core.settings import AwsSettings

# Bounded so that a dead endpoint costs a request seconds, not minutes (3 attempts in all).
DEFAULT_CONFIG = Config(connect_timeout=2, read_timeout=10, retries={"total_max_attempts": 3, "mode": "standard"})
LOCAL_CREDENTIALS = {"aws_access_key_id": "local", "aws_secret_access_key": "local"}  # the emulators accept any


def aws_client(service: str, settings: AwsSettings, config: Config | None = None) -> Any:
    """A boto3 client for ``service`` in the settings' region, at its local endpoint when it has one.

    The endpoint is ``settings.endpoint_url(service)``: the service's own, else the common one
    (locally SQS, SNS and S3 may be served by one emulator and SSM by another); none is AWS.
    """
    endpoint_url = settings.endpoint_url(service)
    return _session(settings.region, local=endpoint_url is not None).client(
        service,
        endpoint_url=endpoint_url,
        config=DEFAULT_CONFIG.merge(config) if config else DEFAULT_CONFIG,
    )


@lru_cache(maxsize=8)
def _session(region: str, *, local: bool) -> boto3.session.Session:
    if local:
        return boto3.session.Session(region_name=region, **LOCAL_CREDENTIALS)
    return boto3.session.Session(region_name=region)
