"""Logit lens: the last layer reproduces the model's own logits, targets are tokens as asked, errors name the fix."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure
from tiny_models import WHISPER_PREFIX, write_whisper

import workbench
from workbench.analysis.lens import AudioLensResult, LensResult, logit_lens
from workbench.analysis.trace import trace
from workbench.demo import demo_path
from workbench.errors import TraceRequestError
from workbench.tags import preset, token_id

ASR = preset("librispeech")   # a TagPrompt: the model puts <audio>…</audio> in front


@pytest.fixture(scope="module")
def tiny(tiny_dir: Path):
    return workbench.load(tiny_dir / "checkpoint")


@pytest.fixture(scope="module")
def clip(tiny_dir: Path) -> str:
    return str(tiny_dir / "clips" / "1272-128104-0000.flac")


@pytest.fixture(scope="module")
def result(tiny, clip) -> LensResult:
    return logit_lens(tiny, ASR, clip, targets=["<|en|>", " mister", 220], top_k=4)


def test_last_layer_is_the_model_prediction(tiny, clip, result):
    logits = tiny.forward(ASR, clip).logits[0, -1]
    probs = logits.softmax(-1)
    final = int(logits[: len(tiny.tokenizer)].argmax())
    assert result.layers == ["embed", "0", "1"] and result.position == 153 and result.query == "<|wo_itn|>"
    assert result.targets[0].token_id == final
    assert result.ranks[-1, 0] == 1 and result.top_ids[-1, 0] == final
    np.testing.assert_allclose(result.probs[-1], probs[[t.token_id for t in result.targets]].numpy(), rtol=1e-5)
    # top-k among the ids that have a token (the embedding has 782 padding rows past them)
    np.testing.assert_allclose(result.top_probs[-1], probs[: len(tiny.tokenizer)].topk(4).values.numpy(), rtol=1e-5)
    # ranks count the tokens with a larger logit at every layer
    assert (result.ranks >= 1).all() and result.ranks.dtype.kind == "i"


def test_targets_are_scored_by_their_first_piece_and_say_so(result):
    table = result.targets_table()
    assert list(table["text"][1:]) == ["<|en|>", " mister", " "]
    assert table["token_id"][1] == token_id("<|en|>")
    assert table["pieces"][2] > 1 and " mister".startswith(table["token"][2])
    assert table["token_id"][3] == 220 and table["pieces"][3] == 1


def test_table_and_plot(result):
    table = result.to_pandas()
    assert list(table["layer"]) == ["embed", "0", "1"]
    assert {"top_k", "p(<|en|>)", "rank(<|en|>)"} <= set(table.columns)
    assert table["top_k"][2].count(",") == 3                      # top_k = 4 tokens
    fig = result.plot()
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert [t.get_text() for t in fig.axes[1].get_xticklabels()] == ["embed", "0", "1"]
    assert len(fig.axes[0].lines) == len(result.targets)


def test_lens_over_generated_tokens_and_on_whisper(tmp_path):
    whisper = workbench.load(write_whisper(tmp_path))
    clip = str(demo_path("speech_en"))
    result = logit_lens(whisper, WHISPER_PREFIX, clip, position=-1, generate=2, targets=["<|en|>"])
    traced = trace(whisper, WHISPER_PREFIX, clip, generate=2)     # the same prompt + output, plain
    assert result.position == traced.inputs.length - 1 == 5
    assert result.layers == ["embed", "0", "1"]
    probs = traced.logits[-1].softmax(-1)
    np.testing.assert_allclose(result.probs[-1], probs[[t.token_id for t in result.targets]].numpy(),
                               atol=1e-6, rtol=1e-5)
    assert result.targets[1].token_id == whisper.tokenizer.convert_tokens_to_ids("<|en|>")


def test_lens_at_every_audio_position(tiny, clip):
    result = logit_lens(tiny, ASR, clip, position="audio", targets=["<|en|>", " mister"], top_k=3)
    assert isinstance(result, AudioLensResult) and result.layers == ["embed", "0", "1"]
    # the 146 audio tokens (positions 1…146, between <audio> and </audio>), 40 ms each
    np.testing.assert_array_equal(result.positions, np.arange(1, 147))
    np.testing.assert_allclose(result.start_s, np.arange(146) * 0.04)
    assert (result.audio == 0).all() and result.step_s == 0.04
    assert result.probs.shape == (3, 146, 2) and result.top_ids.shape == (3, 146, 3)
    # the last layer read through the final norm and lm_head is the model's own prediction there
    logits = tiny.forward(ASR, clip).logits[0, 1:147]
    decodable = len(tiny.tokenizer)
    ids = [t.token_id for t in result.targets]
    np.testing.assert_allclose(result.probs[-1], logits.softmax(-1)[:, ids].numpy(), rtol=1e-4, atol=1e-7)
    np.testing.assert_array_equal(result.top_ids[-1, :, 0], logits[:, :decodable].argmax(-1).numpy())
    expected_rank = 1 + (logits[:, :decodable] > logits[:, ids[:1]]).sum(-1)
    np.testing.assert_array_equal(result.ranks[-1, :, 0], expected_rank.numpy())
    table = result.to_pandas()
    assert len(table) == 3 * 146 and list(table["layer"].unique()) == ["embed", "0", "1"]
    assert table["start_s"].iloc[146 + 5] == pytest.approx(0.2) and "p(<|en|>)" in table
    assert table["top_1"].iloc[-1] == tiny.decode([int(result.top_ids[-1, -1, 0])])
    fig = result.plot(target="<|en|>")
    assert isinstance(fig, Figure) and fig.axes[0].get_xlabel() == "time (s)"
    assert fig.axes[0].images[0].get_extent()[:2] == pytest.approx([0.0, 146 * 0.04])
    with pytest.raises(ValueError, match="not one of the result's targets"):
        result.plot(target=" dog")


def test_audio_lens_is_refused_on_whisper(tmp_path):
    whisper = workbench.load(write_whisper(tmp_path))
    with pytest.raises(TraceRequestError, match="no audio positions"):
        logit_lens(whisper, WHISPER_PREFIX, str(demo_path("speech_en")), position="audio")


@pytest.mark.parametrize("options, message", [
    ({"top_k": 0}, "top_k=0"),
    ({"position": "first"}, "position='first'"),
    ({"position": 999}, "out of range"),
    ({"targets": [1.5]}, "token string or a token id"),
    ({"targets": [""]}, "encodes to no token"),
    ({"targets": [10**7]}, "outside the tokenizer"),
])
def test_bad_requests(tiny, clip, options, message):
    with pytest.raises(TraceRequestError, match=message):
        logit_lens(tiny, ASR, clip, **options)
