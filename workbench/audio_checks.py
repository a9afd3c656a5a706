"""Checks on audio before it reaches the model (`workbench.audio.load_audio` and the models run them;
the errors they raise are in `workbench.errors`).

Truncation. A file cut short (an interrupted download or copy) still decodes: libsndfile and ffmpeg
both return the frames that are there and say nothing (ffmpeg logs to stderr and exits 0). The
header still holds the length the writer meant, so comparing it with what is present catches the
cut whichever decoder runs:
- WAV: the `data` chunk's size against the bytes after it (exact, without decoding);
- FLAC: STREAMINFO's total samples against the frames decoded (the file size says nothing).
Other formats (mp3, ogg, ...) carry no reliable length and are not checked.

Level. Decoded audio lies in [-1, 1] (lossy codecs overshoot it a little); an array far outside it
(int16 values stored as float) gives the model a spectrum it never saw, so a peak above 2 is refused,
in arrays and files alike, and an array's peak between 1 and 2 warned about.

Length. The encoder pools pairs of encoder frames: a clip under `MIN_SAMPLES` (`workbench.audio`)
gives no audio token and torch's pooling fails with "Output size is too small".
"""
from __future__ import annotations

import io
import math
import re
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from workbench.errors import AudioError, TruncatedAudioError

_MAX_CHUNKS = 64   # a WAV has a handful of chunks before `data`; stop walking garbage early
PEAK_LIMIT = 2.0   # above this a signal is not float audio in [-1, 1] at all (e.g. int16 values as float)
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
SAMPLE_RATE = 16000   # the model rate, as workbench.audio.SAMPLE_RATE (which imports this module)


@dataclass(frozen=True)
class Promise:
    container: str          # "WAV" or "FLAC"
    frames: int             # frames (samples per channel) the header promises
    rate: int               # the header's sample rate
    present: int | None     # frames the file holds, when its size tells (WAV); None: decode to count (FLAC)


def promised_frames(source: Path | bytes) -> Promise | None:
    """The header's promise for a WAV or FLAC file (a path or its bytes); None when the format is
    another, the length is unknown (streamed WAV / FLAC write 0 or 0xFFFFFFFF), or the header is
    unreadable (the decoder then reports the damage itself)."""
    try:
        if isinstance(source, (bytes, bytearray)):
            return _promise(io.BytesIO(source), len(source))
        with open(source, "rb") as handle:
            return _promise(handle, Path(source).stat().st_size)
    except (OSError, struct.error, ValueError):
        return None


def _promise(handle: BinaryIO, size: int) -> Promise | None:
    magic = handle.read(4)
    if magic == b"RIFF":
        return _wav(handle, size)
    if magic[:3] == b"ID3":   # FLAC with an ID3v2 tag in front
        header = handle.read(6)   # version minor, flags, then the size: 4 bytes of 7 bits ("syncsafe")
        skip = 0
        for byte in header[2:6]:
            skip = (skip << 7) | (byte & 0x7F)
        handle.seek(10 + skip)
        magic = handle.read(4)
    if magic == b"fLaC":
        return _flac(handle)
    return None


