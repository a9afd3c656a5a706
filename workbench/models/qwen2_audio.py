"""Qwen2-Audio behind the workbench surface: transformers' `Qwen2AudioForConditionalGeneration`.

Qwen2-Audio keeps Qwen-Audio's encoder family (Whisper-large-v3 init, 128 mel bins) but drops the
tags: prompts are natural language, and an audio is written `<|audio_bos|><|AUDIO|><|audio_eos|>`,
where the processor expands the single `<|AUDIO|>` into one placeholder per audio token and the
model overwrites those placeholders' embeddings with the projected encoder output.

Prompts accepted here:
- the Qwen-Audio form, `<audio>PATH</audio>Generate the caption in English:` — each reference
  becomes `<|audio_bos|><|AUDIO|><|audio_eos|>`, so v1 prompts run unchanged;
- the native form, `<|audio_bos|><|AUDIO|><|audio_eos|>…`, with `audio=` giving one clip per `<|AUDIO|>`;
- a `TagPrompt` with `audio=` (the base class writes the `<audio>` references).

Each `AudioSpan` runs from `<|audio_bos|>` to `<|audio_eos|>` inclusive when they surround the
placeholders (n_tok + 2 positions, as v1), else over the placeholders alone.
"""
from __future__ import annotations

import math
import re
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from transformers import Qwen2AudioForConditionalGeneration, Qwen2AudioProcessor
from transformers.cache_utils import DynamicCache

from workbench.audio import ENCODER_FRAME_SECONDS, HOP_LENGTH, N_FRAMES, SAMPLE_RATE, SECONDS_PER_TOKEN
from workbench.audio_checks import check_min_length
from workbench.errors import NotAQwen2AudioDirectoryError, Qwen2AudioPromptError, UnknownTagWarning
from workbench.models.adapter import Adapter, Stack, encoder_points, sequence_points
from workbench.models.base import (
    AudioLM,
    AudioSpan,
    ForwardOutput,
    ModelInputs,
    audio_label,
    eager_attention,
)
from workbench.models.cache import cache_kwarg
from workbench.models.checkpoint import check_dtype_runs, read_config_json, resolve_device, resolve_dtype

ATTENTION_IMPLEMENTATIONS = ("sdpa", "eager")
AUDIO_REF = re.compile(r"<audio>(.*?)</audio>", re.DOTALL)
TAG_LIKE = re.compile(r"<\|[^<>|]*\|>")
STOP_TOKENS = ("<|endoftext|>", "<|im_end|>")



def encoder_frame_count(n_samples: int) -> int:
    """Encoder frames of a clip of `n_samples` (16 kHz), as transformers' processor counts them: mel
    frames as ceil(L / 160) (the frames its STFT mask covers; v1 takes L // 160), halved by conv2.
    The tower always runs the 30 s window; frames past this count are padding."""
    mel = min(math.ceil(n_samples / HOP_LENGTH), N_FRAMES)
    return (mel - 1) // 2 + 1


def audio_token_count(n_samples: int) -> int:
    """`<|AUDIO|>` placeholders transformers' processor writes for a clip of `n_samples` (16 kHz).

    The §6 formula n_tok = (T - 2) // 2 + 1 over the encoder frames T (`encoder_frame_count`), as
    Qwen-Audio v1 (without its +2 for bos/eos). Because of the ceil, when L is not a multiple of
    160 and L // 160 ≡ 2 (mod 4), Qwen2-Audio gets one token more than v1 would (e.g. L = 16,321:
    26 against 25).
    """
    return (encoder_frame_count(n_samples) - 2) // 2 + 1


# The shortest clip that gives one `<|AUDIO|>` (fewer: none, and the prompt has no place for the clip).
# 321 rather than v1's 480, because the processor rounds mel frames up (audio_token_count).
MIN_SAMPLES = next(n for n in range(1, N_FRAMES * HOP_LENGTH) if audio_token_count(n) >= 1)


