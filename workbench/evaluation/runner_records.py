"""What makes an evaluation resumable: item keys, and JSONL record files that survive a kill.

A record's `key` hashes everything that decides its output — the model's identity, the prompt text,
the audio file's bytes and the decoding settings — and nothing that does not (paths, the device,
the item's position or id), so a finished item is found again after a rerun, on another node with
other mount points, or with another number of processes, and a changed model, prompt, clip or
`max_new_tokens` is recomputed rather than silently reused.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, Iterable

import torch

KEY_VERSION = 1        # bump when the key recipe or the meaning of a record changes
SAMPLES_PER_TENSOR = 64
# Model attributes that change outputs without changing weights or config (Qwen-Audio's decoding of
# the audio file, its encoder batching, its >30 s policy).
OUTPUT_OPTIONS = ("audio_decoder", "audio_batching", "audio_on_long")
# Generation fields taken from a cached record; the rest of a record is rebuilt from the item.
GENERATION_FIELDS = ("output", "n_tokens", "stopped")


class TruncatedRecordWarning(UserWarning):
    """A records file ended in a partial line (the run was killed mid-write): the item is recomputed."""


def _jsonable(value: Any) -> Any:
    # numpy / torch scalars from a scorer become numbers, anything else its text
    item = getattr(value, "item", None)
    return item() if callable(item) and getattr(value, "ndim", 1) == 0 else str(value)


def _json(value: Any, *, sort: bool = True) -> str:
    return json.dumps(value, sort_keys=sort, default=_jsonable, ensure_ascii=False)


def plain(value: Any) -> Any:
    """`value` as it reads back from JSON (tuples become lists, Paths strings…)."""
    return json.loads(_json(value, sort=False))


def _sha(text: str | bytes) -> str:
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()


# --- model identity --------------------------------------------------------------------------

def _plain_config(config: Any) -> Any:
    """The model config as plain data, without the path it was read from (a path is no identity)."""
    if config is None:
        return None
    if hasattr(config, "official"):        # QwenAudioConfig: the published config.json + generation
        return {"official": config.official, "generation": getattr(config, "generation", {}),
                "chat": getattr(config, "chat", None)}
    if callable(getattr(config, "to_dict", None)):   # a transformers PretrainedConfig
        return {k: v for k, v in config.to_dict().items()
                if not k.startswith("_") and k not in ("transformers_version", "name_or_path")}
    if is_dataclass(config):
        return asdict(config)
    return repr(config)


def _weights_fingerprint(model: Any) -> str | None:
    """A strided sample of every parameter tensor (≤ 64 values each), hashed with names and shapes.

    Reading the whole checkpoint would cost minutes on a 16 GB model; a few thousand values catch a
    retrained or re-converted checkpoint under the same config, and cost milliseconds."""
    try:
        groups = model._parameter_groups()
    except (NotImplementedError, AttributeError):
        return None
    digest = hashlib.sha256()
    for group in sorted(groups):
        for name, p in sorted(groups[group].named_parameters()):
            flat = p.detach().reshape(-1)
            step = max(1, flat.numel() // SAMPLES_PER_TENSOR)
            sample = flat[::step][:SAMPLES_PER_TENSOR].to("cpu", torch.float64).numpy()
            digest.update(f"{group}.{name}{tuple(p.shape)}".encode())
            digest.update(sample.tobytes())
    return digest.hexdigest()


def model_identity(model: Any) -> dict[str, Any]:
    """What identifies a model's outputs: family, class, config, dtype, parameter counts, output
    options and a weight fingerprint, plus `hash` over all of them. The device is left out on purpose
    (outputs computed on one GPU are reused on another), and so is the checkpoint path."""
    try:
        described = model.describe()
        shape = {"parameters": described.get("parameters"), "dtype": described.get("dtype")}
    except (NotImplementedError, AttributeError, StopIteration):
        shape = {}
    identity = {
        "family": getattr(model, "family", "?"),
        "class": type(model).__name__,
        "config": _sha(_json(_plain_config(getattr(model, "config", None)))),
        **shape,
        "options": {k: getattr(model, k) for k in OUTPUT_OPTIONS if isinstance(getattr(model, k, None), str)},
        "weights": _weights_fingerprint(model),
    }
    identity["hash"] = _sha(_json(identity))[:32]
    return identity


def model_source(model: Any) -> str:
    """Where the model came from, for the summary only (never part of a key)."""
    for name in ("path", "source"):
        value = getattr(model, name, None)
        if value:
            return str(value)
    return type(model).__name__


# --- audio and item keys ---------------------------------------------------------------------

_AUDIO_HASHES: dict[tuple[str, int, int], str] = {}


def audio_hash(path: str | Path) -> str:
    """sha256 of the file's bytes (memoised per path, size and mtime within the process)."""
    path = Path(path)
    stat = path.stat()
    memo = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if memo not in _AUDIO_HASHES:
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _AUDIO_HASHES[memo] = digest.hexdigest()
    return _AUDIO_HASHES[memo]


