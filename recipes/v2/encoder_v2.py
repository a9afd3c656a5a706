"""The nano v2 audio encoder: Whisper tiny.en's stem and all 4 blocks (frozen), a learned softmax-weighted
sum of the blocks' pooled outputs, a small trained adapter, then Qwen-Audio's ln_post → proj → [bos, …, eos].

Why a weighted sum: v1 stopped after Whisper block 2 because pitch fades with depth, while words
sharpen with it. Mixing every block's output with learned weights (as in SUPERB-style probes) lets
stage 1 choose per task mixture without giving up either. The pool (2×, 40 ms a token) is linear, so
pooling each block's output first and mixing afterwards is the same as mixing then pooling — which is
what makes the frozen part cacheable: `layer_features` runs once per clip and is stored (float16) in
a content-keyed cache (`FeatureCache`), and training runs only the mix, the adapter and the projection.

Checkpoint: the official `transformer.audio.*` keys plus `transformer.audio.layer_logits` (n_mixed,)
and `transformer.audio.adapter.{j}.*` (EncoderBlock keys), and in config.json's "audio":
`"mixed_layers": [1, 2, 3, 4]`, `"adapter_layers": 1` — the workbench's own `AudioEncoder` reads them
(`workbench.load("nano")` runs the mix live; `mix_blocks` is the one implementation of the mix).
Here the mix is a separate module around a plain encoder so that the frozen part can be cached.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from workbench.audio import encoder_frames, log_mel
from workbench.models.qwen_audio.encoder import AudioEncoder, EncoderBlock, mix_blocks


class LayerMixEncoder(nn.Module):
    def __init__(self, whisper: AudioEncoder, mixed_layers: tuple[int, ...] = (1, 2, 3, 4), adapter_layers: int = 1):
        super().__init__()
        n_layer = len(whisper.blocks)
        if not mixed_layers or any(not 1 <= i <= n_layer for i in mixed_layers):
            raise ValueError(f"mixed_layers {mixed_layers}: block numbers 1…{n_layer} (the output of block i)")
        self.whisper = whisper
        self.mixed_layers = tuple(mixed_layers)
        self.layer_logits = nn.Parameter(torch.zeros(len(mixed_layers)))
        width, heads = whisper.config.n_state, whisper.config.n_head
        self.adapter = nn.ModuleList(EncoderBlock(width, heads) for _ in range(adapter_layers))
        for block in self.adapter:  # start as the identity: the residual branches' outputs at zero
            nn.init.zeros_(block.attn.out.weight), nn.init.zeros_(block.attn.out.bias)
            nn.init.zeros_(block.mlp[2].weight), nn.init.zeros_(block.mlp[2].bias)

    # --- frozen part (cached) -------------------------------------------------------------------
    @torch.no_grad()
    def layer_features(self, samples: np.ndarray) -> torch.Tensor:
        """(n_mixed, n_tok, width): each mixed block's output of one clip alone, 2× pooled."""
        w = self.whisper
        frames = encoder_frames(len(samples))
        x = log_mel(samples)[None, :, : 2 * frames].to(w.conv1.weight.dtype)
        x = F.gelu(w.conv1(x))
        x = F.gelu(w.conv2(x)).transpose(1, 2) + w.positional_embedding[:frames]
        kept = []
        for i, block in enumerate(w.blocks, 1):
            x, _ = block(x, None, False)
            if i in self.mixed_layers:
                kept.append(x)
            if i >= max(self.mixed_layers):
                break
        stacked = torch.cat(kept)  # (n_mixed, frames, width)
        pooled = w.avg_pooler(stacked.transpose(1, 2)).transpose(1, 2)
        return pooled[:, : w.tokens_for(frames)]

    def fingerprint(self) -> str:
        """What cached features depend on: the frozen weights and which blocks are kept."""
        digest = hashlib.sha1(repr(self.mixed_layers).encode())
        for name, tensor in self.whisper.state_dict().items():
            if name.startswith(("conv", "positional_embedding", "blocks.")):
                digest.update(f"{name}{tuple(tensor.shape)}".encode())
                digest.update(tensor.detach().float().cpu().numpy().tobytes())
        return digest.hexdigest()[:16]

    # --- trained part ---------------------------------------------------------------------------
    def layer_weights(self) -> torch.Tensor:
        return self.layer_logits.softmax(0)

    def embeds(self, features: torch.Tensor) -> torch.Tensor:
        """[bos, proj(ln_post(adapter(Σ w_i f_i))), eos] for one clip's cached features."""
        w = self.whisper
        x = mix_blocks(features.to(self.layer_logits.dtype)[:, None], self.layer_logits, self.adapter,
                       [features.shape[1]])
        x = w.proj(w.ln_post(x[0]))
        return torch.cat([w.audio_bos_eos_token.weight[:1], x, w.audio_bos_eos_token.weight[1:]])

    def forward(self, samples: np.ndarray) -> torch.Tensor:
        return self.embeds(self.layer_features(samples))

    def trainable_parameters(self) -> list[nn.Parameter]:
        w = self.whisper
        return [self.layer_logits, *self.adapter.parameters(), *w.ln_post.parameters(), *w.proj.parameters(),
                w.audio_bos_eos_token.weight]

    def freeze_whisper(self) -> None:
        for name, p in self.whisper.named_parameters():
            p.requires_grad_(not name.startswith(("conv", "blocks.")))


class FeatureCache:
    """Cached `layer_features`, one float16 .npy file per clip under `root/<fingerprint>/`, named by the
    sha1 of the clip's file bytes: a regenerated corpus reuses unchanged clips, a half-done run resumes,
    and several processes can fill it at once (each file is written under a temporary name, then renamed)."""

    def __init__(self, root: Path, encoder: LayerMixEncoder):
        self.folder = Path(root) / encoder.fingerprint()
        self.folder.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def digest(path: str | Path) -> str:
        return hashlib.sha1(Path(path).read_bytes()).hexdigest()

    def file(self, digest: str) -> Path:
        return self.folder / digest[:2] / f"{digest}.npy"

    def has(self, digest: str) -> bool:
        return self.file(digest).exists()

    def put(self, digest: str, features: torch.Tensor) -> None:
        target = self.file(digest)
        target.parent.mkdir(exist_ok=True)
        partial = target.with_suffix(f".{np.random.randint(1 << 30)}.tmp")
        with open(partial, "wb") as handle:
            np.save(handle, features.to(torch.float16).numpy())
        partial.replace(target)

    def get(self, digest: str) -> torch.Tensor:
        return torch.from_numpy(np.load(self.file(digest)))

    def missing(self, digests: Iterable[str]) -> list[str]:
        return [d for d in dict.fromkeys(digests) if not self.has(d)]
