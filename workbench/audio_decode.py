"""Decoding a file (or its bytes) to mono samples at a rate: soundfile + soxr, or the official ffmpeg
pipeline. The private half of `workbench.audio.load_audio`, which checks what comes out and applies
the 30 s policy; use that, not these.
"""
from __future__ import annotations

import io
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import soundfile
import soxr

from workbench.audio_checks import check_peak
from workbench.errors import AudioError


def resample(mono: np.ndarray, src_sr: int, sr: int) -> np.ndarray:
    if src_sr == sr or len(mono) == 0:
        return mono
    return soxr.resample(mono, src_sr, sr, quality="HQ").astype(np.float32, copy=False)


def decode_file(path: Path, sr: int, decoder: str) -> np.ndarray:
    name = repr(str(path))
    if path.stat().st_size == 0:   # else the decoders' own words for it: "Format not recognised" …
        raise AudioError(f"{name} is empty (0 bytes): nothing to decode. The file was never written (or was cut "
                         "to nothing): write or download it again")
    if decoder == "ffmpeg":
        return ffmpeg_decode(["-i", str(path)], sr, None, name)
    return _soundfile_or_ffmpeg(path, sr, decoder, lambda: ffmpeg_decode(["-i", str(path)], sr, None, name), name)


def decode_bytes(data: bytes, sr: int, decoder: str, name: str) -> np.ndarray:
    if len(data) == 0:
        raise AudioError(f"{name} is empty (0 bytes): nothing to decode; pass the bytes of an audio file")

    def via_ffmpeg() -> np.ndarray:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "audio"
            path.write_bytes(data)
            return ffmpeg_decode(["-i", str(path)], sr, None, name)

    if decoder == "ffmpeg":
        return via_ffmpeg()
    return _soundfile_or_ffmpeg(io.BytesIO(data), sr, decoder, via_ffmpeg, name)


def _soundfile_or_ffmpeg(source: Any, sr: int, decoder: str, via_ffmpeg: Callable[[], np.ndarray],
                         name: str) -> np.ndarray:
    try:
        frames, src_sr = soundfile.read(source, dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.SoundFileError) as err:  # libsndfile cannot read this format
        if decoder == "soundfile":
            raise AudioError(f"soundfile cannot decode {name}: {err}. Try decoder='ffmpeg'") from err
        return via_ffmpeg()
    check_peak(frames, name, warn=False)   # float WAVs can hold any value; lossy codecs overshoot 1 a little
    return resample(frames.mean(axis=1, dtype=np.float32), src_sr, sr)


def ffmpeg_decode(input_args: list[str], sr: int, stdin: bytes | None, name: str) -> np.ndarray:
    """The official decoding: 16-bit mono PCM at `sr` from ffmpeg's default resampler, /32768."""
    if shutil.which("ffmpeg") is None:
        raise AudioError(f"cannot decode {name} with ffmpeg: ffmpeg is not on PATH. Install ffmpeg "
                         "(apt install ffmpeg, or conda install ffmpeg)")
    cmd = ["ffmpeg", "-nostdin", "-threads", "0", *input_args,
           "-f", "s16le", "-ac", "1", "-acodec", "pcm_s16le", "-ar", str(sr), "-"]
    result = subprocess.run(cmd, input=stdin, capture_output=True)
    if result.returncode != 0:
        lines = result.stderr.decode(errors="replace").strip().splitlines()
        reason = lines[-1] if lines else f"exit status {result.returncode}"
        raise AudioError(f"cannot decode {name}: not a readable audio file (ffmpeg: {reason}). Check that it is "
                         "an audio file (wav, flac, mp3, ogg, ...) and complete; re-export or download it again")
    return np.frombuffer(result.stdout, np.int16).astype(np.float32) / 32768.0
