"""Causal tracing in the audio encoder (`causal_trace(…, stack="encoder")`), Whisper's default.

Whisper's decoder has no audio positions: it reads the encoder's output by cross-attention, so the
place to restore what the corruption took is the encoder. Per encoder layer × time bin, the
corrupted clip is encoded again with the clean residual stream (`encoder.layers.{i}.resid_post`,
the layer's output) restored at that bin's frames, the decoder runs on that encoder output (its
cross-attention keys and values recomputed from it), and the score is the same log p of the clean
answer given the decoder prompt as on the LLM. Recording and restoring are
`workbench.analysis.interventions`' recorder and patcher on the adapter's encoder layers.

Frames are 20 ms (`adapter.frame_seconds`). Whisper always encodes a 30 s window: the clip's
`workbench.audio.encoder_frames(n_samples)` frames, then padding up to 1500. The bins t0…t{bins-1}
split the clip's frames only (equal shares, each labelled by its seconds); the padding frames are one
more column, "pad" (kind "padding", its seconds from the clip's end to 30 s), restored all at once.
They are not inert: the log-mel floor of the zero padding follows the clip's loudest frame, and
from layer 0 on self-attention mixes the clip into every padding frame, so a corrupted clip changes
them too. Every frame lies in exactly one column; restoring all 1500 at a layer gives the clean
score exactly. An encoder that runs the clip's frames only (Qwen-Audio v1) has no "pad" column.

Whisper declares `Interventions.encode_after`: a restore at layer i runs only the encoder's layers
after i, from the corrupted run's stream with the frames restored (the layers before give the same
corrupted values every time): on tiny.en, one thread, 0.27 s of CPU a restore on average over its 4
layers against 0.6 s re-encoding everything (0.55 s for the encoder). A family without it (Qwen-Audio
v1) re-encodes the whole clip with the frames restored by the patcher hook; the tests hold both to
a forward hook on a plain forward.

Measured on Whisper tiny.en (jfk.flac, 11 s, `<|startoftranscript|><|notimestamps|>`, noise at
0 dB: log p of the greedy transcript −3.5 clean, −9.6 corrupted; 8 bins of 1.38 s): no single bin
brings back more than half. The third bin (2.76–4.14 s) recovers the most, 0.40 at layer 0 and
0.46 at layer 2; the first three bins 0.16–0.46 at every layer; the later ones −0.30 to 0.25
(restoring 4.14–5.52 s alone at layer 0 makes it worse: −0.30); the padding 0.01–0.04.

On the decoder side (`stack="decoder"`) the decoder's residual stream is restored per layer ×
(tags | text | answer) as on an LLM, with no audio bins: the later layers' cross-attention still
reads the corrupted encoder output, so restoring every position gives the clean score only at the
last layer. On tiny.en and JFK as above the answer positions recover 0.10, 0.43, 0.75 and 0.91 at
decoder layers 0–3 (at layer 3 the tags hold the rest, 0.09: the prompt's last position predicts
the first answer token).
"""
from __future__ import annotations

import numpy as np

from workbench.errors import PatchingError
from workbench.models.adapter import Adapter, Stack

__all__ = ["encoder_columns", "trace_stack"]


def trace_stack(adapter: Adapter, stack: str | None) -> Stack:
    """The stack whose residual stream is restored: `stack` "encoder" or the token sequence's name
    ("llm", "decoder"); None: the encoder where the audio is read by cross-attention (Whisper), else
    the token sequence, where the audio positions are."""
    if stack is None:
        return adapter.encoder if adapter.audio_attention == "cross" else adapter.sequence
    if stack == "encoder":
        return adapter.encoder
    if stack == adapter.sequence.name:
        return adapter.sequence
    raise PatchingError(f"stack={stack!r}: choose 'encoder' (the audio encoder, frames binned by time) or "
                        f"{adapter.sequence.name!r} (the token sequence)")


def encoder_columns(clip_frames: int, window_frames: int, bins: int,
                    frame_seconds: float) -> list[tuple[str, str, tuple[float, float], np.ndarray]]:
    """(name, kind, seconds, frames) per column: t0…t{bins-1} over the clip's frames, then "pad"
    (the window's frames after the clip) if there are any."""
    clip_frames = min(clip_frames, window_frames)
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or not 1 <= bins <= clip_frames:
        raise PatchingError(f"bins={bins!r}: give an int from 1 to the clip's {clip_frames} encoder frames")
    def seconds(frame: int) -> float:
        return round(float(frame * frame_seconds), 6)   # 0.82, not 0.8200000000000001

    columns = [(f"t{k}", "audio", (seconds(share[0]), seconds(share[-1] + 1)), share)
               for k, share in enumerate(np.array_split(np.arange(clip_frames), bins))]
    if window_frames > clip_frames:
        columns.append(("pad", "padding", (seconds(clip_frames), seconds(window_frames)),
                        np.arange(clip_frames, window_frames)))
    return columns
