"""The one surface every model family offers: inputs / forward / generate / describe.

A family (Qwen-Audio v1 native, Qwen2-Audio, Whisper, nano) subclasses `AudioLM` once and
implements the four `_`-prefixed hooks; everything a notebook calls lives here so the verbs read
the same whatever the model. Kept deliberately flat: one base class, no mixins.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch


@dataclass
class AudioSpan:
    """One audio inside a prompt: where its positions sit in `input_ids` and what fills them."""

    source: str                 # the path (or `audio_N` for arrays) written between <audio> tags
    n_samples: int              # 16 kHz samples actually used (after the 30 s policy)
    start: int                  # index of the `<audio>` token (or first audio position) in input_ids
    n_positions: int            # positions the audio occupies, bos/eos included (v1: n_tok + 2)
    mel: torch.Tensor | None = None   # (n_mels, 3000) log-mel, float32

    @property
    def stop(self) -> int:
        return self.start + self.n_positions


@dataclass
class ModelInputs:
    """Everything a forward pass needs, as the official processor would build it (batch of 1)."""

    text: str                           # the prompt as the tokenizer saw it (before expansion)
    input_ids: torch.Tensor             # (1, L) long
    audios: list[AudioSpan] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)   # family-specific tensors

    @property
    def length(self) -> int:
        return int(self.input_ids.shape[-1])


@dataclass
class ForwardOutput:
    logits: torch.Tensor                            # (1, L, V)
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    audio_embeds: list[torch.Tensor] | None = None  # per audio, (n_positions, d)


@dataclass
class Generation:
    ids: list[int]          # new tokens only, stop token excluded
    text: str               # decoded new tokens (tags kept or stripped as asked)
    prompt_length: int


AudioLike = "str | Path | np.ndarray | torch.Tensor"


class AudioLM:
    """Common surface. Subclasses set `family`, `tokenizer`, `config` and implement the hooks."""

    family: str = "?"
    tokenizer: Any = None
    config: Any = None
    stop_token_ids: tuple[int, ...] = ()

    # --- hooks a family implements -------------------------------------------------------
    def _build_inputs(self, text: str, audios: Sequence[Any], audio_dir: str | Path | None) -> ModelInputs:
        raise NotImplementedError

    def _forward(self, inputs: ModelInputs, *, output_hidden_states: bool, output_attentions: bool) -> ForwardOutput:
        raise NotImplementedError

    def _generate_ids(self, inputs: ModelInputs, *, max_new_tokens: int) -> list[int]:
        raise NotImplementedError

    def _parameter_groups(self) -> dict[str, torch.nn.Module]:
        """Named parts for describe(), e.g. {'encoder': …, 'projector': …, 'llm': …}."""
        raise NotImplementedError

    # --- the verbs -----------------------------------------------------------------------
    def inputs(self, prompt: Any, audio: Any = None, *, audio_dir: str | Path | None = None) -> ModelInputs:
        """Build model inputs from an official prompt string, ChatML text, or (audio, TagPrompt).

        `prompt` may be a str (with `<audio>PATH</audio>` references, resolved against
        `audio_dir` or the working directory), or a `workbench.tags.TagPrompt`, in which case
        `audio` (a path or a 16 kHz float array, or a list of them) supplies the audio.
        """
        if isinstance(prompt, ModelInputs):
            return prompt
        audios: list[Any] = [] if audio is None else list(audio) if isinstance(audio, (list, tuple)) else [audio]
        text = prompt
        if not isinstance(prompt, str):  # a TagPrompt (duck-typed to avoid an import cycle)
            refs = "".join(f"<audio>{a if isinstance(a, (str, Path)) else f'audio_{i}'}</audio>"
                           for i, a in enumerate(audios))
            text = refs + prompt.render()
        return self._build_inputs(text, audios, audio_dir)

    @torch.no_grad()
    def forward(self, prompt: Any, audio: Any = None, *, audio_dir: str | Path | None = None,
                output_hidden_states: bool = False, output_attentions: bool = False) -> ForwardOutput:
        inputs = self.inputs(prompt, audio, audio_dir=audio_dir)
        return self._forward(inputs, output_hidden_states=output_hidden_states,
                             output_attentions=output_attentions)

    @torch.no_grad()
    def generate(self, prompt: Any, audio: Any = None, *, audio_dir: str | Path | None = None,
                 max_new_tokens: int = 64, keep_tags: bool = True) -> Generation:
        """Greedy decoding until the family's stop token or `max_new_tokens`."""
        inputs = self.inputs(prompt, audio, audio_dir=audio_dir)
        ids = self._generate_ids(inputs, max_new_tokens=max_new_tokens)
        ids = [i for i in ids]
        while ids and ids[-1] in self.stop_token_ids:
            ids = ids[:-1]
        return Generation(ids=ids, text=self.decode(ids, keep_tags=keep_tags), prompt_length=inputs.length)

    def decode(self, ids: Sequence[int], *, keep_tags: bool = True) -> str:
        return self.tokenizer.decode(list(ids), keep_tags=keep_tags)

    def describe(self) -> dict[str, Any]:
        """Parameter counts per part, dtype and device."""
        groups = self._parameter_groups()
        counts = {name: sum(p.numel() for p in mod.parameters()) for name, mod in groups.items()}
        first = next(p for mod in groups.values() for p in mod.parameters())
        return {"family": self.family, "parameters": counts, "total": sum(counts.values()),
                "dtype": str(first.dtype).replace("torch.", ""), "device": str(first.device)}

    def __repr__(self) -> str:
        d = self.describe()
        parts = ", ".join(f"{k} {v:,}" for k, v in d["parameters"].items())
        return f"<{type(self).__name__} {self.family}: {parts}; {d['dtype']} on {d['device']}>"
