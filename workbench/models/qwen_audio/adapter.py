"""What Qwen-Audio v1 (and nano, and -Chat) is made of, for the analyses (`workbench.models.adapter`).

    encoder.blocks.{i}.attn.pattern / .resid_post    our `AudioEncoder`: patterns recomputed by a pre-hook
    llm.embed, llm.layers.{i}.attn.pattern / .attn.out / .resid_post    transformers' Qwen2
    ….resid_pre, .mlp.out, .attn.q / .k / .v / .z on both stacks (LLM q and k after rotary
    embeddings; the encoder has none: sinusoidal positions are added to its input)

The audio becomes 40 ms tokens inside the LLM's own sequence (`<audio>` bos, tokens, `</audio>`
eos), so the LLM's self-attention is what reaches it, and the audio can be encoded once and
spliced into any prompt that carries it: every optional part is declared.
"""
from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import DynamicCache

from workbench.audio import ENCODER_FRAME_SECONDS, SECONDS_PER_TOKEN, encoder_frames
from workbench.models.adapter import Adapter, Interventions, Splice, Stack, encoder_points, sequence_points
from workbench.models.base import ModelInputs


def qwen_audio_adapter(model: Any) -> Adapter:
    """The adapter of a `QwenAudio` (attributes are read at call time, so a patched method is seen)."""
    encoder, llm, tokenizer = model.encoder, model.llm, model.tokenizer
    config = llm.config
    points = encoder_points("encoder.blocks", encoder.blocks, "attn", "encoder_attention", encoder.config.n_head,
                            encoder.config.n_state, out_proj="out")
    points.update(sequence_points("llm", llm.model.layers, "self_attn", config.num_attention_heads,
                                  config.hidden_size))
    layers, blocks = tuple(llm.model.layers), tuple(encoder.blocks)

    def with_text(prefix: ModelInputs, text: str) -> ModelInputs:
        # The whole text is tokenized, as a plain forward would; `<audio>` is a special token, so
        # the audio spans keep the positions they have in the prefix.
        ids = tokenizer.encode_with_audio(prefix.text + text, [a.n_positions for a in prefix.audios])
        return ModelInputs(text=prefix.text + text, input_ids=torch.tensor([ids]), audios=prefix.audios)

    def encode(inputs: ModelInputs) -> list[torch.Tensor]:
        return model.encode_audio(inputs).embeds

    def run(inputs: ModelInputs, audio: list[torch.Tensor], keep: slice = slice(None)) -> torch.Tensor:
        model._check_length(inputs.length, f"the prompt ({inputs.length} tokens)")
        embeds = model.embed(inputs, audio)[None]
        positions = torch.arange(embeds.shape[1], device=embeds.device)[None]
        hidden = llm.model(inputs_embeds=embeds, position_ids=positions, use_cache=False).last_hidden_state
        return llm.lm_head(hidden[0, keep]).float()

    def new_cache(layers: tuple = ()) -> DynamicCache:
        # The LLM's update concatenates onto copies, so cached layers handed in are never modified.
        return DynamicCache(list(layers), config=llm.config) if layers else DynamicCache(config=llm.config)

    def greedy(inputs: ModelInputs, audio: list[torch.Tensor], max_new_tokens: int) -> list[int]:
        return model._generate_batch([inputs], max_new_tokens=max_new_tokens, audio_embeds=[audio])[0]

    return Adapter(
        family=model.family, points=points, root=model.network,
        sequence=Stack("llm", layers, tuple(layer.self_attn.o_proj for layer in layers), config.num_attention_heads,
                       mlps=tuple(layer.mlp for layer in layers)),
        encoder=Stack("encoder", blocks, tuple(block.attn.out for block in blocks), encoder.config.n_head),
        norm=llm.model.norm, unembed=llm.lm_head,
        patterns={"self": "llm.layers.{}.attn.pattern", "encoder": "encoder.blocks.{}.attn.pattern"},
        audio_attention="self",
        encoder_frames=lambda inputs: [encoder_frames(a.n_samples) for a in inputs.audios],
        frame_seconds=ENCODER_FRAME_SECONDS, step_seconds=SECONDS_PER_TOKEN,
        encode_text=tokenizer.encode, first_special_id=tokenizer.endoftext_id, transcript_lead="",
        audio_marks=("<audio>",),
        interventions=Interventions(encode=encode, run=run, greedy=greedy),
        splice=Splice(encode_audio=encode, embed=lambda inputs, audio: model.embed(inputs, audio), body=llm.model,
                      head=llm.lm_head, new_cache=new_cache, with_text=with_text,
                      max_positions=model.config.max_positions),
        chat=tokenizer)