def item_key(model_hash: str, prompt: str, audio_sha: str, max_new_tokens: int) -> str:
    """The record key: what decides the output, and nothing else (module docstring)."""
    decoding = {"strategy": "greedy", "max_new_tokens": int(max_new_tokens)}
    return _sha(_json([KEY_VERSION, model_hash, prompt, audio_sha, decoding]))[:32]


# --- record files ----------------------------------------------------------------------------

def read_records(path: Path, *, repair: bool = False, quiet: bool = False) -> list[dict[str, Any]]:
    """The complete records of a JSONL file.

    A last line without its newline (the process was killed mid-write) or a line that is not JSON is
    dropped with a `TruncatedRecordWarning`, so its item is recomputed. With `repair`, the file
    itself is cut back to its good lines first, so that the next append starts on a line of its own.
    `quiet` skips the warning for a partial last line (another rank may be writing it right now)."""
    if not path.is_file():
        return []
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    tail, lines = lines[-1], lines[:-1]     # tail: bytes after the last newline ("" when clean)
    records, bad = [], []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or "key" not in record:
                raise ValueError("not a record")
            records.append(record)
        except ValueError:
            bad.append(number)
    if tail.strip() and not quiet:
        warnings.warn(f"{path}: the last line is incomplete ({len(tail)} bytes without a newline; the run was "
                      "interrupted while writing it): dropped, its item will be recomputed",
                      TruncatedRecordWarning, stacklevel=2)
    if bad:
        warnings.warn(f"{path}: line(s) {bad} are not JSON records: dropped, their items will be recomputed",
                      TruncatedRecordWarning, stacklevel=2)
    if repair and (tail or bad):
        write_records(path, records)
    return records


def write_records(path: Path, records: Iterable[dict[str, Any]]) -> None:
    """Replace `path` atomically (write a sibling, then rename): a kill leaves the old or the new file."""
    temporary = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with temporary.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(_json(record, sort=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


class RecordWriter:
    """Appends records to one JSONL file, each line written whole and flushed to disk before the
    call returns, so a kill loses at most the line being written (which `read_records` drops)."""

    def __init__(self, path: Path):
        self.path = path
        self._file = path.open("a", encoding="utf-8")

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        text = "".join(_json(r, sort=False) + "\n" for r in records)
        if text:
            self._file.write(text)
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def load_cache(out: Path, own: str) -> dict[str, dict[str, Any]]:
    """key → generation fields from every `records*.jsonl` in `out`; the file `own` (this rank's)
    is repaired in place, the others (maybe being written by other ranks) are only read."""
    cache: dict[str, dict[str, Any]] = {}
    files = sorted(out.glob("records*.jsonl"), key=lambda p: (p.name != own, p.name))
    for path in files:
        mine = path.name == own
        rank_file = path.name.startswith("records.rank")
        for record in read_records(path, repair=mine, quiet=rank_file and not mine):
            if all(f in record for f in GENERATION_FIELDS):
                cache.setdefault(record["key"], {f: record[f] for f in GENERATION_FIELDS})
    return cache
