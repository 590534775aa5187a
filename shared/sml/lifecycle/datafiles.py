"""The user's data and model files: tables (CSV, Parquet, JSON Lines) and pickled estimators.

Read for ``sml register`` and ``sml train --data``. Every problem is one :class:`SmlError`
naming the file and, where it applies, the option that gave it. Needs pandas and pyarrow (the
``train`` extra).

A joblib or pickle file runs code when it is loaded: register only artifacts you trust, as with
any pickle (predict verifies the sha256 of what was registered, not where it came from).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sml.core.errors import SmlError

# Extension -> format; compressed CSV and JSON Lines (.gz, .zst, ...) are read by pandas itself.
TABLE_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl"}
_COMPRESSIONS = (".gz", ".bz2", ".zip", ".xz", ".zst")


def table_format(path: Path, option: str) -> str:
    """``csv``, ``parquet`` or ``jsonl`` by the file's extension (a compression suffix is looked through).

    Raises:
        SmlError: another extension (names the option and the file).
    """
    suffixes = [suffix.lower() for suffix in path.suffixes]
    if suffixes and suffixes[-1] in _COMPRESSIONS:
        suffixes.pop()
    found = TABLE_FORMATS.get(suffixes[-1] if suffixes else "")
    if found is None or (found == "parquet" and path.suffixes[-1].lower() in _COMPRESSIONS):
        raise SmlError(f"{option} {path}: not a CSV, Parquet or JSON Lines file (by its extension: .csv, .parquet, .jsonl)")
    return found


def read_table(path: Path, option: str) -> Any:
    """The file as a pandas DataFrame, column names exactly as the file has them.

    CSV: pandas' reader (a header row; ``True``/``False`` read as booleans, empty cells as
    missing). Parquet: with its stored types. JSON Lines: one object per line.

    Raises:
        SmlError: the file is missing, of another format, unreadable, or holds no rows or a
            repeated column (names the option and the file).
    """
    import pandas as pd

    kind = table_format(path, option)
    if not path.is_file():
        raise SmlError(f"{option} {path}: no such file")
    try:
        if kind == "csv":
            # pandas renames a repeated header "x" to "x.1"; a column's name must be what the user wrote.
            header = [str(name) for name in pd.read_csv(path, header=None, nrows=1, dtype=str).iloc[0].tolist()]
            repeated = sorted({name for name in header if header.count(name) > 1})
            if repeated:
                raise SmlError(f"{option} {path}: column {repeated[0]!r} appears more than once")
            frame = pd.read_csv(path)
        elif kind == "parquet":
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_json(path, lines=True, dtype=False)
    except SmlError:
        raise
    except Exception as exc:
        # pandas and pyarrow raise many types for a file that is not what its name says; each is this one message.
        raise SmlError(f"{option} {path}: cannot be read as {kind.upper() if kind != 'jsonl' else 'JSON Lines'} ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})") from None
    if len(frame) == 0:
        raise SmlError(f"{option} {path}: no rows")
    return frame


def split_target(frame: Any, target: str, path: Path, option: str) -> tuple[Any, Any]:
    """``(features, target)`` of a table: every column but ``target``, and that column.

    Raises:
        SmlError: no such column (names ``--target``, the file and the columns there are).
    """
    if target not in frame.columns:
        shown = ", ".join(repr(str(name)) for name in list(frame.columns)[:12])
        raise SmlError(f"--target {target!r}: not a column of {option} {path} (columns: {shown}{', ...' if len(frame.columns) > 12 else ''})")
    return frame.drop(columns=[target]), frame[target]


def load_estimator(path: Path) -> Any:
    """Unpickle a fitted estimator from a joblib or pickle file.

    Raises:
        SmlError: the file is missing, not a pickle this environment can load (names the missing
            module when that is why), or holds something without ``predict``.
    """
    import joblib

    if not path.is_file():
        raise SmlError(f"{path}: no such file")
    try:
        model = joblib.load(path)
    except ModuleNotFoundError as exc:
        raise SmlError(f"{path}: the pickle needs module {exc.name!r}, which is not installed here") from None
    except Exception as exc:
        # Unpickling raises whatever the bytes lead to (UnpicklingError, EOFError, KeyError, ...).
        raise SmlError(f"{path}: not a joblib or pickle file this environment can load ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})") from None
    if not hasattr(model, "predict"):
        raise SmlError(f"{path}: holds a {type(model).__module__}.{type(model).__qualname__}, not an estimator with predict()")
    return model
