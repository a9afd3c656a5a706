"""Qwen-Audio (v1) audio encoder: Whisper-large-v2's encoder plus pooling, projection and bos/eos.

log-mel (80, 2T) → conv1 + GELU → conv2 (stride 2) + GELU → + sinusoids → pre-LN blocks
→ AvgPool1d(2, 2) → ln_post → proj → [bos, tokens…, eos]

Parameter names match the official checkpoint under `transformer.audio.` so the weights load
without renaming. Two ways to encode several clips (see `encode`):
- "separate" (default): each clip on its own, trimmed to its own 2·T mel frames. An audio's
  embeddings then depend on that audio only, which is what attribution and batching need.
- "official": all clips of a prompt as one batch trimmed to the longest clip, padded frames zeroed
  and masked as keys, as the published code does. A shorter clip's last convolution windows then
  read the padding's log-mel frames, so its embeddings depend on the other clips (up to 7.5e-4 in
  the fixture's two-audio case).

Nano v2 (recipes/v2) adds a layer mix, declared in config.json's "audio" block by `mixed_layers`
(1-based block numbers) and `adapter_layers`: the outputs of those blocks are pooled, summed with
softmax(`layer_logits`) weights, and run through `adapter` blocks before ln_post. Why: words sharpen
with depth while pitch fades, and a learned mix keeps both (recipes/v2/encoder_v2.py measures it).
Without those keys (both published checkpoints) the encoder is exactly the one above.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

AUDIO_BATCHING = ("separate", "official")
ATTENTION_IMPLEMENTATIONS = ("sdpa", "eager")


@dataclass(frozen=True)
class EncoderConfig:
    """The official config's `"audio"` block."""

    n_mels: int
    n_ctx: int
    n_state: int
    n_head: int
    n_layer: int
    output_dim: int
    avg_pool: bool = True
    add_audio_bos_eos_token: bool = True
    audio_start_id: int = 155163
    mixed_layers: tuple[int, ...] = ()      # nano v2: blocks whose outputs are mixed (empty: the last block only)
    adapter_layers: int = 0                 # nano v2: blocks run on the mix before ln_post

    @classmethod
    def from_official(cls, audio: dict) -> EncoderConfig:
        known = {name: audio[name] for name in cls.__dataclass_fields__ if name in audio}
        missing = [name for name in ("n_mels", "n_ctx", "n_state", "n_head", "n_layer", "output_dim")
                   if name not in audio]
        if missing:
            raise ValueError(f"the config's 'audio' block lacks {missing}: it is not a Qwen-Audio v1 "
                             "encoder config (expected n_mels, n_ctx, n_state, n_head, n_layer, output_dim)")
        if "mixed_layers" in known:
            known["mixed_layers"] = tuple(known["mixed_layers"])
        config = cls(**known)
        if config.mixed_layers and not all(isinstance(i, int) and 1 <= i <= config.n_layer
                                           for i in config.mixed_layers):
            raise ValueError(f"the config's 'audio' block has mixed_layers={list(config.mixed_layers)}: each must "
                             f"be a block number 1…{config.n_layer} (n_layer), the output of that block")
        if config.adapter_layers and not config.mixed_layers:
            raise ValueError("the config's 'audio' block has adapter_layers without mixed_layers: the adapter "
                             "runs on the layer mix, so a checkpoint with one has both (nano v2)")
        if not (config.avg_pool and config.add_audio_bos_eos_token):
            # The span arithmetic (n_tok + 2 positions per clip) assumes both, as both published
            # checkpoints have them; a checkpoint without them needs different token counting.
            raise ValueError("the config's 'audio' block has avg_pool="
                             f"{config.avg_pool}, add_audio_bos_eos_token={config.add_audio_bos_eos_token}: "
                             "only the published layout (both true) is supported")
        if config.n_state % config.n_head:
            raise ValueError(f"audio n_state {config.n_state} is not divisible by n_head {config.n_head}")
        return config


@dataclass
class EncoderOutput:
    embeds: list[torch.Tensor]                      # per clip, (n_tok + 2, output_dim): bos, tokens, eos
    # per clip, per block: (heads, T, T) softmax probabilities over that clip's own frames
    attentions: list[tuple[torch.Tensor, ...]] | None


