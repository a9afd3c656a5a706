"""Whisper behind the workbench surface: transformers' `WhisperForConditionalGeneration`.

Whisper is the encoder Qwen-Audio grew from, so the same prompts are useful on it: a prompt is
`<audio>PATH</audio>` followed by the *decoder prefix*, Whisper's own special tokens, e.g.
`<audio>jfk.flac</audio><|startoftranscript|><|en|><|transcribe|><|notimestamps|>`. The audio goes
through the encoder; the prefix is what the decoder is fed; generation continues it greedily
until `<|endoftext|>`. Unlike Qwen-Audio, the audio occupies no position of the decoder's
sequence: the decoder reaches it only through cross-attention (`WhisperForwardOutput.cross_attentions`),
so each `AudioSpan` has `n_positions == 0`.

`load_whisper` reads a transformers Whisper directory, a faster-whisper (CTranslate2) directory
(converted in memory, `workbench.models.ctranslate2`), or a packaged name (`whisper-base`,
`whisper-tiny.en`; converted once and cached, `workbench.models.registry`).

Decoding is plain greedy argmax, as the official Qwen-Audio evaluation decodes: none of Whisper's
own heuristics (token suppression, timestamp rules, temperature fallback), so what comes out is
what the model puts first. Nor does anything fill in the tags: a multilingual Whisper prompted with
`<|startoftranscript|>` alone repeats one word ("And And And …"), so a prefix that starts a
transcript without a language and a task tag gets a `MissingWhisperTagsWarning`.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from transformers import WhisperForConditionalGeneration, WhisperProcessor
from transformers.cache_utils import DynamicCache, EncoderDecoderCache
from transformers.models.whisper.tokenization_whisper import LANGUAGES

from workbench.audio import ENCODER_FRAME_SECONDS
from workbench.errors import (
    ContextTooLongError,
    MissingWhisperTagsWarning,
    NotAWhisperDirectoryError,
    UnknownModelError,
    UnknownTagWarning,
    WhisperPromptError,
)
from workbench.models import registry
from workbench.models.adapter import (
    CROSS_AXES,
    ENCODER_HEAD_AXES,
    HEAD_AXES,
    SEQUENCE_AXES,
    Adapter,
    Interventions,
    Point,
    Stack,
    encoder_points,
    head_points,
    natural,
    sequence_points,
)
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
from workbench.models.ctranslate2_convert import is_ct2_directory, load_ct2_whisper

ATTENTION_IMPLEMENTATIONS = ("sdpa", "eager")
STANDARD_PREFIX = "<|startoftranscript|><|en|><|transcribe|><|notimestamps|>"
AUDIO_REF = re.compile(r"<audio>(.*?)</audio>", re.DOTALL)
TAG_LIKE = re.compile(r"<\|[^<>|]*\|>")



@dataclass
class WhisperForwardOutput(ForwardOutput):
    """`ForwardOutput` of the decoder, plus what only an encoder-decoder has.

    `hidden_states`/`attentions`/`last_hidden_state` are the decoder's; `audio_embeds[0]` is the
    encoder's output (frames, d); `encoder_attentions[0]` the encoder's self-attention per block.
    """

    cross_attentions: tuple[torch.Tensor, ...] | None = None       # per decoder layer, (1, heads, L, frames)
    encoder_hidden_states: tuple[torch.Tensor, ...] | None = None  # conv + positions, then every block (last: normed)


def load_whisper(path_or_name: str | Path, *, dtype: torch.dtype | str | None = None,
                 device: str | torch.device | None = None, attn: str = "sdpa") -> WhisperLM:
    """Load Whisper from a packaged name, a transformers directory or a faster-whisper directory.

    dtype defaults to float32 and device to CPU. attn is "sdpa" (fast) or "eager"; attention
    weights are returned either way (the model switches to eager while it captures them).
    """
    if attn not in ATTENTION_IMPLEMENTATIONS:
        raise ValueError(f"attn={attn!r}: use one of {ATTENTION_IMPLEMENTATIONS}")
    if isinstance(path_or_name, str) and path_or_name in registry.KNOWN_MODELS:
        directory = registry.ensure_converted(path_or_name)
    else:
        directory = Path(path_or_name).expanduser()
        if not directory.is_dir():
            raise UnknownModelError(
                f"{str(path_or_name)!r} is neither a packaged model ({', '.join(sorted(registry.KNOWN_MODELS))}) "
                "nor a directory: pass one of those names or a Whisper checkpoint directory")
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    check_dtype_runs(dtype, device)
    model, processor = _read_directory(directory, dtype, attn)
    return WhisperLM(model.to(device), processor, source=str(path_or_name))


def _read_directory(directory: Path, dtype: torch.dtype, attn: str) -> tuple[WhisperForConditionalGeneration, WhisperProcessor]:
    config_path = directory / "config.json"
    config = read_config_json(config_path) if config_path.is_file() else {}
    if config.get("model_type") == "whisper":
        model = WhisperForConditionalGeneration.from_pretrained(directory, dtype=dtype, attn_implementation=attn)
        return model.eval(), WhisperProcessor.from_pretrained(directory)
    if is_ct2_directory(directory):
        converted = load_ct2_whisper(directory)
        converted.model.set_attn_implementation(attn)
        return converted.model.to(dtype).eval(), converted.processor
    found = sorted(p.name for p in directory.iterdir())[:12]
    raise NotAWhisperDirectoryError(
        f"{directory} is not a Whisper checkpoint: expected config.json with model_type 'whisper' (a "
        f"transformers directory) or model.bin + tokenizer.json (a faster-whisper directory); found {found}")


class WhisperLM(AudioLM):
    family = "whisper"
    label = "Whisper"
    parts = frozenset({"capture", "interventions"})
    example_prompt = repr(STANDARD_PREFIX)

    def __init__(self, model: WhisperForConditionalGeneration, processor: WhisperProcessor, source: str = ""):
        self.model, self.processor, self.source = model, processor, source
        self.tokenizer = processor.tokenizer
        self.config = model.config
        self.stop_token_ids = (self.tokenizer.convert_tokens_to_ids("<|endoftext|>"),)
        self._tags = set(self.tokenizer.get_added_vocab())
        self.multilingual = _is_multilingual(model)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # --- prompt → inputs -------------------------------------------------------------------
    def _build_inputs(self, text: str, audios: Sequence[Any], audio_dir: str | Path | None) -> ModelInputs:
        refs = AUDIO_REF.findall(text)
        prefix = AUDIO_REF.sub("", text)
        if "<audio>" in prefix or "</audio>" in prefix:
            raise WhisperPromptError(f"unbalanced <audio> tags in {text!r}: write <audio>PATH</audio>")
        if refs and audios and len(refs) != len(audios):
            raise WhisperPromptError(f"the prompt names {len(refs)} audio(s) but {len(audios)} were passed: "
                                     "pass one audio per <audio>…</audio>, or none to read the paths")
        items = list(audios) if audios else refs
        if len(items) != 1:
            raise WhisperPromptError(
                f"Whisper takes exactly one audio per prompt, got {len(items)} in {text!r}: write one "
                f"<audio>PATH</audio> before the decoder prefix, or pass audio=")
        if not prefix:
            raise WhisperPromptError(f"the prompt {text!r} has no decoder prefix: Whisper's decoder needs at "
                                     f"least <|startoftranscript|>, e.g. {STANDARD_PREFIX}")
        self._warn_unknown_tags(prefix)
        self._warn_missing_tags(prefix)
        source = refs[0] if refs else audio_label(items[0], 0)
        audio = self.read_audio(items[0], audio_dir)
        features = self.processor.feature_extractor(audio, sampling_rate=16000, return_tensors="pt").input_features
        ids = self.tokenizer.encode(prefix, add_special_tokens=False)
        span = AudioSpan(source=source, n_samples=len(audio), start=0, n_positions=0, mel=features[0].float())
        return ModelInputs(text=text, input_ids=torch.tensor([ids]), audios=[span],
                           extra={"input_features": features, "encoder_frames": self.config.max_source_positions})

    def _warn_unknown_tags(self, prefix: str) -> None:
        unknown = [name for name in dict.fromkeys(TAG_LIKE.findall(prefix)) if name not in self._tags]
        if unknown:
            warnings.warn(f"{', '.join(unknown)} look like tags but are not in Whisper's vocabulary, so they are "
                          "tokenized as plain text", UnknownTagWarning, stacklevel=4)

    def _warn_missing_tags(self, prefix: str) -> None:
        """A multilingual model needs `<|lang|><|task|>` after `<|startoftranscript|>`: without them it
        has not been told what to do, and greedy decoding loops on one word."""
        sot = "<|startoftranscript|>"
        if not self.multilingual or sot not in prefix:
            return
        after = TAG_LIKE.findall(prefix.split(sot, 1)[1])
        languages = {f"<|{code}|>" for code in LANGUAGES}
        missing = [what for what, present in (("a language tag (e.g. <|en|>)", any(t in languages for t in after)),
                                              ("a task tag (<|transcribe|> or <|translate|>)",
                                               any(t in ("<|transcribe|>", "<|translate|>") for t in after)))
                   if not present]
        if missing:
            warnings.warn(f"the Whisper prefix {prefix!r} lacks {' and '.join(missing)} after {sot}: a multilingual "
                          f"Whisper then has no task and tends to repeat one word. Write the full prefix, e.g. "
                          f"{STANDARD_PREFIX}", MissingWhisperTagsWarning, stacklevel=4)

    # --- forward ---------------------------------------------------------------------------
    def _encode(self, inputs: ModelInputs, **flags: bool):
        features = inputs.extra["input_features"].to(self.device, self.model.dtype)
        return self.model.model.encoder(input_features=features, **flags)

    def _forward(self, inputs: ModelInputs, *, output_hidden_states: bool = False, output_attentions: bool = False,
                 output_encoder_attentions: bool = False, logits_to_keep: int | None = None) -> WhisperForwardOutput:
        with eager_attention(self.model, output_attentions or output_encoder_attentions):
            encoded = self._encode(inputs, output_attentions=output_encoder_attentions,
                                   output_hidden_states=output_hidden_states)
            decoded = self.model.model.decoder(
                input_ids=inputs.input_ids.to(self.device), encoder_hidden_states=encoded.last_hidden_state,
                output_attentions=output_attentions, output_hidden_states=output_hidden_states, use_cache=False)
        hidden = decoded.last_hidden_state
        kept = hidden if logits_to_keep is None else hidden[:, -logits_to_keep:]
        return WhisperForwardOutput(
            logits=self.model.proj_out(kept).float(), last_hidden_state=hidden,
            hidden_states=decoded.hidden_states if output_hidden_states else None,
            attentions=decoded.attentions if output_attentions else None,
            audio_embeds=[encoded.last_hidden_state[0]],
            encoder_attentions=[tuple(a[0] for a in encoded.attentions)] if output_encoder_attentions else None,
            cross_attentions=decoded.cross_attentions if output_attentions else None,
            encoder_hidden_states=encoded.hidden_states if output_hidden_states else None,
        )

    # --- the audio encoded once, the decoder run and decoded from it -------------------------
    def encode_audio(self, inputs: ModelInputs) -> tuple[torch.Tensor, DynamicCache]:
        """The encoder's output and every decoder layer's cross-attention keys and values: they
        depend on the audio only, so computed once they serve every decoder run on this audio
        (a decoder pass over 1500 frames then costs ~10x less)."""
        return self._cross_cached(inputs, self._encode(inputs).last_hidden_state)

    def encode_after(self, inputs: ModelInputs, layer: int, hidden: torch.Tensor) -> tuple[torch.Tensor, DynamicCache]:
        """`encode_audio` from encoder layer `layer`'s output `hidden` (1, frames, d): the layers after
        it and the final norm, as the encoder's forward runs them, then the cross-attention cache."""
        encoder = self.model.model.encoder
        for module in encoder.layers[layer + 1:]:
            output = module(hidden, None)
            hidden = output[0] if isinstance(output, tuple) else output
        return self._cross_cached(inputs, encoder.layer_norm(hidden))

    def _cross_cached(self, inputs: ModelInputs, hidden: torch.Tensor) -> tuple[torch.Tensor, DynamicCache]:
        cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        decoder = self.model.model.decoder
        decoder(input_ids=inputs.input_ids[:, :1].to(self.device), encoder_hidden_states=hidden, use_cache=True,
                **cache_kwarg(decoder, cache))
        return hidden, cache.cross_attention_cache

    def _decoder_step(self, ids: torch.Tensor, audio: tuple[torch.Tensor, DynamicCache],
                      cache: EncoderDecoderCache) -> torch.Tensor:
        decoder = self.model.model.decoder
        return decoder(input_ids=ids.to(self.device), encoder_hidden_states=audio[0], use_cache=True,
                       **cache_kwarg(decoder, cache)).last_hidden_state

    def run(self, inputs: ModelInputs, audio: tuple[torch.Tensor, DynamicCache],
            keep: slice = slice(None)) -> torch.Tensor:
        """Logits (kept rows, vocab) of the decoder prefix, from the audio `encode_audio` returned."""
        hidden = self._decoder_step(inputs.input_ids, audio, EncoderDecoderCache(DynamicCache(), audio[1]))
        return self.model.proj_out(hidden[0, keep]).float()

    def greedy(self, inputs: ModelInputs, audio: tuple[torch.Tensor, DynamicCache], max_new_tokens: int) -> list[int]:
        """Greedy decoding with a KV cache from the encoded audio; new ids, stop token included."""
        limit = self.config.max_target_positions
        if inputs.length + max_new_tokens - 1 > limit:
            raise ContextTooLongError(
                f"a decoder prefix of {inputs.length} tokens with max_new_tokens={max_new_tokens} exceeds "
                f"Whisper's {limit} decoder positions: lower max_new_tokens to at most {limit - inputs.length + 1}")
        cache, ids, new = EncoderDecoderCache(DynamicCache(), audio[1]), inputs.input_ids, []
        stops = self.stop_ids(inputs)
        for _ in range(max_new_tokens):
            token = int(self.model.proj_out(self._decoder_step(ids, audio, cache)[0, -1]).argmax())
            new.append(token)
            if token in stops:
                break
            ids = torch.tensor([[token]])
        return new

    def _generate_ids(self, inputs: ModelInputs, *, max_new_tokens: int) -> list[int]:
        return self.greedy(inputs, self.encode_audio(inputs), max_new_tokens)

    def decode(self, ids: Sequence[int], *, keep_tags: bool = True) -> str:
        # The tokenizers backend, not WhisperTokenizer.decode: the latter drops timestamp tokens
        # even when asked to keep special tokens.
        return self.tokenizer.backend_tokenizer.decode(list(ids), skip_special_tokens=not keep_tags)

    def _parameter_groups(self) -> dict[str, torch.nn.Module]:
        groups = {"encoder": self.model.model.encoder, "decoder": self.model.model.decoder}
        if not self.config.tie_word_embeddings:
            groups["proj_out"] = self.model.proj_out
        return groups

    def _adapter(self) -> Adapter:
        """Encoder `encoder.layers.{i}.*`; decoder `decoder.embed`, `decoder.layers.{i}.self_attn.*`,
        `.cross_attn.*`, `.resid_pre`, `.mlp.out` (fc2's output), `.resid_post`. No rotary embeddings:
        q and k are the projections themselves (positions are added to the embeddings). The audio
        occupies no position of the decoder's sequence: the decoder reaches it through cross-attention
        over the encoder's 1500 frames of 20 ms."""
        whisper, config = self.model, self.config
        encoder, decoder = whisper.model.encoder, whisper.model.decoder
        points = encoder_points("encoder.layers", encoder.layers, "self_attn", "attention",
                                config.encoder_attention_heads, config.d_model, mlp="fc2")
        points.update(sequence_points("decoder", decoder.layers, "self_attn", config.decoder_attention_heads,
                                      config.d_model, attn_name="self_attn", mlp="fc2", out_proj="out_proj"))
        for i, layer in enumerate(decoder.layers):
            base = f"decoder.layers.{i}.cross_attn"
            points[f"{base}.pattern"] = Point(f"{base}.pattern", layer.encoder_attn, "attention", CROSS_AXES,
                                              n_heads=config.decoder_attention_heads)
            points[f"{base}.out"] = Point(f"{base}.out", layer.encoder_attn, "output", SEQUENCE_AXES,
                                          width=config.d_model)
            points.update(head_points(base, layer.encoder_attn, layer.encoder_attn.out_proj,
                                      config.decoder_attention_heads, layer.encoder_attn.head_dim, "attention",
                                      HEAD_AXES, ENCODER_HEAD_AXES))   # k, v over the 1500 encoder frames
        heads = getattr(whisper.generation_config, "alignment_heads", None) or ()
        return Adapter(
            family=self.family, points=dict(sorted(points.items(), key=lambda item: natural(item[0]))), root=whisper,
            sequence=Stack("decoder", tuple(decoder.layers), tuple(layer.self_attn.out_proj for layer in decoder.layers),
                           config.decoder_attention_heads, mlps=tuple(layer.fc2 for layer in decoder.layers),
                           cross_inputs=tuple(layer.encoder_attn.out_proj for layer in decoder.layers)),
            encoder=Stack("encoder", tuple(encoder.layers), tuple(layer.self_attn.out_proj for layer in encoder.layers),
                          config.encoder_attention_heads),
            norm=decoder.layer_norm, unembed=whisper.proj_out,
            patterns={"self": "decoder.layers.{}.self_attn.pattern", "cross": "decoder.layers.{}.cross_attn.pattern",
                      "encoder": "encoder.layers.{}.attn.pattern"},
            audio_attention="cross",
            encoder_frames=lambda inputs: [config.max_source_positions] * len(inputs.audios),
            frame_seconds=ENCODER_FRAME_SECONDS, step_seconds=ENCODER_FRAME_SECONDS,
            encode_text=lambda text: self.tokenizer.encode(text, add_special_tokens=False),
            first_special_id=self.tokenizer.eos_token_id, transcript_lead=" ", audio_marks=("<audio>",),
            alignment_heads=tuple((int(layer), int(head)) for layer, head in heads),
            interventions=Interventions(encode=self.encode_audio, run=self.run, greedy=self.greedy,
                                        encode_after=self.encode_after))

def _is_multilingual(model: WhisperForConditionalGeneration) -> bool:
    """openai-whisper's test for a real vocabulary: the English-only models have 51,864 ids, the
    multilingual 51,865 or more. The generation config's `is_multilingual` is not trusted there (a
    faster-whisper config lists every language even for tiny.en); it decides only for the small
    vocabularies of test models."""
    vocab = model.config.vocab_size
    if vocab >= 51864:
        return vocab >= 51865
    return bool(getattr(model.generation_config, "is_multilingual", False))
