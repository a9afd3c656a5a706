"""`load()`: one entry point for every model family.

The family is read off what is on disk, never guessed from a name:
- `nano` → the embedded nano Qwen-Audio shipped inside the package (`workbench.models.qwen_audio.nano`);
- a packaged name (`whisper-base`, `whisper-tiny.en`, …) → `workbench.models.registry`;
- a directory whose `config.json` has `model_type: qwen` and an `"audio"` block → native Qwen-Audio v1;
- `model_type: qwen2_audio` → Qwen2-Audio through transformers;
- `model_type: whisper`, or a CTranslate2 `model.bin` → Whisper.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from workbench.errors import UnknownModelError
from workbench.models import registry
from workbench.models.base import AudioLM
from workbench.models.checkpoint import read_config_json
from workbench.models.qwen2_audio import Qwen2AudioLM, load_qwen2_audio
from workbench.models.qwen_audio import QwenAudio, load_qwen_audio
from workbench.models.qwen_audio.nano import NANO_VERSIONS, load_nano
from workbench.models.whisper import WhisperLM, load_whisper

# Every family `load` returns, in the order of the capability table.
FAMILIES: tuple[type[AudioLM], ...] = (QwenAudio, Qwen2AudioLM, WhisperLM)


# Options of Qwen-Audio checkpoints (and "nano") beyond dtype / device / attn, for the error that
# names them when another family is given them.
QWEN_AUDIO_OPTIONS = ("audio_batching", "audio_decoder", "audio_on_long", "audio_on_truncated", "chat", "device_map")


def _refuse_options(what: str, family: str, options: dict) -> None:
    """Loaders of other families take dtype / device / attn only: name the options they do not take."""
    if not options:
        return
    names = sorted(options)
    qwen_only = all(name in QWEN_AUDIO_OPTIONS for name in names)
    raise TypeError(
        f"{what} is a {family} model, which takes dtype, device and attn only, not {', '.join(names)}"
        + (" (options of Qwen-Audio checkpoints and 'nano')" if qwen_only else "")
        + ": drop " + ("it" if len(names) == 1 else "them")
        + ("; for long audio, cut it first with wb.load_audio(path, on_long='truncate' or 'chunk') and pass the "
           "array" if "audio_on_long" in options else ""))


def _family_of(directory: Path) -> str:
    config_path = directory / "config.json"
    if not config_path.exists():
        if (directory / "model.bin").exists():
            return "whisper-ct2"
        raise UnknownModelError(
            f"{directory} has no config.json: expected a Qwen-Audio, Qwen2-Audio or Whisper checkpoint "
            "directory (config.json + *.safetensors), or a CTranslate2 Whisper directory (model.bin)")
    config = read_config_json(config_path)
    model_type = config.get("model_type")
    if model_type == "qwen" and "audio" in config:
        return "qwen-audio"
    if model_type == "qwen2_audio":
        return "qwen2-audio"
    if model_type == "whisper" or (directory / "model.bin").exists():
        return "whisper"
    raise UnknownModelError(
        f"{config_path}: model_type {model_type!r} is not one the workbench loads. Known: 'qwen' with an "
        "'audio' block (Qwen-Audio / Qwen-Audio-Chat), 'qwen2_audio', 'whisper'")


def load(source: str | Path, *, dtype: torch.dtype | str | None = None, device: str | torch.device | None = None,
         attn: str = "sdpa", **options: Any) -> AudioLM:
    """Load a model by packaged name or from a local directory; returns the common `AudioLM` surface.

    Qwen-Audio checkpoints (and "nano") take more options: `device_map`, `audio_batching`,
    `audio_decoder`, `audio_on_long`, `chat` (see `workbench.models.qwen_audio.load_qwen_audio`)."""
    name = str(source)
    if name in NANO_VERSIONS:   # embedded Qwen-Audio v1 checkpoints inside the package ("nano": the default)
        return load_nano(NANO_VERSIONS[name], dtype=dtype, device=device, attn=attn, **options)
    if name in registry.KNOWN_MODELS:
        _refuse_options(repr(name), registry.KNOWN_MODELS[name].family.capitalize(), options)
        packaged = registry.lookup(name)
        if packaged.family != "whisper":   # the only family PyPI packages carry so far
            raise ValueError(f"{name}: no loader for family {packaged.family!r}")
        return load_whisper(registry.ensure_converted(packaged), dtype=dtype, device=device, attn=attn, **options)
    directory = Path(source).expanduser()
    if not directory.exists():
        raise UnknownModelError(
            f"{name!r} is neither a packaged model ({', '.join(sorted([*NANO_VERSIONS, *registry.KNOWN_MODELS]))}) "
            "nor an existing directory: pass a name from that list or the path of a local checkpoint")
    if not directory.is_dir():
        raise UnknownModelError(f"{directory} is a file: pass the checkpoint's directory")
    family = _family_of(directory)
    if family != "qwen-audio":
        _refuse_options(str(directory), {"qwen2-audio": "Qwen2-Audio"}.get(family, "Whisper"), options)
    if family == "qwen-audio":
        return load_qwen_audio(directory, dtype=dtype, device=device, attn=attn, **options)
    if family == "qwen2-audio":
        return load_qwen2_audio(directory, dtype=dtype, device=device, attn=attn, **options)
    return load_whisper(directory, dtype=dtype, device=device, attn=attn, **options)
