"""Native Qwen-Audio (v1): the published checkpoint on transformers' Qwen2, no remote code.

audio → log-mel → `AudioEncoder` (qwen_audio_encoder.py) → [bos, tokens…, eos]
prompt → ids → `embed_tokens` → positions `<audio>`…`</audio>` overwritten with the audio → Qwen2 LLM

The LLM is Qwen-7B, which transformers' `Qwen2ForCausalLM` computes exactly once the fused
`c_attn` is split into q/k/v, `mlp.w2` becomes `gate_proj` (SiLU applies to it) and `mlp.w1`
`up_proj`, and the config's intermediate_size is halved (the official code halves it).

Exact up to 2048 positions only: beyond `seq_length` the official code switches on dynamic-NTK
rotary scaling and logn attention scaling (`use_dynamic_ntk`, `use_logn_attn`), which Qwen2 does
not have. Longer prompts (or prompt + new tokens) raise `ContextTooLongError` instead of silently
computing something else.

Chat or base: the family is "qwen-audio-chat" when generation_config.json says
`chat_format: chatml` (Qwen-Audio-Chat ships that; the base model "raw"), or when `chat=True` is
passed to the loader. Generation stops at `<|endoftext|>` always, and also at `<|im_end|>` /
`<|im_start|>` for the chat family or for any prompt written in ChatML (starting `<|im_start|>`),
as the official `chat()` does.

Vocabulary size: the special ids (`<|endoftext|>`, `<audio>`, …) are read from the tokenizer, which
numbers them after its BPE ranks, and config.json's `audio.audio_start_id` must name the same
`<audio>` id. The published checkpoints have 151,643 ranks (`<audio>` 155163); a model trained with a
smaller ranks file (the packaged nano model) has the same tags at smaller ids.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn
from transformers import Qwen2ForCausalLM
from transformers.cache_utils import DynamicCache
from transformers.models.qwen2.modeling_qwen2 import Qwen2RotaryEmbedding

from workbench.audio import DECODERS, MIN_SAMPLES, TRUNCATION_POLICIES, audio_span_tokens, encoder_frames, log_mel
from workbench.audio_checks import check_min_length
from workbench.errors import AudioTagError, CheckpointError, CheckpointFileNotFoundError, ContextTooLongError
from workbench.models.adapter import Adapter
from workbench.models.base import AudioLM, AudioSpan, ForwardOutput, ModelInputs, eager_attention
from workbench.models.cache import cache_kwarg
from workbench.models.checkpoint import (
    check_dtype_runs,
    load_into,
    read_config,
    read_json,
    resolve_device,
    resolve_dtype,
    tensor_index,
)
from workbench.models.placement import dispatch, plan_units, resolve_device_map, unit_of
from workbench.models.qwen_audio.adapter import qwen_audio_adapter
from workbench.models.qwen_audio.config import (
    QwenAudioConfig,
    build_network,
    check_vocabulary,
    is_ignored,
    network_parts,
    weight_targets,
)
from workbench.models.qwen_audio.encoder import ATTENTION_IMPLEMENTATIONS, AUDIO_BATCHING, AudioEncoder, EncoderOutput
from workbench.tokenizer import TIKTOKEN_FILE, QwenAudioTokenizer, audio_refs

__all__ = ["QwenAudio", "load_qwen_audio"]



# --- loading --------------------------------------------------------------------------------

def load_qwen_audio(path: str | Path, *, dtype: str | torch.dtype | None = None, device: str | torch.device | None = None,
                    attn: str = "sdpa", audio_batching: str = "separate", audio_decoder: str = "auto",
                    audio_on_long: str = "error", audio_on_truncated: str = "error", chat: bool | None = None,
                    device_map: str | dict | None = None) -> QwenAudio:
    """Load an official-layout Qwen-Audio / Qwen-Audio-Chat directory (safetensors only).

    dtype: None → float32 on CPU, bfloat16 on GPU. device: 'cpu', 'cuda[:i]' or 'auto'.
    attn: 'sdpa' (fast; attentions are still available: forward switches to eager for that call)
      or 'eager'. audio_batching: 'separate' (each clip encoded alone, batch-invariant) or
      'official' (all clips of a prompt as one batch, as the published code does).
    audio_decoder, audio_on_long: how `<audio>PATH</audio>` files are read (`decoder`, `on_long` of
      `workbench.audio.load_audio`): "ffmpeg" decodes exactly as the official code; audio over 30 s
      is an error unless audio_on_long="truncate" (the official code truncates silently).
    audio_on_truncated: a WAV/FLAC file holding fewer frames than its header promises is an error,
      unless "warn" (`on_truncated` of `load_audio`).
    chat: override the chat/base decision read from generation_config.json.
    device_map: instead of `device`, 'auto' (every visible GPU, balanced) or {name prefix: device}
      to spread the encoder and LLM layers over several devices (`workbench.models.placement`).
    """
    directory = Path(path).expanduser()
    if not directory.is_dir():
        raise CheckpointFileNotFoundError(f"{directory} is not a directory: pass the checkpoint's folder")
    generation_file = directory / "generation_config.json"
    generation = read_json(generation_file, "generation config") if generation_file.exists() else {}
    config = QwenAudioConfig.from_official(read_config(directory), generation, chat)
    if not (directory / TIKTOKEN_FILE).is_file():
        raise CheckpointFileNotFoundError(f"{directory} has no {TIKTOKEN_FILE}: copy the tokenizer file of the "
                                          "published checkpoint next to config.json")
    if attn not in ATTENTION_IMPLEMENTATIONS:
        raise ValueError(f"attn={attn!r}: choose one of {ATTENTION_IMPLEMENTATIONS}")
    tokenizer = QwenAudioTokenizer.from_dir(directory)
    if tokenizer.audio_start_id != config.encoder.audio_start_id:
        raise CheckpointError(f"config.json audio_start_id {config.encoder.audio_start_id} is not the tokenizer's "
                              f"<audio> id {tokenizer.audio_start_id} ({tokenizer.n_ranks} BPE ranks in "
                              f"{TIKTOKEN_FILE}): the config and the tokenizer file come from different models")
    index = tensor_index(directory)
    check_vocabulary(index, tokenizer.vocab_size, tokenizer.audio_start_id)
    with torch.device("meta"):
        network = build_network(config, attn)
    llm = network["llm"]
    if device_map is None:
        device = resolve_device(device)
        placement = {name: device for name in plan_units(network)}
    elif device is not None:
        raise ValueError(f"device={device!r} and device_map={device_map!r}: pass one of them (device_map "
                         "places every part itself)")
    else:
        placement = resolve_device_map(device_map, plan_units(network))
    devices = list(dict.fromkeys(placement.values()))
    dtype = resolve_dtype(dtype, devices[0])
    for device in devices:
        check_dtype_runs(dtype, device)
    # a non-persistent buffer, computed rather than loaded
    with torch.device(placement["llm.model.rotary_emb"]):
        llm.model.rotary_emb = Qwen2RotaryEmbedding(llm.config)
    units = sorted(placement, key=len, reverse=True)   # longest first: the innermost unit wins
    load_into(network, index, lambda name: weight_targets(name, config.llm.hidden_size), dtype=dtype,
              device=lambda target: placement[next(u for u in units if unit_of(target, u))], ignored=is_ignored)
    if device_map is not None:
        dispatch(network, placement)
    llm.config.dtype = dtype
    network.eval()
    return QwenAudio(network, tokenizer, config,
                     audio_batching=audio_batching, audio_decoder=audio_decoder, audio_on_long=audio_on_long,
                     audio_on_truncated=audio_on_truncated, path=directory)


# --- the model ------------------------------------------------------------------------------

class QwenAudio(AudioLM):
    audio_options_settable = True   # wb.load(…, audio_on_long=…) and with_options set how files are read
    family = "qwen-audio"       # "qwen-audio-chat" for the chat model (set per instance)
    label = "Qwen-Audio (v1, -Chat, nano)"
    parts = frozenset({"capture", "interventions", "splice", "chat"})

    def __init__(self, network: nn.ModuleDict, tokenizer: QwenAudioTokenizer, config: QwenAudioConfig, *,
                 audio_batching: str = "separate", audio_decoder: str = "auto", audio_on_long: str = "error",
                 audio_on_truncated: str = "error", path: Path | None = None):
        for name, value, choices in (("audio_batching", audio_batching, AUDIO_BATCHING),
                                     ("audio_decoder", audio_decoder, DECODERS),
                                     ("audio_on_long", audio_on_long, ("error", "truncate")),
                                     ("audio_on_truncated", audio_on_truncated, TRUNCATION_POLICIES)):
            if value not in choices:
                raise ValueError(f"{name}={value!r}: choose one of {choices}")
        self.network, self.tokenizer, self.config, self.path = network, tokenizer, config, path
        self.audio_batching, self.audio_decoder, self.audio_on_long = audio_batching, audio_decoder, audio_on_long
        self.audio_on_truncated = audio_on_truncated
        self.family = "qwen-audio-chat" if config.chat else "qwen-audio"
        t = tokenizer
        self.stop_token_ids = (t.endoftext_id, t.im_end_id, t.im_start_id) if config.chat else (t.endoftext_id,)
        self.audio_token_id = t.audio_pad_id   # the audio placeholder, read by workbench.analysis.positions

    @property
    def encoder(self) -> AudioEncoder:
        return self.network["encoder"]

    @property
    def llm(self) -> Qwen2ForCausalLM:
        return self.network["llm"]

    @property
    def device(self) -> torch.device:
        """Where inputs go (the token embedding's device; with a device map the logits come out on
        the LM head's)."""
        return self.llm.model.embed_tokens.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.llm.lm_head.weight.dtype

    def with_options(self, *, audio_batching: str | None = None, audio_decoder: str | None = None,
                     audio_on_long: str | None = None, audio_on_truncated: str | None = None) -> QwenAudio:
        """The same weights (shared, not copied) with other audio options."""
        return QwenAudio(self.network, self.tokenizer, self.config, path=self.path,
                         audio_batching=audio_batching or self.audio_batching,
                         audio_decoder=audio_decoder or self.audio_decoder,
                         audio_on_long=audio_on_long or self.audio_on_long,
                         audio_on_truncated=audio_on_truncated or self.audio_on_truncated)

    def stop_ids(self, inputs: ModelInputs) -> frozenset[int]:
        chatml = inputs.text.lstrip().startswith("<|im_start|>")
        chat_stops = frozenset({self.tokenizer.im_end_id, self.tokenizer.im_start_id})
        return frozenset(self.stop_token_ids) | (chat_stops if chatml else frozenset())

    def decode(self, ids: Sequence[int], *, keep_tags: bool = True) -> str:
        # Generated ids may be embedding padding rows past the tokenizer: shown, not an error.
        return self.tokenizer.decode(list(ids), keep_tags=keep_tags, unused="mark")

    def _parameter_groups(self) -> dict[str, nn.Module]:
        return network_parts(self.network)

    def _adapter(self) -> Adapter:
        return qwen_audio_adapter(self)

    # -- inputs ------------------------------------------------------------------------------
    def _build_inputs(self, text: str, audios: Sequence[Any], audio_dir: str | Path | None) -> ModelInputs:
        refs = audio_refs(text)
        if audios and len(audios) != len(refs):
            raise AudioTagError(f"{'more' if len(refs) > len(audios) else 'fewer'} audio tags than audios: the prompt "
                                f"has {len(refs)} <audio>…</audio> ({refs}) but {len(audios)} audio(s) were given; "
                                "give one audio per tag, in order (or none, to read the paths in the tags)")
        samples = [self.read_audio(source, audio_dir) for source in (audios or refs)]
        for k, (ref, clip) in enumerate(zip(refs, samples)):
            check_min_length(len(clip), MIN_SAMPLES, f"audio {k} ({ref!r})", "Qwen-Audio")
        spans = [audio_span_tokens(len(s)) for s in samples]
        ids = self.tokenizer.encode_with_audio(text, spans)
        starts = [i for i, token in enumerate(ids) if token == self.tokenizer.audio_start_id]
        mels = log_mel(samples) if samples else []
        audio = [AudioSpan(source=ref, n_samples=len(s), start=start, n_positions=span, mel=mel)
                 for ref, s, start, span, mel in zip(refs, samples, starts, spans, mels)]
        return ModelInputs(text=text, input_ids=torch.tensor([ids]), audios=audio)

    # -- audio -------------------------------------------------------------------------------
    def encode_audio(self, inputs: ModelInputs, *, output_attentions: bool = False) -> EncoderOutput:
        """The audio embeddings spliced into the prompt ([bos, tokens…, eos] per audio)."""
        if not inputs.audios:
            return EncoderOutput(embeds=[], attentions=[] if output_attentions else None)
        mel = torch.stack([a.mel for a in inputs.audios])
        frames = [encoder_frames(a.n_samples) for a in inputs.audios]
        return self.encoder.encode(mel, frames, batching=self.audio_batching, output_attentions=output_attentions)

    def embed(self, inputs: ModelInputs, audio_embeds: Sequence[torch.Tensor]) -> torch.Tensor:
        """Input embeddings (L, d) with each `<audio>`…`</audio>` span overwritten by its audio."""
        embeds = self.llm.model.embed_tokens(inputs.input_ids[0].to(self.device))
        for span, audio in zip(inputs.audios, audio_embeds, strict=True):
            if audio.shape[0] != span.n_positions:
                raise ValueError(f"audio {span.source!r} gives {audio.shape[0]} embeddings for a span of "
                                 f"{span.n_positions} positions: rebuild the inputs with model.inputs()")
            embeds[span.start:span.stop] = audio.to(embeds.device, embeds.dtype)
        return embeds

    def _check_length(self, positions: int, what: str) -> None:
        limit = self.config.max_positions
        if positions <= limit:
            return
        official = self.config.official
        scaled = [text for flag, text in (("use_dynamic_ntk", "dynamic-NTK rotary scaling"),
                                          ("use_logn_attn", "logn attention scaling")) if official.get(flag)]
        if scaled:   # QwenAudioConfig: the limit is then seq_length
            reason = (f"beyond seq_length {limit} the official model applies {' and '.join(scaled)} (config.json: "
                      f"{', '.join(f'{flag}=true' for flag in ('use_dynamic_ntk', 'use_logn_attn') if official.get(flag))}"
                      "), which this implementation does not")
        else:
            reason = (f"this checkpoint's config.json sets max_position_embeddings {limit} (with use_dynamic_ntk and "
                      "use_logn_attn off), the longest sequence it is built for")
        raise ContextTooLongError(
            f"{what} needs {positions} positions, more than {limit}: {reason}; shorten the prompt (fewer or shorter "
            "audios, less history) or ask for fewer new tokens")

    def _prepare(self, batch: list[ModelInputs], output_encoder_attentions: bool = False,
                 audio_embeds: Sequence[Sequence[torch.Tensor]] | None = None):
        """Encoded audio, left-padded input embeddings, mask and positions; `audio_embeds` (per prompt,
        per audio) when the audio is already encoded."""
        encoded = ([EncoderOutput(embeds=list(embeds), attentions=None) for embeds in audio_embeds]
                   if audio_embeds is not None else
                   [self.encode_audio(inputs, output_attentions=output_encoder_attentions) for inputs in batch])
        embeds = [self.embed(inputs, out.embeds) for inputs, out in zip(batch, encoded)]
        return encoded, *_left_pad(embeds)

    # -- forward -----------------------------------------------------------------------------
    def _forward_batch(self, batch: list[ModelInputs], *, output_hidden_states: bool = False,
                       output_attentions: bool = False, output_encoder_attentions: bool = False,
                       logits_to_keep: int | None = None) -> list[ForwardOutput]:
        for inputs in batch:
            self._check_length(inputs.length, f"the prompt ({inputs.length} tokens)")
        shortest = min(inputs.length for inputs in batch)
        if logits_to_keep is not None and not 0 < logits_to_keep <= shortest:
            raise ValueError(f"logits_to_keep={logits_to_keep!r}: give 1…{shortest} (the shortest prompt's length)")
        encoded, embeds, mask, positions = self._prepare(batch, output_encoder_attentions)
        with eager_attention(self.llm, output_attentions):
            out = self.llm.model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=False,
                                 output_hidden_states=output_hidden_states, output_attentions=output_attentions)
        hidden = out.last_hidden_state
        logits = self.llm.lm_head(hidden if logits_to_keep is None else hidden[:, -logits_to_keep:]).float()
        results = []
        for i, (inputs, audio) in enumerate(zip(batch, encoded)):
            pad = embeds.shape[1] - inputs.length   # left padding: item i starts at `pad`
            results.append(ForwardOutput(
                logits=logits[i:i + 1, pad:] if logits_to_keep is None else logits[i:i + 1],
                last_hidden_state=hidden[i:i + 1, pad:],
                hidden_states=tuple(h[i:i + 1, pad:] for h in out.hidden_states) if output_hidden_states else None,
                attentions=tuple(a[i:i + 1, :, pad:, pad:] for a in out.attentions) if output_attentions else None,
                audio_embeds=audio.embeds, encoder_attentions=audio.attentions))
        return results

    # -- generation --------------------------------------------------------------------------
    def _generate_batch(self, batch: list[ModelInputs], *, max_new_tokens: int,
                        audio_embeds: Sequence[Sequence[torch.Tensor]] | None = None) -> list[list[int]]:
        """Greedy decoding with a KV cache; the audio enters through the prompt's embeddings only
        (`audio_embeds`, per prompt, when it is already encoded)."""
        for inputs in batch:
            self._check_length(inputs.length + max_new_tokens - 1,
                               f"a prompt of {inputs.length} tokens with max_new_tokens={max_new_tokens}")
        _, embeds, mask, positions = self._prepare(batch, audio_embeds=audio_embeds)
        stops = [self.stop_ids(inputs) for inputs in batch]
        cache = DynamicCache(config=self.llm.config)
        step_input: dict[str, torch.Tensor] = {"inputs_embeds": embeds}
        new: list[list[int]] = [[] for _ in batch]
        for _ in range(max_new_tokens):
            hidden = self.llm.model(**step_input, attention_mask=mask, position_ids=positions, use_cache=True,
                                    **cache_kwarg(self.llm.model, cache)).last_hidden_state
            next_ids = self.llm.lm_head(hidden[:, -1]).argmax(-1)
            for ids, stop, token in zip(new, stops, next_ids.tolist()):
                if not (ids and ids[-1] in stop):
                    ids.append(token)
            if all(ids[-1] in stop for ids, stop in zip(new, stops)):
                break
            step_input = {"input_ids": next_ids[:, None]}
            positions = positions[:, -1:] + 1
            if mask is not None:
                mask = torch.cat([mask, mask.new_ones(len(batch), 1)], dim=1)
        return new


def _left_pad(embeds: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """(B, L, d) left-padded embeddings, (B, L) mask (None without padding), position ids from 0.

    Left padding keeps every prompt's last token in the last column, and positions counted from
    each prompt's own first token keep the rotary phases what they are for the prompt alone.
    """
    longest = max(e.shape[0] for e in embeds)
    padded = embeds[0].new_zeros(len(embeds), longest, embeds[0].shape[-1])
    mask = torch.zeros(len(embeds), longest, dtype=torch.long, device=padded.device)
    for i, e in enumerate(embeds):
        padded[i, longest - e.shape[0]:] = e
        mask[i, longest - e.shape[0]:] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return padded, (None if bool(mask.all()) else mask), positions
