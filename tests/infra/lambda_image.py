"""Build a Lambda image's task root without Docker, by replaying its Dockerfile on the host.

Docker cannot run here, so the image tests do what ``docker build`` would: the build context is
the repository filtered by ``.dockerignore``; each stage is a folder standing for that container's
file system; ``WORKDIR``, ``COPY``, ``ENV`` and ``RUN pip install`` act on those folders; ``CMD``
names the handler. Any other instruction is refused by name, so a Dockerfile change this replay
does not understand fails the tests instead of being skipped.

The replay installs with the tests' own Python and platform (the images run Python 3.12 on arm64):
it proves the dependency set and the copied files, not the binary wheels of the image's platform.

Example::

    copy_build_context(repository, work_dir / "context")
    image = build_task_root(repository / "functions/predict/Dockerfile", work_dir / "context", work_dir)
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

LAMBDA_BASE_IMAGE = "public.ecr.aws/lambda/python"
# What the Lambda Python base images define; the Dockerfiles refer to it.
BASE_IMAGE_ENV = {"LAMBDA_TASK_ROOT": "/var/task"}
VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")


class ImageReplayError(Exception):
    """The Dockerfile or ``.dockerignore`` asks for something the replay cannot do, or a step failed."""


@dataclass(frozen=True)
class LambdaTaskRoot:
    """A replayed image.

    :param path: the host folder standing for the image's ``LAMBDA_TASK_ROOT``.
    :param environment: the variables the Dockerfile's ``ENV`` sets, container paths mapped onto the host.
    :param handler: what ``CMD`` names, e.g. ``functions.predict.app.handler``.
    """

    path: Path
    environment: dict[str, str]
    handler: str


@dataclass
class _Stage:
    """One ``FROM``: a host folder standing for the container's root, its working folder and ``ENV``."""

    name: str | None
    root: Path
    workdir: str = "/"
    env: dict[str, str] = field(default_factory=lambda: dict(BASE_IMAGE_ENV))
    declared_env: dict[str, str] = field(default_factory=dict)
    handler: str | None = None

    def host(self, container_path: str) -> Path:
        """Where ``container_path`` (absolute, or relative to ``WORKDIR``) lies on the host."""
        return self.root / posixpath.normpath(posixpath.join(self.workdir, container_path)).lstrip("/")


def copy_build_context(repository: Path, destination: Path) -> None:
    """Copy the files of ``repository`` that its ``.dockerignore`` lets into a Docker build context.

    Follows Docker's rules: the last matching pattern wins, a pattern that matches a folder
    matches everything in it, ``!`` re-includes, ``**`` spans folders.

    :raises ImageReplayError: a pattern uses syntax the replay does not implement (names it).
    """
    rules = _read_dockerignore(repository / ".dockerignore")
    for directory, subdirectories, files in os.walk(repository):
        relative = Path(directory).relative_to(repository).as_posix()
        prefix = "" if relative == "." else f"{relative}/"
        subdirectories[:] = [name for name in subdirectories if not _ignored(rules, prefix + name) or _may_reinclude(rules, prefix + name)]
        for name in files:
            if not _ignored(rules, prefix + name):
                target = destination / prefix / name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(Path(directory) / name, target)


def build_task_root(dockerfile: Path, context: Path, work_dir: Path) -> LambdaTaskRoot:
    """Replay ``dockerfile`` against the build context folder ``context``; stages go under ``work_dir``.

    ``RUN pip install`` runs with this interpreter's pip and cache (``--no-cache-dir`` is dropped;
    the cache only makes the replay faster) and without byte-compiling, ``--target`` mapped onto
    the stage's folder.

    :returns: the final stage's task root, environment and handler.
    :raises ImageReplayError: an unsupported instruction, a ``COPY`` source missing from the build
        context, or a failed ``pip install``, naming the Dockerfile line.
    """
    stages: list[_Stage] = []
    for line, keyword, arguments in _instructions(dockerfile):
        where = f"{dockerfile}:{line}"
        if keyword == "FROM":
            stages.append(_from(arguments, work_dir / f"stage-{len(stages)}", where))
            continue
        if not stages:
            raise ImageReplayError(f"{where}: {keyword} before FROM")
        stage = stages[-1]
        if keyword == "WORKDIR":
            stage.workdir = posixpath.join(stage.workdir, _substitute(arguments, stage, where))
            stage.host(".").mkdir(parents=True, exist_ok=True)
        elif keyword == "COPY":
            _copy(shlex.split(_substitute(arguments, stage, where)), stage, stages, context, where)
        elif keyword == "ENV":
            for assignment in shlex.split(arguments):
                name, equals, value = assignment.partition("=")
                if not equals:
                    raise ImageReplayError(f"{where}: ENV {assignment!r}: only the NAME=value form is replayed")
                stage.env[name] = stage.declared_env[name] = _substitute(value, stage, where)
        elif keyword == "RUN":
            _pip_install(shlex.split(arguments), stage, where)
        elif keyword == "CMD":
            command = json.loads(arguments)
            if not (isinstance(command, list) and len(command) == 1 and isinstance(command[0], str)):
                raise ImageReplayError(f"{where}: CMD must be a JSON list holding the handler, got {arguments}")
            stage.handler = command[0]
        else:
            raise ImageReplayError(f"{where}: the replay does not implement {keyword}")
    final = stages[-1]
    if final.handler is None:
        raise ImageReplayError(f"{dockerfile}: the final stage has no CMD naming the handler")
    environment = {name: str(final.host(value)) if value.startswith("/") else value for name, value in final.declared_env.items()}
    return LambdaTaskRoot(path=final.host(final.env["LAMBDA_TASK_ROOT"]), environment=environment, handler=final.handler)


