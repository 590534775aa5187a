"""Models from W&B: register a model artifact logged in Weights & Biases, and tag it back.

``sml register --from-wandb ENTITY/PROJECT/NAME:ALIAS`` fetches the artifact through W&B's public
API (``wandb.Api().artifact(name)``, then ``Artifact.download(root=...)``), registers the one
joblib/pickle file in it like any artifact, records the artifact (pinned to its version, since an
alias such as ``production`` moves) and the run that logged it (``Artifact.logged_by()``) in the
manifest, and adds the registered version as an alias of the artifact (``Artifact.aliases`` then
``Artifact.save()``), as W&B documents for updating an artifact outside a run. The public API needs
``WANDB_API_KEY`` (an offline W&B has no reader); ``wandb`` is imported only here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sml.core.errors import SmlError

MODEL_SUFFIXES = (".joblib", ".pkl", ".pickle")
_REFERENCE = re.compile(r"^[^/:\s]+/[^/:\s]+/[^/:\s]+:[^/:\s]+$")


@dataclass(frozen=True)
class WandbModel:
    """A model file downloaded from a W&B artifact, with where it came from.

    :param path: the downloaded joblib/pickle file.
    :param artifact: ``entity/project/name:vN``, the exact version the alias pointed at.
    :param run_path: ``entity/project/run_id`` of the run that logged it, when W&B knows one.
    """

    path: Path
    artifact: str
    run_path: str | None
    handle: Any


def fetch_wandb_model(reference: str, folder: Path, api: Any = None) -> WandbModel:
    """Download the model artifact ``reference`` (``ENTITY/PROJECT/NAME:ALIAS``) into ``folder``.

    Args:
        api: a ``wandb.Api`` (default: a new one, configured by ``WANDB_API_KEY`` and friends).

    Raises:
        SmlError: a malformed reference, W&B refusing (no key, no such artifact), or an artifact
            without exactly one ``.joblib``/``.pkl``/``.pickle`` file (names it and its files).
    """
    if not _REFERENCE.match(reference):
        raise SmlError(f"--from-wandb {reference!r}: expected ENTITY/PROJECT/NAME:ALIAS, e.g. acme/churn/churn-model:production")
    try:
        if api is None:
            import wandb

            api = wandb.Api()
        artifact = api.artifact(reference)
        downloaded = Path(artifact.download(root=str(folder)))
        run = artifact.logged_by()
    except SmlError:
        raise
    except Exception as exc:
        # wandb raises its own errors (no API key, not found, network) and ValueError; each is this one line.
        raise SmlError(f"--from-wandb {reference}: W&B could not provide it ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})") from None
    files = sorted(path for path in downloaded.rglob("*") if path.is_file())
    models = [path for path in files if path.suffix.lower() in MODEL_SUFFIXES]
    if len(models) != 1:
        shown = ", ".join(str(path.relative_to(downloaded)) for path in files[:10]) or "no files"
        raise SmlError(f"--from-wandb {reference}: expected one {'/'.join(MODEL_SUFFIXES)} file in the artifact, found {len(models)} ({shown})")
    collection = artifact.qualified_name.rpartition(":")[0]
    return WandbModel(
        path=models[0],
        artifact=f"{collection}:{artifact.version}",
        run_path="/".join(run.path) if run is not None else None,
        handle=artifact,
    )


def tag_registered_version(model: WandbModel, version: str) -> None:
    """Add the registered ``version`` as an alias of the W&B artifact.

    Raises:
        SmlError: W&B refused the update (the version stays registered; names the artifact).
    """
    try:
        if version not in model.handle.aliases:
            model.handle.aliases.append(version)
        model.handle.save()
    except Exception as exc:
        # The registration already happened; the caller reports this as a warning.
        raise SmlError(f"W&B artifact {model.artifact}: could not add alias {version} ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})") from None