def _wav(handle: BinaryIO, size: int) -> Promise | None:
    if handle.read(8)[4:] != b"WAVE":
        return None
    block_align = rate = None
    for _ in range(_MAX_CHUNKS):
        head = handle.read(8)
        if len(head) < 8:
            return None
        chunk, length = head[:4], struct.unpack("<I", head[4:])[0]
        if chunk == b"fmt ":
            fmt = handle.read(16)
            _, _, rate, _, block_align = struct.unpack("<HHIIH", fmt[:14])
            handle.seek(length - 16 + (length & 1), io.SEEK_CUR)
        elif chunk == b"data":
            if not block_align or not rate or length in (0, 0xFFFFFFFF):
                return None
            present = max(size - handle.tell(), 0) // block_align
            return Promise("WAV", length // block_align, rate, present)
        else:
            handle.seek(length + (length & 1), io.SEEK_CUR)
    return None


def _flac(handle: BinaryIO) -> Promise | None:
    block = handle.read(4)
    if len(block) < 4 or block[0] & 0x7F != 0:   # STREAMINFO must be the first metadata block
        return None
    info = handle.read(34)
    if len(info) < 34:
        return None
    packed = int.from_bytes(info[10:18], "big")   # rate 20 bits, channels 3, bits 5, total samples 36
    rate, total = packed >> 44, packed & ((1 << 36) - 1)
    if not rate or not total:
        return None
    return Promise("FLAC", total, rate, None)


# ---------------------------------------------------------------------------------------------
# Checks


def is_url(text: str) -> bool:
    """A scheme://… string: checked before Path(), which would fold "https://" into "https:/"."""
    return bool(_URL.match(text))


def url_message(url: str) -> str:
    return (f"{url!r} is a URL: the workbench does not fetch audio over the network. Download the file "
            "first (e.g. urllib.request.urlretrieve(url, 'clip.wav')) and pass its path")


def check_peak(samples: np.ndarray, name: str, *, warn: bool = True) -> None:
    """Refuse a peak above PEAK_LIMIT; warn (if `warn`) about one between 1 and the limit.

    Checked before resampling: a resampler's ringing may lift a full-scale signal a little above 1.
    Decoded files pass warn=False: lossy codecs overshoot full scale by design (an mp3 of the
    shared clips peaks at 1.025), so only arrays, whose scale the caller chose, get the warning.
    """
    peak = float(np.abs(samples).max()) if samples.size else 0.0
    if peak <= 1.0 or (peak <= PEAK_LIMIT and not warn):
        return
    normalise = "normalise it: audio / np.abs(audio).max()"
    if peak > PEAK_LIMIT:
        looks = ("it looks like int16 PCM values stored as float. Divide by 32768 (audio / 32768), or "
                 if 100 < peak <= 32768.5 else "")
        shown = f"{peak:,.0f}" if peak >= 10 else f"{peak:.2f}"
        raise AudioError(f"{name} peaks at {shown}, far outside the [-1, 1] full scale the model expects: "
                         f"{looks}{normalise}")
    warnings.warn(f"{name} peaks at {peak:.3f}, above the [-1, 1] full scale: it is used as is, but 16-bit audio "
                  f"would have clipped there; if that is not intended, {normalise}", stacklevel=4)


def check_truncation(promise: Promise | None, n_decoded: int, sr: int, name: str, on_truncated: str) -> None:
    """Raise (or warn) when a WAV/FLAC file holds fewer frames than its header promises."""
    if promise is None:
        return
    if promise.present is not None:   # WAV: counted from the file size, exact
        present, tolerance = promise.present, 0
    else:   # FLAC: counted from the decoded length; resampling may round it by a frame or two
        present, tolerance = round(n_decoded * promise.rate / sr), 2 * math.ceil(promise.rate / sr) + 2
    missing = promise.frames - present
    if missing <= tolerance:
        return
    rate = promise.rate
    problem = (f"{name} is truncated: its {promise.container} header promises {promise.frames:,} frames "
               f"({promise.frames / rate:.2f} s at {rate} Hz) but only {present:,} ({present / rate:.2f} s) are "
               f"there, so {missing / rate:.2f} s are missing")
    if on_truncated == "warn":
        warnings.warn(f"{problem}; using the {present / rate:.2f} s that are there (on_truncated='warn')",
                      stacklevel=4)
        return
    raise TruncatedAudioError(problem, "The file was cut short (an interrupted download or copy?): get the complete "
                                       "file again, or pass on_truncated='warn' to use the part that is there")


def check_min_length(n_samples: int, minimum: int, name: str, model: str) -> None:
    """Refuse a clip too short to give the model one audio token (below that its pooling fails)."""
    if n_samples < minimum:
        raise AudioError(
            f"{name} has {n_samples} samples ({1000 * n_samples / SAMPLE_RATE:.1f} ms at 16 kHz), too short: {model} "
            f"needs at least {minimum} samples ({1000 * minimum / SAMPLE_RATE:.1f} ms) to make one audio token. Pad "
            f"it with silence, e.g. np.pad(audio, (0, {minimum} - len(audio)))")