def load_qwen2_audio(path: str | Path, *, dtype: torch.dtype | str | None = None,
                     device: str | torch.device | None = None, attn: str = "sdpa") -> Qwen2AudioLM:
    """Load a transformers-format Qwen2-Audio directory (model + `Qwen2AudioProcessor`), offline.

    dtype defaults to float32, device to CPU; attn is "sdpa" or "eager" (attention weights are
    returned either way: the model switches to eager while it captures them).
    """
    if attn not in ATTENTION_IMPLEMENTATIONS:
        raise ValueError(f"attn={attn!r}: use one of {ATTENTION_IMPLEMENTATIONS}")
    directory = Path(path).expanduser()
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise NotAQwen2AudioDirectoryError(f"{directory} has no config.json: expected a transformers Qwen2-Audio "
                                           "directory (config.json, *.safetensors, processor and tokenizer files)")
    model_type = read_config_json(config_path).get("model_type")
    if model_type != "qwen2_audio":
        raise NotAQwen2AudioDirectoryError(f"{config_path} has model_type {model_type!r}, not 'qwen2_audio': "
                                           "use workbench.load() to pick the loader for other checkpoints")
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    check_dtype_runs(dtype, device)
    model = Qwen2AudioForConditionalGeneration.from_pretrained(directory, dtype=dtype,
                                                               attn_implementation=attn)
    processor = Qwen2AudioProcessor.from_pretrained(directory)
    return Qwen2AudioLM(model.to(device).eval(), processor, source=str(directory))


