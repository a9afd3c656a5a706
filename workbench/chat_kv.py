"""Keys and values reused across the turns of a `Chat`: turn n runs the LLM on its new tokens only.

The prompt of turn n is the prompt of turn n-1, the reply, `<|im_end|>` and the new query (as long as
no history turn leaves the 6144-token window). After each turn `KVReuse` keeps the LLM's keys and
values of every position it ran (prompt and the reply ids fed back while decoding) with the ids and
audio they cover; at the next turn it takes the longest common prefix of the held positions and the
new prompt, and the LLM runs on the rest only, at its own absolute positions.

When the numbers are the same. A causal LLM's keys and values at position i depend only on positions
0…i, so a held prefix is exactly what a full pass would feed into attention, *given the same kernels*:
    - tokens: the ids must agree; an audio span must hold the same clip (the `AudioCache` key: the
      samples' hash and the encoder's settings and weight versions), since different clips of one
      length have the same placeholder ids;
    - the LLM: same module, dtype, device, attention implementation and weight versions (an in-place
      edit, e.g. `load_state_dict`, drops the held keys); forward hooks are not seen: call `clear()`;
    - positions: rotary phases are computed per absolute position (`Qwen2RotaryEmbedding`, rope_type
      "default": cos/sin of position × inv_freq, elementwise), so a suffix at positions n… gets the
      phases it has inside the full pass, bit for bit (tests/test_chat_kv_reuse.py). A rope type whose
      scaling depends on the sequence length (transformers' "dynamic") would not: reuse is then off.
      The official Qwen-Audio config sets `use_dynamic_ntk` and `use_logn_attn` (the tiny fixture
      does): the official NTK factor is max(2^ceil(log2(L / seq_length) + 1) - 1, 1) and the logn factor
      log_seq_length(i) for i > seq_length, both exactly 1 up to seq_length (2048); the native model
      refuses longer prompts (`ContextTooLongError`), and a turn that would pass `Splice.max_positions`
      goes to the full path, which raises it. Within the limit no factor depends on the total length.
Not bit-identical, though: a held position was computed in another call shape than the full pass
computes it (the reply ids one at a time while decoding, the suffix as a block of queries against a
longer key axis), and matrix kernels sum in an order that depends on the shape. The logits then
differ at float rounding (measured max |difference| in float32: 7.9e-7 on the tiny fixture, |logits|
≤ 2.7; 1.3e-5 on nano, |logits| ≤ 26; tests/test_chat_kv_reuse.py) and the greedy ids are identical in
the tests; a near-tie of two logits could in principle flip. A turn that reuses nothing is the full
pass bit for bit (the same ops as `model.generate`). `reuse_kv=False` (or `cache_audio=False`, the
official computation) runs the full pass every turn.

When the new prompt does not extend the previous turn's prompt (history dropped from the window,
`reset()`, another system prompt or clip) the turn runs the full pass and starts the held keys afresh:
a shared head such as the system message alone is not worth keeping. The reply part of the held
keys is kept as far as the history's re-tokenized reply agrees with the ids generated (the official
post-processing strips whitespace and cuts a token when the reply ran out of new tokens); the rest is
cropped, which is exact since the keys before it never saw it.

Families: this needs the LLM body, head and KV cache declared by the family's `Splice`: Qwen-Audio
v1, -Chat and nano, the only family `Chat` runs. Qwen2-Audio (through transformers) has a KV cache in its
own generation loop but declares neither a chat nor a splice, and Whisper (cross-attention to the audio)
neither: `Chat` refuses them before any of this. A model without a splice, or with length-dependent
rotary scaling, gets `unsupported`'s reason and `Chat` decodes with the full pass, without an exception.

Memory: the held keys and values are 2 × layers × hidden × positions values (7B in bfloat16: 0.5 MB per
position, ~2 GB at 4,000), kept until the next turn, `reset()` or `clear()`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from workbench.models.base import AudioLM, ModelInputs
from workbench.models.cache import cache_kwarg

__all__ = ["KVReuse", "unsupported"]


def unsupported(model: AudioLM) -> str | None:
    """Why keys and values cannot be reused across turns for `model`, or None when they can."""
    splice = model.adapter.splice
    if splice is None:
        return f"{model.family} declares no splice (LLM body, head and KV cache): every turn runs the full pass"
    rotary = getattr(splice.body, "rotary_emb", None)
    rope_type = getattr(rotary, "rope_type", "default")
    if rope_type != "default":
        return (f"the LLM's rotary embedding is {rope_type!r}, whose phases may depend on the sequence length: "
                "a held prefix would not match the full pass, so every turn runs the full pass")
    return None


@dataclass(frozen=True)
class _Held:
    """The keys and values one turn left, and what they cover."""

    ids: tuple[int, ...]                    # every position run: the prompt, then the reply ids fed back
    prompt_length: int                      # the turn's prompt (the next prompt must extend it to reuse)
    audio: tuple[tuple[int, Any], ...]      # (span start, clip key) of each audio in the prompt
    settings: tuple                         # the LLM's identity, dtype, device, attention, weight versions
    layers: tuple[tuple[torch.Tensor, torch.Tensor], ...]


class KVReuse:
    """The LLM's keys and values of the previous turn, reused by the next (module docstring).

    `greedy` decodes a prompt as `model.generate` does (same ops, batch 1, no mask), starting from the
    held prefix when the prompt extends the previous one. `reused` (and `ChatTurn.kv_reused`) says how
    many prompt positions came from the held keys; `note` why the last turn reused them or not.
    """

    def __init__(self, model: AudioLM):
        reason = unsupported(model)
        if reason is not None:
            raise ValueError(reason)
        self.model, self.splice = model, model.adapter.splice
        self._held: _Held | None = None
        self.reused = 0
        self.note = "no turn yet"

    def __len__(self) -> int:
        """Positions held (0 before the first turn and after `clear()`)."""
        return 0 if self._held is None else len(self._held.ids)

    def clear(self) -> None:
        self._held = None

    def settings(self) -> tuple:
        """What the held keys depend on besides the tokens: an in-place weight edit moves `_version`."""
        weights = [*self.splice.body.parameters(), *self.splice.head.parameters()]
        return (id(self.splice.body), str(weights[0].dtype), str(weights[0].device),
                getattr(self.splice.body.config, "_attn_implementation", None), sum(w._version for w in weights))

    def reusable(self, ids: Sequence[int], audio: Sequence[tuple[int, Any]], settings: tuple) -> int:
        """How many leading positions of a prompt (`ids`, audio (start, clip key)) the held keys give:
        0 unless the prompt extends the held turn's whole prompt; never the whole prompt (its last
        position must run, for the logits of the first new token)."""
        held = self._held
        if held is None:
            self.note = "full pass: nothing held (first turn, reset() or clear())"
            return 0
        if held.settings != settings:
            self.note = "full pass: the LLM changed since the held turn (weights, dtype, device or attention)"
            return 0
        n = 0
        for a, b in zip(held.ids, ids):
            if a != b:
                break
            n += 1
        # Placeholder ids are the same for every clip of one length: compare the clips themselves.
        different = [start for (start, key), (held_start, held_key) in zip(audio, held.audio)
                     if start != held_start or key != held_key]
        if len(audio) < len(held.audio):
            different.append(held.audio[len(audio)][0])
        n = min([n, *different])
        if n < held.prompt_length:
            self.note = (f"full pass: the prompt differs from the held one at position {n} (before the held prompt's "
                         f"end, {held.prompt_length}): history dropped from the window, another system prompt or clip")
            return 0
        n = min(n, len(ids) - 1)
        self.note = f"reused {n} positions, ran {len(ids) - n}"
        return n

    @torch.no_grad()
    def greedy(self, inputs: ModelInputs, audio_embeds: Sequence[torch.Tensor], audio_keys: Sequence[Any],
               stop_ids: frozenset[int], max_new_tokens: int) -> list[int]:
        """New ids, stop token included, as `interventions.greedy` returns them; holds the keys after."""
        splice = self.splice
        ids = inputs.input_ids[0].tolist()
        audio = tuple((span.start, key) for span, key in zip(inputs.audios, audio_keys, strict=True))
        settings = self.settings()
        n = self.reused = self.reusable(ids, audio, settings)
        embeds = splice.embed(inputs, audio_embeds)
        # The held tensors are never written: the cache's update concatenates onto new tensors.
        cache = splice.new_cache(tuple((k[:, :, :n], v[:, :, :n]) for k, v in self._held.layers) if n else ())
        self._held = None   # a turn that fails part-way leaves nothing half-updated behind
        step: dict[str, torch.Tensor] = {"inputs_embeds": embeds[n:][None]}
        positions = torch.arange(n, len(ids), device=embeds.device)[None]   # absolute: the full pass's phases
        new: list[int] = []
        for _ in range(max_new_tokens):
            hidden = splice.body(**step, position_ids=positions, use_cache=True,
                                 **cache_kwarg(splice.body, cache)).last_hidden_state
            token = splice.head(hidden[:, -1]).argmax(-1)
            new.append(int(token))
            if new[-1] in stop_ids:
                break
            step = {"input_ids": token[:, None]}
            positions = positions[:, -1:] + 1
        # The last id was never fed back, so the cache covers the prompt and new[:-1].
        self._held = _Held(ids=tuple(ids) + tuple(new[:-1]), prompt_length=len(ids), audio=audio, settings=settings,
                           layers=tuple((layer.keys, layer.values) for layer in cache.layers))
        return new