def _instructions(dockerfile: Path) -> Iterator[tuple[int, str, str]]:
    """(first line number, keyword, arguments) per instruction; comments dropped, ``\\`` continuations joined."""
    pending: list[str] = []
    start = 0
    for number, text in enumerate(dockerfile.read_text(encoding="utf-8").splitlines(), start=1):
        stripped = text.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if not pending:
            start = number
        continued = stripped.endswith("\\")
        pending.append(stripped.removesuffix("\\").strip())
        if not continued:
            keyword, _, arguments = " ".join(pending).partition(" ")
            yield start, keyword.upper(), arguments.strip()
            pending = []


def _from(arguments: str, root: Path, where: str) -> _Stage:
    tokens = [token for token in shlex.split(arguments) if not token.startswith("--platform=")]
    if not tokens[0].startswith(LAMBDA_BASE_IMAGE):
        raise ImageReplayError(f"{where}: only {LAMBDA_BASE_IMAGE} base images are replayed, got {tokens[0]}")
    name = tokens[2] if len(tokens) == 3 and tokens[1].upper() == "AS" else None
    root.mkdir(parents=True)
    return _Stage(name=name, root=root)


def _copy(tokens: list[str], stage: _Stage, stages: list[_Stage], context: Path, where: str) -> None:
    flags = [token for token in tokens if token.startswith("--")]
    sources, destination = [token for token in tokens if not token.startswith("--")][:-1], tokens[-1]
    origin = None
    for flag in flags:
        if not flag.startswith("--from="):
            raise ImageReplayError(f"{where}: COPY {flag} is not replayed")
        named = [earlier for earlier in stages[:-1] if earlier.name == flag.removeprefix("--from=")]
        if not named:
            raise ImageReplayError(f"{where}: COPY {flag}: no earlier stage of that name")
        origin = named[0]
    target = stage.host(destination)
    for source in sources:
        path = origin.root / posixpath.normpath(source).lstrip("/") if origin else context / source
        if not path.exists():
            missing_from = f"stage {origin.name}" if origin else "the build context (see .dockerignore)"
            raise ImageReplayError(f"{where}: COPY {source}: not in {missing_from}")
        if path.is_dir():
            shutil.copytree(path, target, dirs_exist_ok=True)
        else:
            into_folder = destination.endswith("/") or len(sources) > 1 or target.is_dir()
            file_target = target / path.name if into_folder else target
            file_target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, file_target)


def _pip_install(tokens: list[str], stage: _Stage, where: str) -> None:
    if tokens[:2] != ["pip", "install"]:
        raise ImageReplayError(f"{where}: only RUN pip install is replayed, got RUN {shlex.join(tokens)}")
    # --no-compile: the image byte-compiles every module at build time; here the import compiles what
    # it loads, which makes the install three times faster and leaves a third fewer files to delete.
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-compile"]
    remaining = iter(tokens[2:])
    for token in remaining:
        if token == "--no-cache-dir":
            continue
        if token == "--target" or token.startswith("--target="):
            value = next(remaining) if token == "--target" else token.removeprefix("--target=")
            command += ["--target", str(stage.host(value))]
        else:
            command.append(token)
    completed = subprocess.run(command, cwd=stage.host("."), capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise ImageReplayError(f"{where}: {shlex.join(command)} failed:\n{completed.stderr[-4000:]}")


def _substitute(text: str, stage: _Stage, where: str) -> str:
    def value(match: re.Match[str]) -> str:
        name = match[1] or match[2]
        if name not in stage.env:
            raise ImageReplayError(f"{where}: ${name} is not defined in this stage")
        return stage.env[name]

    return VARIABLE.sub(value, text)


@dataclass(frozen=True)
class _IgnoreRule:
    pattern: str
    regex: re.Pattern[str]
    reinclude: bool


def _read_dockerignore(path: Path) -> list[_IgnoreRule]:
    rules = []
    for line in path.read_text(encoding="utf-8").splitlines():
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        reinclude = text.startswith("!")
        pattern = posixpath.normpath(text.removeprefix("!").strip()).lstrip("/")
        rules.append(_IgnoreRule(pattern, _pattern_regex(pattern, path), reinclude))
    return rules


def _pattern_regex(pattern: str, path: Path) -> re.Pattern[str]:
    parts, index = [], 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            parts.append("(?:.*/)?")
            index += 3
        elif pattern.startswith("**", index):
            parts.append(".*")
            index += 2
        elif pattern[index] == "*":
            parts.append("[^/]*")
            index += 1
        elif pattern[index] == "?":
            parts.append("[^/]")
            index += 1
        elif pattern[index] in "[\\":
            raise ImageReplayError(f"{path}: pattern {pattern!r}: character classes and escapes are not replayed")
        else:
            parts.append(re.escape(pattern[index]))
            index += 1
    return re.compile("".join(parts))


def _ignored(rules: list[_IgnoreRule], path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent folders decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: end + 1]) for end in range(len(parts))]
    ignored = False
    for rule in rules:
        if any(rule.regex.fullmatch(candidate) for candidate in candidates):
            ignored = not rule.reinclude
    return ignored


def _may_reinclude(rules: list[_IgnoreRule], folder: str) -> bool:
    """Whether a ``!`` pattern could bring back something inside an ignored ``folder`` (else skip walking it)."""
    return any(rule.reinclude and rule.pattern.startswith(f"{folder}/") for rule in rules)
