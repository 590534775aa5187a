"""The import rule of ``shared/sml`` (CONTRIBUTING.md, "Layout"), read from the source with ``ast``.

- The core (``sml.core``) imports no other ``sml`` package.
- A capability (lifecycle, predict, writer, monitoring, archive) never imports the layers on top (local runtime,
  command line, demo), nor another capability's private module (a name starting with ``_``).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "shared" / "sml"
CORE = "core"
CAPABILITIES = {"lifecycle", "predict", "writer", "monitoring", "archive"}
ON_TOP = {"local", "cli", "demo"}


def imported_modules(source: str) -> list[str]:
    """Absolute module names a module's source imports (``from x import y`` gives ``x`` and ``x.y``)."""
    names: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            names.extend(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def layout_violations(package: Path) -> list[str]:
    """Every import in ``package`` (a folder laid out like ``shared/sml``) that breaks the rule."""
    found: list[str] = []
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package).parts
        if len(parts) < 2:
            continue
        owner = parts[0]
        where = "/".join(parts)
        for name in imported_modules(path.read_text()):
            segments = name.split(".")
            if segments[0] != "sml" or len(segments) < 2:
                continue
            target = segments[1]
            if owner == CORE and target != CORE:
                found.append(f"{where}: the core imports {name}")
            elif owner in CAPABILITIES and target in ON_TOP:
                found.append(f"{where}: capability {owner} imports {name}, a layer on top of it")
            elif owner in CAPABILITIES and target in CAPABILITIES and target != owner:
                if any(segment.startswith("_") for segment in segments[2:]):
                    found.append(f"{where}: capability {owner} imports {name}, a private module of {target}")
    return found


def test_shared_sml_follows_the_import_rule() -> None:
    assert layout_violations(PACKAGE) == []


def test_every_top_level_package_is_known() -> None:
    packages = {path.name for path in PACKAGE.iterdir() if path.is_dir() and not path.name.startswith("__")}
    modules = {path.name for path in PACKAGE.glob("*.py")}
    assert packages == {CORE} | CAPABILITIES | ON_TOP
    assert modules == {"__init__.py"}


def test_the_rule_catches_each_kind_of_violation(tmp_path: Path) -> None:
    files = {
        "core/settings.py": "from sml.predict.service import PredictionService\n",
        "writer/batch.py": "import sml.monitoring._internal\nfrom sml.core.events import parse_prediction_event\n",
        "monitoring/job.py": "from sml.local import stack\nfrom sml.monitoring._own import helper\n",
        "predict/service.py": "from sml.lifecycle import _cache\n",
        "cli/main.py": "from sml.writer._private import anything\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert layout_violations(tmp_path) == [
        "core/settings.py: the core imports sml.predict.service",
        "core/settings.py: the core imports sml.predict.service.PredictionService",
        "monitoring/job.py: capability monitoring imports sml.local, a layer on top of it",
        "monitoring/job.py: capability monitoring imports sml.local.stack, a layer on top of it",
        "predict/service.py: capability predict imports sml.lifecycle._cache, a private module of lifecycle",
        "writer/batch.py: capability writer imports sml.monitoring._internal, a private module of monitoring",
    ]
