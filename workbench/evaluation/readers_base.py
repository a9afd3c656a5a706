"""What every dataset reader shares: one error type, strict table reading, and the audio check.

A reader turns a dataset's native layout into `Item`s. It never guesses: a missing or malformed
file is one `DatasetLayoutError` that names the file and the layout expected, and a table row
whose audio is absent is an error too (or, with `on_missing="warn"`, left out with one warning
that counts them), so an evaluation never runs silently on fewer items than the dataset holds.
"""
from __future__ import annotations

import csv
import io
import json
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Sequence

from .items import Item

MISSING_POLICIES = ("error", "warn")
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".mp4")
_SHOWN = 5  # ids listed in an error or warning; the rest are counted


class DatasetLayoutError(ValueError):
    """A dataset folder that does not match the layout its reader expects."""


class ExcludedItemsWarning(UserWarning):
    """Rows or files a reader left out, counted (never silent): e.g. Aishell-1 wavs without a transcript."""


def layout_error(path: Path, problem: str, expected: str) -> DatasetLayoutError:
    return DatasetLayoutError(f"{path}: {problem}.\nExpected layout: {expected}")


def require_file(path: Path, expected: str) -> Path:
    if not path.is_file():
        raise layout_error(path, "file not found" if not path.exists() else "not a file", expected)
    return path


def require_dir(path: Path, expected: str) -> Path:
    if not path.is_dir():
        raise layout_error(path, "folder not found" if not path.exists() else "not a folder", expected)
    return path


def check_policy(on_missing: str) -> None:
    if on_missing not in MISSING_POLICIES:
        raise ValueError(f"on_missing={on_missing!r} is not one of {MISSING_POLICIES}")


def read_text(path: Path, expected: str) -> str:
    """The file as UTF-8 text (a byte-order mark is dropped: Windows tools write one into CSVs)."""
    require_file(path, expected)
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise layout_error(path, f"not UTF-8 text ({error})", expected) from error


def read_lines(path: Path, expected: str) -> list[tuple[int, str]]:
    """(line number, stripped line) of every non-blank line. Lines end at newlines only: str.splitlines
    would also split at the Unicode separators that transcripts may hold."""
    return [(n, line.strip()) for n, line in enumerate(read_text(path, expected).split("\n"), 1) if line.strip()]


def read_json(path: Path, expected: str) -> Any:
    try:
        return json.loads(read_text(path, expected))
    except json.JSONDecodeError as error:
        raise layout_error(path, f"not valid JSON ({error})", expected) from error


def read_table(path: Path, columns: Sequence[str], expected: str, *, delimiter: str = ",",
               plain: bool = False) -> list[tuple[int, dict[str, str]]]:
    """(line number, row) of a CSV/TSV with a header that holds at least `columns`.

    plain=True reads CoVoST's TSVs as written (pandas with quoting off and backslash escapes),
    where a quote character is ordinary text."""
    text = read_text(path, expected)
    options: dict[str, Any] = {"quoting": csv.QUOTE_NONE, "escapechar": "\\"} if plain else {}
    # A file object, not a list of lines: a quoted field may hold a newline.
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, **options)
    try:
        header = next(reader)
    except StopIteration:
        raise layout_error(path, "empty file (no header line)", expected) from None
    header = [h.strip() for h in header]
    absent = [c for c in columns if c not in header]
    if absent:
        raise layout_error(path, f"header {header} lacks the columns {absent}", expected)
    rows = []
    for row in reader:
        if not any(field.strip() for field in row):
            continue
        if len(row) != len(header):
            raise layout_error(path, f"line {reader.line_num} has {len(row)} fields, the header {len(header)}: "
                               f"{row!r}", expected)
        rows.append((reader.line_num, dict(zip(header, row))))
    return rows


def keep_present(items: Iterable[Item], table: Path, on_missing: str, what: str = "audio") -> list[Item]:
    """The items whose audio file exists. Absent files are an error naming the table and the
    files, or with on_missing="warn" are left out with one `ExcludedItemsWarning`."""
    check_policy(on_missing)
    items = list(items)
    missing = [item for item in items if not item.audio.is_file()]
    if not missing:
        return items
    listed = "; ".join(f"{item.id} → {item.audio}" for item in missing[:_SHOWN])
    more = f" and {len(missing) - _SHOWN} more" if len(missing) > _SHOWN else ""
    message = f"{len(missing)} of {len(items)} rows of {table} name {what} files that do not exist: {listed}{more}"
    if on_missing == "error":
        raise DatasetLayoutError(message + ". Restore the files, or pass on_missing='warn' to leave those rows out.")
    warnings.warn(message + "; those rows are left out.", ExcludedItemsWarning, stacklevel=3)
    return [item for item in items if item.audio.is_file()]


def check_unique(ids: Iterable[str], source: Path, expected: str) -> None:
    repeated = sorted(i for i, n in Counter(ids).items() if n > 1)
    if repeated:
        raise layout_error(source, f"ids occur more than once: {', '.join(repeated[:_SHOWN])}", expected)


def shown(names: Sequence[str]) -> str:
    """The first few names, and how many more."""
    more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
    return ", ".join(str(n) for n in names[:_SHOWN]) + more


def by_id(items: Iterable[Item]) -> list[Item]:
    """Items sorted by id: the one deterministic order every reader returns."""
    return sorted(items, key=lambda item: item.id)


def find_child(parent: Path, name: str, expected: str) -> Path:
    """`parent/name`, matching the name case-insensitively (CochlScene's `Test`, Aishell-2's `IOS`/`iOS`)."""
    require_dir(parent, expected)
    exact = parent / name
    if exact.exists():
        return exact
    matches = [p for p in parent.iterdir() if p.name.lower() == name.lower()]
    if len(matches) != 1:
        found = sorted(p.name for p in parent.iterdir() if p.is_dir())
        raise layout_error(parent / name, f"folder not found (sub-folders here: {shown(found) or 'none'})", expected)
    return matches[0]
