"""The one surface every model family offers: inputs / forward / generate / describe.

A family (Qwen-Audio v1 native, Qwen2-Audio, Whisper, nano) subclasses `AudioLM` once and
implements the hooks; everything a notebook calls lives here so the verbs read the same whatever
the model. Kept deliberately flat: one base class, no mixins.

Hooks a family implements:
- `_build_inputs(text, audios, audio_dir)`: prompt text (+ audio) → `ModelInputs`;
- `_forward` (one prompt) and/or `_forward_batch` (several, padded so that each result equals the
  prompt run alone): each defaults to the other;
- `_generate_ids` and/or `_generate_batch`: greedy new ids, stop token included when hit;
- `_parameter_groups()`: named parts for `describe()`;
- `_adapter()`: what the family is made of, for the analyses (`workbench.models.adapter`), with the
  class attributes `label` (its name in the capability table) and `parts` (the parts it declares);
- optionally `stop_ids(inputs)` when the stop tokens depend on the prompt.

Audio reaches every family through `read_audio`: a path, an `(array, rate)` pair (resampled to
16 kHz), or a bare array, which means 16 kHz samples. A tuple of exactly (array, rate) is one
audio; a list (or any other tuple) holds several.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterator, Sequence

import numpy as np
import torch

from workbench.audio import CHUNK_SECONDS, is_url, load_audio, url_message
from workbench.errors import AudioError, LongAudioError, TruncatedAudioError
from workbench.models.adapter import Adapter


@contextlib.contextmanager
def eager_attention(model: torch.nn.Module, needed: bool = True) -> Iterator[None]:
    """SDPA returns no attention weights: switch a transformers model to eager only while they
    are captured, then back (fused attention is ~10x faster, so it stays the default)."""
    before = model.config._attn_implementation
    if not needed or before == "eager":
        yield
        return
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(before)


def audio_label(item: Any, index: int) -> str:
    """What stands between `<audio>` tags for one audio: its path as given (a `Path` keeps its
    name), or `audio_{index}` for samples, which have none."""
    return str(item) if isinstance(item, (str, Path)) else f"audio_{index}"


def audio_references(items: Sequence[Any]) -> str:
    """One `<audio>…</audio>` per audio, in order, as the official prompts put them before the tags."""
    return "".join(f"<audio>{audio_label(item, i)}</audio>" for i, item in enumerate(items))


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

    def extended(self, ids: Sequence[int]) -> ModelInputs:
        """These inputs with `ids` appended (generated tokens, a continuation to score). The audio
        spans are unchanged (they sit in the prompt); a text attention mask (Qwen2-Audio's) grows
        with the ids, so the longer sequence runs as the prompt did."""
        if not ids:
            return self
        new = torch.tensor([list(ids)], dtype=self.input_ids.dtype)
        extra = dict(self.extra)
        mask = extra.get("attention_mask")
        if isinstance(mask, torch.Tensor) and mask.shape == self.input_ids.shape:
            extra["attention_mask"] = torch.cat([mask, mask.new_ones(1, len(new[0]))], dim=1)
        return dataclasses.replace(self, input_ids=torch.cat([self.input_ids, new], dim=1), extra=extra)


@dataclass
class ForwardOutput:
    logits: torch.Tensor                            # (1, L, V), or (1, logits_to_keep, V)
    last_hidden_state: torch.Tensor | None = None   # (1, L, d), after the final norm
    hidden_states: tuple[torch.Tensor, ...] | None = None   # input embeddings, then every layer
    attentions: tuple[torch.Tensor, ...] | None = None      # per LLM layer, (1, heads, L, L)
    audio_embeds: list[torch.Tensor] | None = None  # per audio, (n_positions, d)
    encoder_attentions: list[tuple[torch.Tensor, ...]] | None = None  # per audio, per block, (heads, T, T)


@dataclass
class Generation:
    ids: list[int]          # new tokens only, stop token excluded
    text: str               # decoded new tokens (tags kept or stripped as asked)
    prompt_length: int
    stop_token: int | None = None   # the stop token that ended decoding; None: max_new_tokens reached




def is_audio_pair(item: Any) -> bool:
    """True for a tuple of exactly (samples, rate): one audio, not two."""
    return (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], (np.ndarray, torch.Tensor))
            and isinstance(item[1], numbers.Real) and not isinstance(item[1], bool))


def audio_items(audio: Any) -> list[Any]:
    """`audio=` as a list of single audios: None → [], one audio → [it], a list → its items."""
    if audio is None:
        return []
    if isinstance(audio, tuple) and len(audio) == 2 and isinstance(audio[0], numbers.Real) \
            and isinstance(audio[1], (np.ndarray, torch.Tensor)):
        raise TypeError("audio=(rate, array), e.g. from scipy.io.wavfile.read: pass (array, rate) instead")
    if is_audio_pair(audio):
        return [audio]
    return list(audio) if isinstance(audio, (list, tuple)) else [audio]


class AudioLM:
    """Common surface. Subclasses set `family`, `tokenizer`, `config` and implement the hooks."""

    family: str = "?"
    label: ClassVar[str] = "?"                  # the family's name in the capability table
    parts: ClassVar[frozenset[str]] = frozenset()   # the adapter parts it declares (adapter.PARTS)
    tokenizer: Any = None
    config: Any = None
    stop_token_ids: tuple[int, ...] = ()
    # How files are read (load_audio's decoder / on_long / on_truncated). Families whose loader
    # takes these as options (Qwen-Audio: audio_decoder=, …) set them per instance.
    audio_decoder: str = "auto"
    audio_on_long: str = "error"
    audio_on_truncated: str = "error"
    audio_options_settable: bool = False   # True where wb.load / with_options take audio_on_long=…
    example_prompt: str = "wb.preset('librispeech', lang='en')"   # named by the empty-prompt error

    # --- hooks a family implements -------------------------------------------------------
    def _build_inputs(self, text: str, audios: Sequence[Any], audio_dir: str | Path | None) -> ModelInputs:
        raise NotImplementedError

    def _forward(self, inputs: ModelInputs, **flags: Any) -> ForwardOutput:
        if type(self)._forward_batch is AudioLM._forward_batch:
            raise NotImplementedError(f"{type(self).__name__} implements neither _forward nor _forward_batch")
        return self._forward_batch([inputs], **flags)[0]

    def _forward_batch(self, batch: list[ModelInputs], **flags: Any) -> list[ForwardOutput]:
        """Flags: output_hidden_states, output_attentions, output_encoder_attentions, logits_to_keep."""
        if type(self)._forward is AudioLM._forward:
            raise NotImplementedError(f"{type(self).__name__} implements neither _forward nor _forward_batch")
        return [self._forward(inputs, **flags) for inputs in batch]

    def _generate_ids(self, inputs: ModelInputs, *, max_new_tokens: int) -> list[int]:
        if type(self)._generate_batch is AudioLM._generate_batch:
            raise NotImplementedError(f"{type(self).__name__} implements neither _generate_ids nor _generate_batch")
        return self._generate_batch([inputs], max_new_tokens=max_new_tokens)[0]

    def _generate_batch(self, batch: list[ModelInputs], *, max_new_tokens: int) -> list[list[int]]:
        if type(self)._generate_ids is AudioLM._generate_ids:
            raise NotImplementedError(f"{type(self).__name__} implements neither _generate_ids nor _generate_batch")
        return [self._generate_ids(inputs, max_new_tokens=max_new_tokens) for inputs in batch]

    def _parameter_groups(self) -> dict[str, torch.nn.Module]:
        """Named parts for describe(), e.g. {'encoder': …, 'projector': …, 'llm': …}."""
        raise NotImplementedError

    def _adapter(self) -> Adapter:
        """What the family is made of, for the analyses (`workbench.models.adapter`)."""
        raise NotImplementedError

    @functools.cached_property
    def adapter(self) -> Adapter:
        """The family's `Adapter`: capture points, stacks, frame geometry, text, optional parts."""
        return self._adapter()

    def stop_ids(self, inputs: ModelInputs) -> frozenset[int]:
        """Token ids that end generation for this prompt."""
        return frozenset(self.stop_token_ids)

    # --- audio -----------------------------------------------------------------------------
    def read_audio(self, item: Any, audio_dir: str | Path | None = None) -> np.ndarray:
        """One audio as 16 kHz float32 mono, read with this model's audio options.

        `item`: a path (relative ones against `audio_dir`, else the working directory), an
        `(array, rate)` pair (resampled to 16 kHz), or a numpy array / torch tensor of 16 kHz samples.
        """
        if isinstance(item, str) and is_url(item):
            raise AudioError(url_message(item))
        if isinstance(item, (str, Path)):
            path = Path(item).expanduser()
            if not path.is_absolute():
                path = Path(audio_dir or Path.cwd()) / path
            if not path.exists():
                raise FileNotFoundError(f"audio {str(item)!r} resolves to {path}, which does not exist: pass "
                                        "audio_dir= (the folder relative paths are read against) or an absolute path")
            item = path
        elif isinstance(item, (np.ndarray, torch.Tensor)):
            item = (item, 16000)   # documented: a bare array is 16 kHz samples
        elif not is_audio_pair(item):
            raise TypeError(f"audio must be a path, an (array, rate) pair or an array of 16 kHz samples, not "
                            f"{type(item).__name__}" + (f" of {len(item)} items" if isinstance(item, tuple) else ""))
        try:
            return load_audio(item, decoder=self.audio_decoder, on_long=self.audio_on_long,
                              on_truncated=self.audio_on_truncated)
        except (LongAudioError, TruncatedAudioError) as error:   # advice this caller can follow
            raise error.with_fix(self._audio_fix(error)) from None

    def _audio_fix(self, error: AudioError) -> str:
        if isinstance(error, LongAudioError):
            if self.audio_options_settable:
                return (f"Load the model with wb.load(..., audio_on_long='truncate'), or take "
                        f"model.with_options(audio_on_long='truncate'), to keep the first {CHUNK_SECONDS} s (with a "
                        f"warning); or cut it into {CHUNK_SECONDS} s windows with wb.load_audio(path, on_long='chunk') "
                        "and run each window's .audio")
            return (f"Cut it first: wb.load_audio(path, on_long='truncate') keeps the first {CHUNK_SECONDS} s, "
                    f"on_long='chunk' gives {CHUNK_SECONDS} s windows; pass the array (or each window's .audio)")
        if self.audio_options_settable:
            return ("The file was cut short (an interrupted download or copy?): get the complete file again, or load "
                    "the model with wb.load(..., audio_on_truncated='warn') (or take "
                    "model.with_options(audio_on_truncated='warn')) to use the part that is there")
        return ("The file was cut short (an interrupted download or copy?): get the complete file again, or read the "
                "part that is there with wb.load_audio(path, on_truncated='warn') and pass the array")

    # --- the verbs -----------------------------------------------------------------------
    def inputs(self, prompt: Any, audio: Any = None, *, audio_dir: str | Path | None = None) -> ModelInputs:
        """Build model inputs from an official prompt string, ChatML text, or (audio, TagPrompt).

        `prompt` may be a str with `<audio>PATH</audio>` references: without `audio`, each PATH is
        read (relative paths against `audio_dir`, else the working directory); with `audio` (one
        path, an `(array, rate)` pair, or an array of 16 kHz samples; or a list of them), the items
        fill the references in order and the text between the tags is only a label. A
        `workbench.tags.TagPrompt` gets one `<audio>…</audio>` per item of `audio` in front of its
        tags, as the official prompts put it.
        """
        if isinstance(prompt, ModelInputs):
            if audio is not None:
                raise TypeError("prompt is already a ModelInputs (its audio is inside it): do not pass audio")
            return prompt
        audios = audio_items(audio)
        text = prompt
        if isinstance(prompt, str) and not prompt.strip():
            raise ValueError(f"the prompt is empty{' (only whitespace)' if prompt else ''}: give a prompt, e.g. "
                             f"{self.example_prompt}")
        if not isinstance(prompt, str):
            if not callable(getattr(prompt, "render", None)):  # TagPrompt, duck-typed to avoid an import cycle
                raise TypeError(f"prompt must be a str, a TagPrompt or a ModelInputs, not {type(prompt).__name__}")
            text = audio_references(audios) + prompt.render()
        inputs = self._build_inputs(text, audios, audio_dir)
        if inputs.length == 0:
            raise ValueError(f"the prompt {text!r} gives no tokens: give a prompt, e.g. {self.example_prompt}")
        return inputs

    def _batch_inputs(self, prompts: Sequence[Any], audio_dir: str | Path | None) -> list[ModelInputs]:
        """Each item a prompt, or a (prompt, audio) pair."""
        if isinstance(prompts, (str, ModelInputs)) or callable(getattr(prompts, "render", None)):
            raise TypeError(f"prompts must be a list of prompts, not one {type(prompts).__name__}: wrap it, [prompt]")
        return [self.inputs(*p, audio_dir=audio_dir) if isinstance(p, tuple) and len(p) == 2 and not is_audio_pair(p)
                else self.inputs(p, audio_dir=audio_dir) for p in prompts]

    @torch.no_grad()
    def forward(self, prompt: Any, audio: Any = None, *, audio_dir: str | Path | None = None,
                output_hidden_states: bool = False, output_attentions: bool = False,
                output_encoder_attentions: bool = False, logits_to_keep: int | None = None) -> ForwardOutput:
        """One forward pass. `logits_to_keep=n` computes logits for the last n positions only
        (the full (L, vocab) logits of a long prompt take hundreds of MB)."""
        inputs = self.inputs(prompt, audio, audio_dir=audio_dir)
        return self._forward(inputs, output_hidden_states=output_hidden_states, output_attentions=output_attentions,
                             output_encoder_attentions=output_encoder_attentions, logits_to_keep=logits_to_keep)

    @torch.no_grad()
    def forward_batch(self, prompts: Sequence[Any], *, audio_dir: str | Path | None = None,
                      output_hidden_states: bool = False, output_attentions: bool = False,
                      output_encoder_attentions: bool = False,
                      logits_to_keep: int | None = None) -> list[ForwardOutput]:
        """Several prompts (str, TagPrompt without audio, ModelInputs, or (prompt, audio) pairs) in one
        padded batch.

        Each result has the prompt's own length (padding removed) and equals `forward` on that
        prompt alone, up to float rounding.
        """
        batch = self._batch_inputs(prompts, audio_dir)
        if not batch:
            raise ValueError("forward_batch got no prompts: pass a non-empty list")
        return self._forward_batch(batch, output_hidden_states=output_hidden_states,
                                   output_attentions=output_attentions,
                                   output_encoder_attentions=output_encoder_attentions, logits_to_keep=logits_to_keep)

    @torch.no_grad()
    def generate(self, prompt: Any, audio: Any = None, *, audio_dir: str | Path | None = None,
                 max_new_tokens: int = 64, keep_tags: bool = True) -> Generation:
        """Greedy decoding until a stop token (`stop_ids`) or `max_new_tokens`."""
        inputs = self.inputs(prompt, audio, audio_dir=audio_dir)
        _check_max_new_tokens(max_new_tokens)
        return self._as_generation(inputs, self._generate_ids(inputs, max_new_tokens=max_new_tokens), keep_tags)

    @torch.no_grad()
    def generate_batch(self, prompts: Sequence[Any], *, audio_dir: str | Path | None = None,
                       max_new_tokens: int = 64, keep_tags: bool = True) -> list[Generation]:
        """Greedy decoding of several prompts (as `forward_batch` takes them) in one padded batch; each
        equals `generate` alone."""
        batch = self._batch_inputs(prompts, audio_dir)
        if not batch:
            raise ValueError("generate_batch got no prompts: pass a non-empty list")
        _check_max_new_tokens(max_new_tokens)
        ids = self._generate_batch(batch, max_new_tokens=max_new_tokens)
        return [self._as_generation(inputs, new, keep_tags) for inputs, new in zip(batch, ids)]

    def _as_generation(self, inputs: ModelInputs, ids: list[int], keep_tags: bool) -> Generation:
        stop = ids[-1] if ids and ids[-1] in self.stop_ids(inputs) else None
        ids = ids[:-1] if stop is not None else list(ids)
        return Generation(ids=ids, text=self.decode(ids, keep_tags=keep_tags), prompt_length=inputs.length,
                          stop_token=stop)

    def decode(self, ids: Sequence[int], *, keep_tags: bool = True) -> str:
        return self.tokenizer.decode(list(ids), keep_tags=keep_tags)

    def describe(self) -> dict[str, Any]:
        """Parameter counts per part, dtype and device."""
        groups = self._parameter_groups()
        counts = {name: sum(p.numel() for p in mod.parameters()) for name, mod in groups.items()}
        first = next(p for mod in groups.values() for p in mod.parameters())
        devices = dict.fromkeys(str(p.device) for mod in groups.values() for p in mod.parameters())
        return {"family": self.family, "parameters": counts, "total": sum(counts.values()),
                "dtype": str(first.dtype).replace("torch.", ""), "device": ", ".join(devices)}

    def __repr__(self) -> str:
        d = self.describe()
        parts = ", ".join(f"{k} {v:,}" for k, v in d["parameters"].items())
        return f"<{type(self).__name__} {self.family}: {parts}; {d['dtype']} on {d['device']}>"


def _check_max_new_tokens(max_new_tokens: Any) -> None:
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens!r}: give a positive int")