class Qwen2AudioLM(AudioLM):
    family = "qwen2-audio"
    example_prompt = "'<|audio_bos|><|AUDIO|><|audio_eos|>What does the person say?'"
    label = "Qwen2-Audio"
    parts = frozenset({"capture"})

    def __init__(self, model: Qwen2AudioForConditionalGeneration, processor: Qwen2AudioProcessor, source: str = ""):
        self.model, self.processor, self.source = model, processor, source
        self.tokenizer = processor.tokenizer
        self.config = model.config
        vocab = self.tokenizer.get_vocab()
        self.stop_token_ids = tuple(vocab[t] for t in STOP_TOKENS if t in vocab)
        self.audio_token, self.audio_token_id = processor.audio_token, processor.audio_token_id
        self.audio_bos_id = vocab.get(processor.audio_bos_token)
        self.audio_eos_id = vocab.get(processor.audio_eos_token)
        self._tags = set(self.tokenizer.get_added_vocab())

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # --- prompt → inputs -------------------------------------------------------------------
    def _build_inputs(self, text: str, audios: Sequence[Any], audio_dir: str | Path | None) -> ModelInputs:
        refs = AUDIO_REF.findall(text)
        native = text.count(self.audio_token)
        if refs and native:
            raise Qwen2AudioPromptError(
                f"the prompt mixes <audio>…</audio> references with {self.audio_token} placeholders: write every "
                f"audio one way, either <audio>PATH</audio> or {self.processor.audio_bos_token}{self.audio_token}"
                f"{self.processor.audio_eos_token} with audio=")
        if native and len(audios) != native:
            raise Qwen2AudioPromptError(f"the prompt has {native} {self.audio_token} placeholder(s) but {len(audios)} "
                                        "audio(s) were passed: pass one clip per placeholder with audio=")
        if refs and audios and len(refs) != len(audios):
            raise Qwen2AudioPromptError(f"the prompt names {len(refs)} audio(s) but {len(audios)} were passed: pass "
                                        "one audio per <audio>…</audio>, or none to read the paths")
        if audios and not refs and not native:
            raise Qwen2AudioPromptError(f"audio was passed but the prompt {text!r} has no place for it: add "
                                        f"<audio>…</audio> or {self.audio_token}")
        items = list(audios) if audios else refs
        sources = refs or [audio_label(a, i) for i, a in enumerate(items)]
        placeholder = self.processor.audio_bos_token + self.audio_token + self.processor.audio_eos_token
        expanded = AUDIO_REF.sub(lambda _: placeholder, text)
        unknown = [name for name in dict.fromkeys(TAG_LIKE.findall(expanded)) if name not in self._tags]
        if unknown:
            warnings.warn(f"{', '.join(unknown)} look like tags but are not in Qwen2-Audio's vocabulary, so they "
                          "are tokenized as plain text", UnknownTagWarning, stacklevel=3)
        clips = [self.read_audio(item, audio_dir) for item in items]
        for k, (source, clip) in enumerate(zip(sources, clips)):
            check_min_length(len(clip), MIN_SAMPLES, f"audio {k} ({source!r})", "Qwen2-Audio")
        if clips:
            batch = self.processor(text=[expanded], audio=clips, sampling_rate=SAMPLE_RATE, return_tensors="pt")
            extra = {"input_features": batch["input_features"], "feature_attention_mask": batch["feature_attention_mask"]}
        else:
            batch = self.processor(text=[expanded], return_tensors="pt")
            extra = {}
        input_ids = batch["input_ids"]
        extra["attention_mask"] = batch["attention_mask"]
        spans = self._spans(input_ids[0].tolist(), sources, clips, batch)
        return ModelInputs(text=text, input_ids=input_ids, audios=spans, extra=extra)

    def _spans(self, ids: list[int], sources: list[str], clips: list[np.ndarray], batch) -> list[AudioSpan]:
        runs: list[tuple[int, int]] = []   # (start, length) of each run of placeholders
        for i, token in enumerate(ids):
            if token == self.audio_token_id:
                if runs and runs[-1][0] + runs[-1][1] == i:
                    runs[-1] = (runs[-1][0], runs[-1][1] + 1)
                else:
                    runs.append((i, 1))
        if len(runs) != len(clips):
            raise Qwen2AudioPromptError(f"{len(clips)} audios but {len(runs)} separate runs of {self.audio_token}: "
                                        f"placeholders side by side merge into one; wrap each audio in "
                                        f"{self.processor.audio_bos_token}…{self.processor.audio_eos_token}")
        spans = []
        for k, ((start, length), source, clip) in enumerate(zip(runs, sources, clips)):
            if length != audio_token_count(len(clip)):
                raise RuntimeError(f"the processor wrote {length} {self.audio_token} for audio {k} ({len(clip)} "
                                   f"samples), the formula {audio_token_count(len(clip))}: transformers changed "
                                   "its expansion; update workbench.models.qwen2_audio.audio_token_count")
            has_bos = start > 0 and ids[start - 1] == self.audio_bos_id
            has_eos = start + length < len(ids) and ids[start + length] == self.audio_eos_id
            spans.append(AudioSpan(source=source, n_samples=len(clip), start=start - has_bos,
                                   n_positions=length + has_bos + has_eos,
                                   mel=batch["input_features"][k].float()))
        return spans

    # --- forward ---------------------------------------------------------------------------
    def _model_kwargs(self, inputs: ModelInputs) -> dict[str, torch.Tensor]:
        kwargs = {"input_ids": inputs.input_ids, **inputs.extra}
        kwargs = {k: v.to(self.device) for k, v in kwargs.items()}
        if "input_features" in kwargs:
            kwargs["input_features"] = kwargs["input_features"].to(self.model.dtype)
        return kwargs

    def _forward(self, inputs: ModelInputs, *, output_hidden_states: bool = False, output_attentions: bool = False,
                 output_encoder_attentions: bool = False, logits_to_keep: int | None = None) -> ForwardOutput:
        captured: dict[str, Any] = {"encoder": []}

        def keep_embeds(_module, _args, kwargs):
            captured["embeds"] = kwargs["inputs_embeds"]

        def keep_encoder_attention(_module, _args, output):
            captured["encoder"].append(output[1])

        core = self.model.model
        handles = [core.language_model.register_forward_pre_hook(keep_embeds, with_kwargs=True)]
        if output_encoder_attentions:
            handles += [layer.self_attn.register_forward_hook(keep_encoder_attention)
                        for layer in core.audio_tower.layers]
        try:
            with eager_attention(self.model, output_attentions or output_encoder_attentions):
                out = core(**self._model_kwargs(inputs), output_hidden_states=output_hidden_states,
                           output_attentions=output_attentions, use_cache=False)
        finally:
            for handle in handles:
                handle.remove()
        hidden = out.last_hidden_state
        kept = hidden if logits_to_keep is None else hidden[:, -logits_to_keep:]
        embeds = captured["embeds"][0]
        return ForwardOutput(
            logits=self.model.lm_head(kept).float(), last_hidden_state=hidden,
            hidden_states=out.hidden_states if output_hidden_states else None,
            attentions=out.attentions if output_attentions else None,
            audio_embeds=[embeds[span.start:span.stop] for span in inputs.audios],
            encoder_attentions=self._per_audio(captured["encoder"], inputs) if output_encoder_attentions else None,
        )

    @staticmethod
    def _per_audio(layers: list[torch.Tensor], inputs: ModelInputs) -> list[tuple[torch.Tensor, ...]]:
        """(heads, T, T) per block for each audio, T = its own encoder frames. The tower always runs
        the full 30 s window; rows and columns past T are padding (masked as keys), left out here."""
        result = []
        for k, span in enumerate(inputs.audios):
            frames = encoder_frame_count(span.n_samples)
            result.append(tuple(weights[k, :, :frames, :frames] for weights in layers))
        return result

    # --- generation ------------------------------------------------------------------------
    def _generate_ids(self, inputs: ModelInputs, *, max_new_tokens: int) -> list[int]:
        """Greedy decoding with a KV cache; the audio is encoded on the first step only."""
        core, kwargs = self.model.model, self._model_kwargs(inputs)
        cache = DynamicCache(config=self.model.config.text_config)
        mask = kwargs.pop("attention_mask")
        new: list[int] = []
        for _ in range(max_new_tokens):
            hidden = core(**kwargs, attention_mask=mask, use_cache=True, **cache_kwarg(core, cache)).last_hidden_state
            token = int(self.model.lm_head(hidden[:, -1]).argmax(-1))
            new.append(token)
            if token in self.stop_token_ids:
                break
            kwargs = {"input_ids": torch.tensor([[token]], device=self.device)}
            mask = torch.cat([mask, mask.new_ones(1, 1)], dim=1)
        return new

    def decode(self, ids: Sequence[int], *, keep_tags: bool = True) -> str:
        return self.tokenizer.backend_tokenizer.decode(list(ids), skip_special_tokens=not keep_tags)

    def _parameter_groups(self) -> dict[str, torch.nn.Module]:
        core = self.model.model
        return {"encoder": core.audio_tower, "projector": core.multi_modal_projector,
                "llm": torch.nn.ModuleList([core.language_model, self.model.lm_head])}

    def _adapter(self) -> Adapter:
        """Tower `encoder.layers.{i}.*` (transformers' Whisper-style layers), LLM `llm.*` (Qwen2: its
        `attn.q` / `.k` after rotary embeddings; the tower has none). The
        audio's 40 ms tokens sit in the LLM's sequence between `<|audio_bos|>` and `<|audio_eos|>`."""
        core = self.model.model
        tower, language = core.audio_tower, core.language_model
        audio_config, text_config = self.config.audio_config, self.config.text_config
        points = encoder_points("encoder.layers", tower.layers, "self_attn", "attention",
                                audio_config.encoder_attention_heads, audio_config.d_model, mlp="fc2")
        points.update(sequence_points("llm", language.layers, "self_attn", text_config.num_attention_heads,
                                      text_config.hidden_size))
        return Adapter(
            family=self.family, points=points, root=core,
            sequence=Stack("llm", tuple(language.layers), tuple(layer.self_attn.o_proj for layer in language.layers),
                           text_config.num_attention_heads, mlps=tuple(layer.mlp for layer in language.layers)),
            encoder=Stack("encoder", tuple(tower.layers), tuple(layer.self_attn.out_proj for layer in tower.layers),
                          audio_config.encoder_attention_heads),
            norm=language.norm, unembed=self.model.lm_head,
            patterns={"self": "llm.layers.{}.attn.pattern", "encoder": "encoder.layers.{}.attn.pattern"},
            audio_attention="self",
            encoder_frames=lambda inputs: [encoder_frame_count(a.n_samples) for a in inputs.audios],
            frame_seconds=ENCODER_FRAME_SECONDS, step_seconds=SECONDS_PER_TOKEN,
            encode_text=lambda text: self.tokenizer.encode(text, add_special_tokens=False),
            first_special_id=self.tokenizer.convert_tokens_to_ids("<|endoftext|>"), transcript_lead="",
            audio_marks=("<audio>", self.audio_token))
