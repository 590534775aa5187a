"""`sml predict`: send one prediction request to the predict Function URL and print the answer.

Local URLs (127.0.0.1, localhost) are called as they are; any other URL is taken to be a Function
URL on AWS with ``AWS_IAM`` auth and the request is signed with SigV4 (service ``lambda``) using
the default AWS credentials, so no extra dependency is needed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sml.core.errors import SmlError

DESCRIPTION = """\
Send a request to POST /predict and print the JSON response. The body is one of:
  --feature NAME=VALUE ...   one row built from the options: a VALUE that is a JSON scalar
                             (14.2, 36, true, false, null, "text") is sent as that JSON
                             value, anything else as a string; quote a string that reads
                             like one of them: --feature 'plan="true"'. Quote a name with
                             spaces for the shell: --feature "Has Promo=true"
  --file request.json        a request body as is: {"features": {...}} or {"instances": [...]}
  --instances-file rows.json a JSON array of rows, sent as {"instances": [...]}

The URL is --url, else SML_FUNCTION_URL, else the local stack's (.sml/stack.json, written by
`sml up`). A non-2xx answer prints the error and exits with status 1.

Example:
  sml predict --feature mean_radius=14.2 --feature mean_texture=19.1 ... --feature concavity_grade=low
"""
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
FUNCTION_URL_HOST = re.compile(r"^[a-z0-9]+\.lambda-url\.(?P<region>[a-z0-9-]+)\.on\.aws$")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="send a prediction request to the Function URL",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    body = parser.add_mutually_exclusive_group(required=True)
    body.add_argument("--feature", action="append", metavar="NAME=VALUE", help="one feature of a single row; repeat for each feature")
    body.add_argument("--file", type=Path, help="a JSON request body, sent as it is")
    body.add_argument("--instances-file", type=Path, help="a JSON array of feature objects, sent as {\"instances\": [...]}")
    parser.add_argument("--url", help="the Function URL (default: SML_FUNCTION_URL or the local stack's)")
    parser.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS", help="give up after this long (default: 30)")
    parser.add_argument(
        "--model",
        metavar="NAME",
        help="send only if the Function URL serves this model (its GET /health names it); nothing is sent otherwise",
    )
    parser.set_defaults(run=run_predict)


def run_predict(args: argparse.Namespace) -> int:
    import sys

    from sml.core.settings import LocalSettings, load_settings, read_stack_file

    settings = load_settings(LocalSettings, stack=read_stack_file())
    base_url = args.url or _local_url_of(args.model, settings) or settings.function_url
    if args.model is not None and not args.url and "SML_FUNCTION_URL" not in os.environ:
        _check_local_stack_serves(args.model, settings)
    if not base_url:
        raise SmlError("no Function URL: give --url, set SML_FUNCTION_URL, or start the local stack with `sml up`")
    url = predict_url(base_url)
    body = request_body(features=args.feature, file=args.file, instances_file=args.instances_file)
    if args.model is not None:
        check_served_model(url, args.model, default_region=settings.region, timeout=args.timeout)
    headers = {"content-type": "application/json"}
    if not is_local(url):
        headers = signed_headers(url, body, headers, default_region=settings.region)
    status, response = post(url, body, headers, timeout=args.timeout)
    if 200 <= status < 300:
        try:
            print(json.dumps(json.loads(response), indent=2))
        except ValueError:
            print(response.decode("utf-8", "replace"))
        return 0
    print(f"sml predict: HTTP {status}: {describe_error(response)}", file=sys.stderr)
    return 1


def predict_url(base_url: str) -> str:
    """``<base>/predict`` for a Function URL (with or without a trailing slash); a ``/predict`` URL as is."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SmlError(f"--url {base_url!r}: expected an http(s) URL such as http://127.0.0.1:8080/")
    path = parts.path.rstrip("/")
    if not path.endswith("/predict"):
        path = f"{path}/predict"
    return parts._replace(path=path, query="", fragment="").geturl()


def is_local(url: str) -> bool:
    """Whether ``url`` points at this machine (the local stack), which needs no signature."""
    return (urlsplit(url).hostname or "") in LOCAL_HOSTS


def parse_features(assignments: list[str]) -> dict[str, Any]:
    """``NAME=VALUE`` options into a row: a VALUE that is a JSON scalar as that value, the rest strings.

    ``14.2`` is a float, ``36`` an int, ``true``/``false`` a bool, ``null`` None, ``"low"`` the
    string ``low``; ``low`` (not JSON) is also the string ``low``. Predict types each value by the
    model's schema, so an integer or boolean feature needs the JSON form, not its text.

    Raises:
        SmlError: an option without ``=`` or a name, or a name given twice; names the option.
    """
    row: dict[str, Any] = {}
    for assignment in assignments:
        name, separator, text = assignment.partition("=")
        name = name.strip()
        if not separator or not name:
            raise SmlError(f"--feature {assignment!r}: expected NAME=VALUE, e.g. --feature mean_radius=14.2")
        if name in row:
            raise SmlError(f"--feature {name}: given more than once")
        row[name] = _feature_value(text.strip())
    return row