class EncoderAttention(nn.Module):
    def __init__(self, n_state: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.query = nn.Linear(n_state, n_state)
        self.key = nn.Linear(n_state, n_state, bias=False)
        self.value = nn.Linear(n_state, n_state)
        self.out = nn.Linear(n_state, n_state)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None,
                need_weights: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`key_mask`: (B, T) bool, True where the frame is real. Returns output and, when asked, probabilities."""
        batch, frames, width = x.shape
        head_dim = width // self.n_head

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, frames, self.n_head, head_dim).transpose(1, 2)

        q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        mask = None if key_mask is None else key_mask[:, None, None, :]
        if need_weights:
            # Official order of operations: q and k each scaled by head_dim^-0.25, -inf on padded keys.
            scale = head_dim ** -0.25
            scores = (q * scale) @ (k * scale).transpose(-1, -2)
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            probs = scores.softmax(dim=-1)
            wv = probs @ v
        else:
            probs = None
            wv = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=head_dim ** -0.5)
        return self.out(wv.transpose(1, 2).reshape(batch, frames, width)), probs


class EncoderBlock(nn.Module):
    def __init__(self, n_state: int, n_head: int):
        super().__init__()
        self.attn = EncoderAttention(n_state, n_head)
        self.attn_ln = nn.LayerNorm(n_state)
        self.mlp = nn.Sequential(nn.Linear(n_state, 4 * n_state), nn.GELU(), nn.Linear(4 * n_state, n_state))
        self.mlp_ln = nn.LayerNorm(n_state)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None,
                need_weights: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        attended, probs = self.attn(self.attn_ln(x), key_mask, need_weights)
        x = x + attended
        return x + self.mlp(self.mlp_ln(x)), probs


def mix_blocks(pooled: torch.Tensor, layer_logits: torch.Tensor, adapter: Sequence[nn.Module],
               tokens: Sequence[int]) -> torch.Tensor:
    """Σ softmax(layer_logits)_i · pooled_i, then the adapter blocks (nano v2's layer mix).

    `pooled`: (n_mixed, B, t, width), each kept block's output after the 2× pool; `tokens`: the real
    tokens per clip (shorter clips' padding is masked as keys). Pooling is linear, so pooling each
    block then mixing equals mixing then pooling: the recipe caches the pooled outputs and trains
    on them (recipes/v2/encoder_v2.py), which is why the mix is written in this order.
    """
    x = torch.einsum("l,lbtd->btd", layer_logits.softmax(0).to(pooled.dtype), pooled)
    key_mask = None
    if min(tokens) < x.shape[1]:
        lengths = torch.tensor(list(tokens), device=x.device)
        key_mask = torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]
    for block in adapter:
        x, _ = block(x, key_mask, False)
    return x


class AudioEncoder(nn.Module):
    def __init__(self, config: EncoderConfig, attn: str = "sdpa"):
        super().__init__()
        if attn not in ATTENTION_IMPLEMENTATIONS:
            raise ValueError(f"attn={attn!r}: choose one of {ATTENTION_IMPLEMENTATIONS}")
        self.config = config
        self.attn_implementation = attn
        self.conv1 = nn.Conv1d(config.n_mels, config.n_state, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(config.n_state, config.n_state, kernel_size=3, stride=2, padding=1)
        # The sinusoids are saved in the checkpoint: load them rather than recompute (bit-exact).
        self.register_buffer("positional_embedding", torch.empty(config.n_ctx, config.n_state))
        self.blocks = nn.ModuleList(EncoderBlock(config.n_state, config.n_head) for _ in range(config.n_layer))
        self.avg_pooler = nn.AvgPool1d(2, stride=2)
        self.ln_post = nn.LayerNorm(config.n_state)
        self.proj = nn.Linear(config.n_state, config.output_dim)
        self.audio_bos_eos_token = nn.Embedding(2, config.output_dim)
        if config.mixed_layers:   # nano v2's layer mix (module docstring)
            self.layer_logits = nn.Parameter(torch.zeros(len(config.mixed_layers)))
            self.adapter = nn.ModuleList(EncoderBlock(config.n_state, config.n_head)
                                         for _ in range(config.adapter_layers))

    @staticmethod
    def tokens_for(frames: int) -> int:
        """Audio tokens after the 2× average pool for `frames` encoder frames (bos/eos not included)."""
        return (frames - 2) // 2 + 1

    def forward(self, mel: torch.Tensor, frames: Sequence[int], *,
                output_attentions: bool = False) -> EncoderOutput:
        """One batch as the official encoder runs it: mel trimmed to 2·max(frames), shorter clips masked.

        `mel`: (B, n_mels, ≥ 2·max(frames)) log-mel; `frames`: encoder frames T per clip.
        """
        if mel.dim() != 3 or mel.shape[0] != len(frames) or mel.shape[1] != self.config.n_mels:
            raise ValueError(f"mel of shape {tuple(mel.shape)} does not match {len(frames)} clips of "
                             f"{self.config.n_mels} mel bins: expected (n_clips, {self.config.n_mels}, frames)")
        longest = max(frames)
        if not 0 < longest <= self.config.n_ctx or 2 * longest > mel.shape[-1]:
            raise ValueError(f"encoder frames {list(frames)} do not fit a mel of {mel.shape[-1]} frames "
                             f"and n_ctx {self.config.n_ctx}: each clip needs 2·T mel frames, 0 < T ≤ n_ctx")
        weight = self.conv1.weight
        x = mel[:, :, : 2 * longest].to(dtype=weight.dtype, device=weight.device)
        x = F.gelu(self.conv1(x))
        x = F.gelu(self.conv2(x)).transpose(1, 2)           # (B, T, n_state)
        x = x + self.positional_embedding[: x.shape[1]]
        key_mask = None
        if min(frames) < longest:
            lengths = torch.tensor(list(frames), device=x.device)
            key_mask = torch.arange(longest, device=x.device)[None, :] < lengths[:, None]
            x = x.masked_fill(~key_mask[..., None], 0.0)     # official: padded frames zeroed
        need_weights = output_attentions or self.attn_implementation == "eager"
        layers, kept = [], []
        mixed = self.config.mixed_layers
        for number, block in enumerate(self.blocks, 1):
            x, probs = block(x, key_mask, need_weights)
            if output_attentions:
                layers.append(probs)
            if number in mixed:
                kept.append(x)
        x = self._mix(kept, frames) if mixed else self.avg_pooler(x.transpose(1, 2)).transpose(1, 2)
        x = self.proj(self.ln_post(x))
        bos, eos = self.audio_bos_eos_token.weight[:1], self.audio_bos_eos_token.weight[1:]
        embeds = [torch.cat([bos, x[i, : self.tokens_for(t)], eos]) for i, t in enumerate(frames)]
        attentions = None
        if output_attentions:  # per clip, its own frames only (padded queries and keys cut off)
            attentions = [tuple(layer[i, :, :t, :t] for layer in layers) for i, t in enumerate(frames)]
        return EncoderOutput(embeds=embeds, attentions=attentions)

    def _mix(self, kept: list[torch.Tensor], frames: Sequence[int]) -> torch.Tensor:
        """Nano v2's layer mix of the kept block outputs (`mix_blocks`), each pooled first."""
        pooled = torch.stack([self.avg_pooler(x.transpose(1, 2)).transpose(1, 2) for x in kept])
        return mix_blocks(pooled, self.layer_logits, self.adapter, [self.tokens_for(t) for t in frames])

    def encode(self, mel: torch.Tensor, frames: Sequence[int], *, batching: str = "separate",
               output_attentions: bool = False) -> EncoderOutput:
        """Encode every clip; `batching` is "separate" (each clip alone) or "official" (one batch)."""
        if batching not in AUDIO_BATCHING:
            raise ValueError(f"audio_batching={batching!r}: choose one of {AUDIO_BATCHING}")
        if len(frames) == 0:
            return EncoderOutput(embeds=[], attentions=[] if output_attentions else None)
        if batching == "official" or len(frames) == 1:
            return self(mel, frames, output_attentions=output_attentions)
        outputs = [self(mel[i: i + 1], [t], output_attentions=output_attentions) for i, t in enumerate(frames)]
        return EncoderOutput(embeds=[out.embeds[0] for out in outputs],
                             attentions=[out.attentions[0] for out in outputs] if output_attentions else None)
