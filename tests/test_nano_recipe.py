"""The nano recipe's data path (recipes/nano_data.py): cached Whisper features equal the encoder's
own path, and the feature cache is keyed by audio content, so a regenerated corpus reuses it."""
from __future__ import annotations

import copy
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import workbench
from workbench.audio import audio_span_tokens

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes"))
import nano_data  # noqa: E402


@pytest.fixture(scope="module")
def encoder():
    return workbench.load("nano").encoder


@pytest.fixture()
def clips(tmp_path) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    for i, seconds in enumerate((1.0, 2.5)):
        path = tmp_path / f"clip{i}.flac"
        sf.write(path, (0.1 * rng.standard_normal(int(16000 * seconds))).astype(np.float32), 16000)
        paths.append(str(path))
    return paths


def test_cached_features_give_what_the_encoder_splices(encoder, clips):
    assert nano_data.check_features(encoder, nano_data.read_clip(clips[1])) < 1e-4


def test_the_cache_is_keyed_by_content_not_by_path(encoder, clips, tmp_path, monkeypatch):
    cache = tmp_path / "features.pt"
    first = nano_data.compute_features(encoder, clips, cache)
    # a span is [bos, tokens…, eos]: the cached frames are the tokens between
    assert [first[p].shape[0] + 2 for p in clips] == [audio_span_tokens(16000), audio_span_tokens(40000)]
    assert first[clips[0]].dtype == torch.float16
    moved = tmp_path / "elsewhere" / "renamed.flac"
    moved.parent.mkdir()
    shutil.copyfile(clips[1], moved)

    def no_encoder_run(*args):
        raise AssertionError("a clip with cached content was encoded again")

    monkeypatch.setattr(nano_data, "pooled_frames", no_encoder_run)
    again = nano_data.compute_features(encoder, [str(moved), clips[0]], cache)
    assert torch.equal(again[str(moved)], first[clips[1]]) and torch.equal(again[clips[0]], first[clips[0]])


def test_a_cache_of_another_encoder_is_refused(encoder, clips, tmp_path):
    cache = tmp_path / "features.pt"
    nano_data.compute_features(encoder, clips[:1], cache)
    other = copy.deepcopy(encoder)
    with torch.no_grad():
        other.blocks[0].mlp[0].weight[0, 0] += 1
    with pytest.raises(ValueError, match="features of another encoder.*another --work folder"):
        nano_data.compute_features(other, clips[:1], cache)
