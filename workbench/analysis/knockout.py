"""Head knockouts: which heads a model's answer depends on.

    knockout_sweep(model, prompt, "clip.flac", stack="encoder").plot()   # layer × head
    knockout_logits(model, prompt, "clip.flac", stack="llm", layer=3, head=5)   # (L, vocab)

One head at a time is zeroed ("zero") or replaced by its mean over the positions of the same run
("mean"), in the LLM / Whisper decoder ("llm"/"decoder") or the audio encoder ("encoder"); scored
by log p of the intact model's greedy output (or `continuation`). The audio is encoded once and
reused, except by encoder knockouts, which re-encode since they change it.

Moved out of `workbench.analysis.patching`, whose `PatchingResult` (table, heatmap) a sweep returns.
Families: native Qwen-Audio v1 (and nano) and Whisper (`workbench.analysis.interventions` names the modules).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from workbench.analysis.capabilities import require
from workbench.analysis.interventions import (
    answer_rows,
    check_head,
    check_layer,
    check_layers,
    encode_text,
    head_columns,
    hooks,
    knockout,
    logprob,
    prompt_inputs,
    short_text,
)
from workbench.analysis.patching import PatchingResult
from workbench.analysis.positions import decode_ids
from workbench.errors import PatchingError
from workbench.models.adapter import Adapter, Stack

__all__ = ["knockout_logits", "knockout_sweep"]

STACKS = ("llm", "decoder", "encoder")
KNOCKOUTS = ("zero", "mean")


@torch.no_grad()
def knockout_sweep(model: Any, prompt: Any, audio: Any = None, *, stack: str = "llm", method: str = "zero",
                   layers: Sequence[int] | None = None, continuation: str | None = None, max_new_tokens: int = 48,
                   audio_dir: Any = None) -> PatchingResult:
    """Knock out one head at a time (zeroed, or its mean over the run's positions: for Whisper's
    encoder all 1500 frames of the 30 s window) in the LLM / Whisper decoder (stack="llm" or
    "decoder") or the audio encoder ("encoder"); score log p of `continuation` (default: the intact
    model's greedy output). Result: layer × head."""
    adapter = require(model, "knockout_sweep")
    chosen = _knockout_stack(adapter, stack, method)
    chosen_layers = check_layers(chosen, layers)
    inputs = prompt_inputs(model, prompt, audio, audio_dir)
    audio_out = adapter.interventions.encode(inputs)
    ids = encode_text(model, continuation) if continuation is not None else \
        adapter.interventions.greedy(inputs, audio_out, max_new_tokens)
    full, answer = inputs.extended(ids), answer_rows(inputs.length, ids)
    clean = logprob(adapter.interventions.run(full, audio_out, answer), ids)
    scores = np.zeros((len(chosen_layers), chosen.n_heads))
    for i, layer in enumerate(chosen_layers):
        module = chosen.head_inputs[layer]
        for head in range(chosen.n_heads):
            with hooks([(module, knockout(head_columns(module, head, chosen.n_heads), method), True)]):
                encoded = adapter.interventions.encode(inputs) if stack == "encoder" else audio_out
                scores[i, head] = logprob(adapter.interventions.run(full, encoded, answer), ids)
    return PatchingResult(f"knockout:{method}", chosen.name, tuple(chosen_layers),
                          tuple(f"head {h}" for h in range(chosen.n_heads)), scores, clean, None,
                          f"log p({short_text(decode_ids(model, ids))})", None, (inputs.text,))


def knockout_logits(model: Any, prompt: Any, audio: Any = None, *, stack: str = "llm", layer: int, head: int,
                    method: str = "zero", audio_dir: Any = None) -> torch.Tensor:
    """The prompt's logits (L, vocab) with one head knocked out (as in `knockout_sweep`)."""
    adapter = require(model, "knockout_sweep")
    chosen = _knockout_stack(adapter, stack, method)
    module = chosen.head_inputs[check_layer(chosen, layer)]
    inputs = prompt_inputs(model, prompt, audio, audio_dir)
    with torch.no_grad(), hooks([(module, knockout(head_columns(module, check_head(chosen, head),
                                                                   chosen.n_heads), method), True)]):
        return adapter.interventions.run(inputs, adapter.interventions.encode(inputs))


def _knockout_stack(adapter: Adapter, stack: str, method: str) -> Stack:
    if stack not in STACKS:
        raise PatchingError(f"stack={stack!r}: choose one of {STACKS}")
    if method not in KNOCKOUTS:
        raise PatchingError(f"method={method!r}: choose one of {KNOCKOUTS}")
    if stack == "encoder":
        return adapter.encoder
    if stack != adapter.sequence.name:
        raise PatchingError(f"stack={stack!r}: this model's token sequence is its {adapter.sequence.name!r}; use that "
                            "name, or 'encoder'")
    return adapter.sequence