def _feature_value(text: str) -> float | int | bool | str | None:
    try:
        parsed = json.loads(text)
    except ValueError:
        return text
    return parsed if parsed is None or isinstance(parsed, (bool, int, float, str)) else text


def request_body(*, features: list[str] | None, file: Path | None, instances_file: Path | None) -> bytes:
    """The request body from exactly one of the three options; errors name the option and file."""
    if features:
        return json.dumps({"features": parse_features(features)}).encode("utf-8")
    if file is not None:
        body = _read(file, "--file")
        try:
            json.loads(body)
        except ValueError as exc:
            raise SmlError(f"--file {file}: not valid JSON ({exc}); --file takes a request body such as {{\"features\": {{...}}}}") from None
        return body
    if instances_file is None:
        raise SmlError("give --feature, --file or --instances-file")
    try:
        rows = json.loads(_read(instances_file, "--instances-file"))
    except ValueError as exc:
        raise SmlError(f"--instances-file {instances_file}: not valid JSON ({exc})") from None
    if not isinstance(rows, list):
        raise SmlError(f"--instances-file {instances_file}: expected a JSON array of feature objects, got {type(rows).__name__}")
    return json.dumps({"instances": rows}).encode("utf-8")


def _read(path: Path, option: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SmlError(f"{option} {path}: {exc.strerror or exc}") from None


def _local_url_of(model: str | None, settings: Any) -> str | None:
    """The Function URL of ``model`` in a local stack serving several models (``sml up --model a --model b``)."""
    if model is None:
        return None
    from sml.local.stack import stack_function_urls

    return stack_function_urls(settings.state_dir).get(model)


def _check_local_stack_serves(model: str, settings: Any) -> None:
    """Refuse ``--model`` that a local stack serving several models does not serve, naming those it does."""
    from sml.local.stack import stack_function_urls

    served = stack_function_urls(settings.state_dir)
    if served and model not in served:
        raise SmlError(
            f"--model {model}: the local stack ({settings.state_dir / 'stack.json'}) serves {', '.join(served)}; nothing was sent "
            f"(start it with --model {model}, or give --url)"
        )


def check_served_model(predict_endpoint: str, model: str, *, default_region: str, timeout: float) -> None:
    """Refuse to send when the Function URL behind ``predict_endpoint`` serves another model than ``model``.

    :raises SmlError: ``GET /health`` does not answer 200 with a ``model_name``, or names another model.
    """
    url = predict_endpoint[: -len("/predict")] + "/health"
    headers = {} if is_local(url) else signed_headers(url, b"", {}, default_region=default_region, method="GET")
    status, response = post(url, None, headers, timeout=timeout, method="GET")
    try:
        served = json.loads(response)["model_name"] if status == 200 else None
    except (ValueError, KeyError, TypeError):
        served = None
    if served is None:
        raise SmlError(f"--model {model}: {url} did not say which model it serves (HTTP {status}: {describe_error(response)}); nothing was sent")
    if served != model:
        raise SmlError(f"--model {model}: the Function URL serves model {served!r}; nothing was sent (give --url of {model}'s Function URL)")


def signed_headers(url: str, body: bytes, headers: dict[str, str], *, default_region: str, method: str = "POST") -> dict[str, str]:
    """``headers`` plus a SigV4 signature for a Function URL with ``AWS_IAM`` auth.

    The region comes from the Function URL's host (``<id>.lambda-url.<region>.on.aws``), else
    ``default_region``; credentials from boto3's default chain.

    :raises SmlError: no AWS credentials are configured.
    """
    import boto3
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    credentials = boto3.session.Session().get_credentials()
    if credentials is None:
        raise SmlError(f"{url} is not local, so the request must be signed, but no AWS credentials are configured")
    match = FUNCTION_URL_HOST.match(urlsplit(url).hostname or "")
    region = match.group("region") if match else default_region
    request = AWSRequest(method=method, url=url, data=body, headers=headers)
    SigV4Auth(credentials.get_frozen_credentials(), "lambda", region).add_auth(request)
    return dict(request.headers.items())


def post(url: str, body: bytes | None, headers: dict[str, str], *, timeout: float, method: str = "POST") -> tuple[int, bytes]:
    """Send ``body`` (``POST``, or ``method``); returns the status and the response body, whatever the status.

    :raises SmlError: the URL cannot be reached (names it).
    """
    from urllib.error import HTTPError, URLError
    from urllib.request import Request, urlopen

    try:
        with urlopen(Request(url, data=body, headers=headers, method=method), timeout=timeout) as response:
            return response.status, response.read()
    except HTTPError as error:
        with error:
            return error.code, error.read()
    except (URLError, TimeoutError, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SmlError(f"cannot reach {url}: {reason}; is `sml up` running, or is --url right?") from None


def describe_error(body: bytes) -> str:
    """The error of a non-2xx answer: predict's ``code``, ``field`` and ``message``, else the raw text."""
    try:
        error = json.loads(body)["error"]
        field = f" at {error['field']}" if error.get("field") else ""
        return f"{error['code']}{field}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        return body.decode("utf-8", "replace")[:500] or "(empty body)"
