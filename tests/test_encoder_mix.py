"""Nano v2's layer-mix encoder (config "audio": mixed_layers, adapter_layers) in the workbench loader.

The recipe trains the mix on cached, pooled block outputs (recipes/v2/encoder_v2.py); the workbench
computes it inside `AudioEncoder.forward`. Both must give the same embeddings, and a checkpoint with
the mix keys must write, load and describe like any official-layout checkpoint.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from workbench.audio import encoder_frames, log_mel
from workbench.models.qwen_audio.encoder import AudioEncoder, EncoderConfig
from workbench.models.qwen_audio.model import load_qwen_audio
from workbench.models.qwen_audio.nano import N_SPECIAL
from workbench.models.qwen_audio.official_layout import (
    official_config,
    official_part,
    official_shapes,
    save_qwen_audio,
    write_random_checkpoint,
)

REPO = Path(__file__).resolve().parents[1]
AUDIO = dict(n_mels=80, n_ctx=1500, n_state=16, n_head=2, n_layer=3, output_dim=8)
MIX = {"mixed_layers": [1, 3], "adapter_layers": 1}


def _clips() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [0.1 * rng.standard_normal(n).astype(np.float32) for n in (32000, 20800)]


def _randomised(module: torch.nn.Module) -> None:
    """Every parameter, and the positions (an uninitialised buffer until a checkpoint fills it), seeded."""
    torch.manual_seed(0)
    for p in module.parameters():
        torch.nn.init.normal_(p, std=0.1)
    module.positional_embedding.normal_()


def test_the_encoder_equals_the_recipes_layer_mix_on_cached_features():
    sys.path[:0] = [str(REPO / "recipes" / "v2"), str(REPO / "recipes")]
    from encoder_v2 import LayerMixEncoder

    encoder = AudioEncoder(EncoderConfig.from_official(AUDIO | MIX))
    _randomised(encoder)
    # The recipe's mix wraps a plain encoder (same stem and blocks) and holds its own logits and adapter.
    plain = AudioEncoder(EncoderConfig.from_official(AUDIO))
    plain.load_state_dict({k: v for k, v in encoder.state_dict().items()
                           if not k.startswith(("adapter.", "layer_logits"))})
    mix = LayerMixEncoder(plain, tuple(MIX["mixed_layers"]), MIX["adapter_layers"])
    mix.adapter.load_state_dict(encoder.adapter.state_dict())
    with torch.no_grad():
        encoder.layer_logits.copy_(torch.tensor([0.3, -0.7]))
        mix.layer_logits.copy_(encoder.layer_logits)
        for clip in _clips():
            frames = encoder_frames(len(clip))
            ours = encoder(log_mel(clip)[None], [frames]).embeds[0]
            theirs = mix.embeds(mix.layer_features(clip))
            assert ours.shape == theirs.shape == (encoder.tokens_for(frames) + 2, AUDIO["output_dim"])
            torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


def test_equal_logits_mean_equal_weights_and_one_mixed_block_is_that_block():
    """With a single mixed block and no adapter the mix is the plain encoder cut after that block."""
    one = AudioEncoder(EncoderConfig.from_official(AUDIO | {"mixed_layers": [2]}))
    _randomised(one)
    cut = AudioEncoder(EncoderConfig.from_official(AUDIO | {"n_layer": 2}))
    cut.load_state_dict({k: v for k, v in one.state_dict().items()
                         if not k.startswith(("blocks.2.", "layer_logits"))})
    clip = _clips()[0]
    frames = encoder_frames(len(clip))
    with torch.no_grad():
        torch.testing.assert_close(one(log_mel(clip)[None], [frames]).embeds[0],
                                   cut(log_mel(clip)[None], [frames]).embeds[0], rtol=0, atol=1e-6)


def test_a_mixed_checkpoint_writes_loads_and_saves_in_the_official_layout(tmp_path):
    config = official_config(hidden=16, layers=1, heads=2, intermediate=32, audio_state=16, audio_layers=3,
                             audio_heads=2, vocab_size=512 + N_SPECIAL, n_ranks=512)
    config["audio"] |= MIX
    shapes = official_shapes(config)
    assert shapes["transformer.audio.layer_logits"] == (2,)
    assert official_part("transformer.audio.adapter.0.mlp.0.weight") == "encoder: adapter blocks (nano v2)"
    write_random_checkpoint(tmp_path / "a", config)
    model = load_qwen_audio(tmp_path / "a")
    assert model.encoder.config.mixed_layers == (1, 3) and len(model.encoder.adapter) == 1
    groups = model._parameter_groups()
    assert sum(p.numel() for g in groups.values() for p in g.parameters()) == \
        sum(p.numel() for p in model.network.parameters())   # the mix is counted, once
    save_qwen_audio(model, tmp_path / "b")
    again = load_qwen_audio(tmp_path / "b")
    for (name, a), (_, b) in zip(model.network.state_dict().items(), again.network.state_dict().items()):
        torch.testing.assert_close(a, b, msg=name)


@pytest.mark.parametrize("audio, says", [
    ({"mixed_layers": [0, 2]}, "block number 1…3"),
    ({"mixed_layers": [4]}, "block number 1…3"),
    ({"adapter_layers": 1}, "without mixed_layers"),
])
def test_a_bad_layer_mix_config_is_one_clear_error(audio, says):
    with pytest.raises(ValueError, match=says):
        EncoderConfig.from_official(AUDIO | audio)


def test_nano_v2_while_not_shipped_says_how_to_train_and_ship_it():
    import workbench as wb
    from workbench.errors import CheckpointFileNotFoundError
    from workbench.models.qwen_audio.nano import NANO_V2_DIR
    if (NANO_V2_DIR / "model.safetensors").is_file():
        pytest.skip("nano v2 is shipped: tests/test_nano_v2.py checks it")
    with pytest.raises(CheckpointFileNotFoundError, match="not shipped.*run_v2.py.*package_v2.py"):
        wb.load("nano-v2")
