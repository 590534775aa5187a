"""serverless-ml: scikit-learn inference on AWS Lambda with prediction capture and drift alerts.

Keep this module free of imports: each Lambda image installs only its own extra, so importing
``sml`` must never pull in a dependency that one of them lacks. ``sml.register`` (bring your
own model, :func:`sml.lifecycle.registration.register`) is imported on first use.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["register"]


def __getattr__(name: str) -> Any:
    if name == "register":
        from sml.lifecycle.registration import register

        return register
    raise AttributeError(f"module 'sml' has no attribute {name!r}")
