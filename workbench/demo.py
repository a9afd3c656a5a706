"""The demo clips shipped with the package: short espeak-ng sentences and a synthetic scale.

    from workbench.demo import demo_clip
    clip = demo_clip("speech_en")        # DemoClip(name, path, kind, language, text, extra)

The clips live in `workbench/assets/demo/` (package data, made by `scripts/make_demo_clips.py`)
and are found through `importlib.resources`, so they work from an installed wheel too. Their
`labels.jsonl` is the single source of the metadata below.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from importlib.resources import files
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from workbench.errors import UnknownDemoClipError

LABELS = "labels.jsonl"


@dataclass(frozen=True)
class DemoClip:
    name: str               # file stem, e.g. "speech_en"
    path: Path              # 16 kHz mono FLAC
    kind: str               # "speech" or "music"
    language: str | None    # Qwen-Audio language tag ("en", "zh", ...), None for non-speech
    text: str               # transcript for speech, a description otherwise
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False)  # sample_rate, n_samples, notes…


def demo_dir() -> Path:
    root = files("workbench").joinpath("assets", "demo")
    # A regular (non-zipped) install gives a real directory; the clips are handed out as paths
    # because decoders (soundfile, ffmpeg) need files on disk.
    if not isinstance(root, Path):
        raise RuntimeError(f"workbench is installed as {type(root).__name__}; the demo clips need an "
                           "unzipped install (pip install without --zip, or an editable install)")
    return root


def demo_clips() -> list[DemoClip]:
    """Every shipped clip, in the order of `labels.jsonl` (speech first, then music)."""
    return list(_read_labels())


@cache
def _read_labels() -> tuple[DemoClip, ...]:
    root = demo_dir()
    clips = []
    for line in (root / LABELS).read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        file, kind, language, text = row.pop("file"), row.pop("kind"), row.pop("language"), row.pop("text")
        clips.append(DemoClip(name=Path(file).stem, path=root / file, kind=kind, language=language,
                              text=text, extra=MappingProxyType(row)))
    return tuple(clips)


def demo_clip(name: str) -> DemoClip:
    """The clip called `name` (e.g. "speech_en", "speech_zh", "tones_c_major")."""
    by_name = {clip.name: clip for clip in demo_clips()}
    if name not in by_name:
        raise UnknownDemoClipError(f"no demo clip {name!r}; the demo clips are: {', '.join(by_name)}")
    return by_name[name]


def demo_path(name: str) -> Path:
    """Path of the clip called `name`, for anything that takes a file."""
    return demo_clip(name).path
