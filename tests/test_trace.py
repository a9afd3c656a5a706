"""trace(): golden attention probabilities, unchanged logits, labelled positions, selection, size bound,
fast path for the layers not captured; on Qwen-Audio v1 (tiny fixture), Whisper and Qwen2-Audio (tiny random)."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_models import WHISPER_PREFIX, write_qwen2_audio, write_whisper

import workbench
from workbench.analysis import capture
from workbench.analysis.trace import DEFAULT_MAX_BYTES, capture_names, trace
from workbench.audio import audio_tokens
from workbench.demo import demo_path
from workbench.errors import TraceRequestError, TraceTooLargeError, UnsupportedModelError

ASR = "<|startoftranscript|><|en|><|transcribe|><|en|><|notimestamps|><|wo_itn|>"


@pytest.fixture(scope="module")
def tiny(tiny_dir: Path):
    # music.wav (case 2) is 96 s: the official code keeps the first 30 s, here that is explicit.
    return workbench.load(tiny_dir / "checkpoint", audio_on_long="truncate")


def official(model, case: int):
    """Case 1 needs the official (ffmpeg) decoding, case 2 the official batching of its two clips."""
    if case == 1:
        return model.with_options(audio_decoder="ffmpeg")
    return model.with_options(audio_batching="official") if case == 2 else model


@pytest.fixture(scope="module")
def case_inputs(tiny, golden, tiny_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # music.wav: "keeping the first 30 s"
        return [official(tiny, i).inputs(golden["cases"][i]["prompt"], audio_dir=tiny_dir / "clips")
                for i in range(3)]


@pytest.fixture(scope="module")
def full(tiny, case_inputs):
    """Case 0 with everything of the LLM and encoder block 0 captured, and 3 generated tokens."""
    return trace(tiny, case_inputs[0], capture=["llm.*", "encoder.blocks.0.*"])


# --- correctness against the official implementation -------------------------------------------

@pytest.mark.parametrize("case", [0, 1, 2])
def test_llm_attention_equals_golden_and_logits_are_unchanged(tiny, case_inputs, golden_arrays, case):
    model, inputs = official(tiny, case), case_inputs[case]
    logits = "last" if case == 2 else "all"    # case 2's full logits would take 0.6 GB
    t = trace(model, inputs, capture="llm.layers.1.attn.pattern", rows="last", logits=logits)
    pattern = t["llm.layers.1.attn.pattern"]
    assert pattern.shape == (4, 1, inputs.length)
    np.testing.assert_allclose(pattern[:, 0].numpy(), golden_arrays[f"case{case}_llm_attn_last_layer_last_query"],
                               atol=1e-4, rtol=0)
    reference = model.forward(inputs, logits_to_keep=1 if case == 2 else None).logits[0]
    assert t.logits.shape == reference.shape
    torch.testing.assert_close(t.logits, reference, atol=1e-5, rtol=0)


def test_encoder_attention_equals_golden(full, golden_arrays):
    [pattern] = full["encoder.blocks.0.attn.pattern"]          # one audio
    assert pattern.shape == (4, 293, 293)
    np.testing.assert_allclose(pattern.numpy(), golden_arrays["case0_encoder_attn_layer0"], atol=1e-4, rtol=0)


def test_every_captured_pattern_equals_the_eager_forward(tiny, case_inputs, full):
    eager = tiny.forward(case_inputs[0], output_attentions=True, output_encoder_attentions=True)
    for i in range(2):
        torch.testing.assert_close(full[f"llm.layers.{i}.attn.pattern"], eager.attentions[i][0], atol=1e-6, rtol=0)
    torch.testing.assert_close(full["encoder.blocks.0.attn.pattern"][0], eager.encoder_attentions[0][0])
    hidden = tiny.forward(case_inputs[0], output_hidden_states=True).hidden_states
    torch.testing.assert_close(full["llm.embed"], hidden[0][0])          # audio spliced in
    torch.testing.assert_close(full["llm.layers.0.resid_post"], hidden[1][0])
    assert full["encoder.blocks.0.resid_post"][0].shape == (293, 32)
    assert full["llm.layers.0.attn.out"].shape == (154, 32)


# --- labelled positions -------------------------------------------------------------------------

def test_positions_label_audio_time_tags_and_slots(full):
    table = full.to_pandas()
    assert len(table) == 154 and list(table["position"]) == list(range(154))
    audio = table[table["kind"] == "audio"]
    assert len(audio) == 146 and (audio["audio"] == 0).all()
    np.testing.assert_array_equal(audio["audio_token"].to_numpy(dtype=int), np.arange(146))
    np.testing.assert_allclose(audio["start_s"], np.arange(146) * 0.04)
    np.testing.assert_allclose(audio["end_s"], np.arange(1, 147) * 0.04)
    assert table.loc[0, "kind"] == "audio_bos" and table.loc[147, "kind"] == "audio_eos"
    tags = table[table["kind"] == "tag"]
    assert list(tags["slot"]) == ["start", "audio_lang", "task", "text_lang", "timestamps", "instructions"]
    assert list(tags["tag_kind"]) == ["transcription", "language", "task", "language", "timestamps", "instruction"]
    assert set(table["group"]) == {"audio", "tags"} and set(table["part"]) == {"prompt"}


def test_chat_positions_have_roles_and_two_audios(tiny, case_inputs):
    table = trace(official(tiny, 2), case_inputs[2], logits="last").positions
    assert list(table.loc[table["kind"] == "role", "token"]) == ["system", "user", "assistant"]
    assert (table.loc[table["token"] == "<|im_start|>", "kind"] == "chat").all()
    assert list(table.loc[table["token"] == "<|im_start|>", "role"]) == ["system", "user", "assistant"]
    audio = table[table["kind"] == "audio"]
    assert audio.groupby("audio").size().to_dict() == {0: 146, 1: 750}
    assert (audio["role"] == "user").all()
    assert table.loc[table["token"] == " clip", "group"].tolist() == ["text"]


def test_generated_tokens_are_labelled_output_and_traced_with_the_prompt(tiny, case_inputs, full):
    t = trace(tiny, case_inputs[0], capture="llm.layers.1.attn.pattern", generate=3, rows="output", cols="audio")
    assert t.generation is not None and len(t.generation.ids) == 3
    assert t.inputs.input_ids[0, 154:].tolist() == t.generation.ids
    assert list(t.positions["part"]).count("output") == 3
    np.testing.assert_array_equal(t.rows, [154, 155, 156])
    assert t["llm.layers.1.attn.pattern"].shape == (4, 3, 148)          # bos + 146 tokens + eos
    torch.testing.assert_close(t.logits[:154], full.logits, atol=1e-5, rtol=0)   # causal: the prompt is unchanged
    assert t.logits[153].argmax() == t.generation.ids[0]


# --- selection and storage ----------------------------------------------------------------------

def test_rows_cols_heads_and_dtype_keep_exactly_those_entries(tiny, case_inputs, full):
    t = trace(tiny, case_inputs[0], capture="llm.layers.*.attn.pattern", rows="tags", cols="audio",
              heads=[1, 3], dtype=torch.float16)
    rows, cols = np.arange(148, 154), np.arange(0, 148)
    np.testing.assert_array_equal(t.rows, rows)
    np.testing.assert_array_equal(t.cols, cols)
    kept = t["llm.layers.0.attn.pattern"]
    assert kept.dtype == torch.float16 and kept.shape == (2, 6, 148)
    expected = full["llm.layers.0.attn.pattern"][[1, 3]][:, rows][:, :, cols]
    torch.testing.assert_close(kept.float(), expected, atol=1e-3, rtol=0)


@pytest.mark.parametrize("selector, expected", [
    ("last", [153]), (-2, [152]), (slice(150, 152), [150, 151]), ([0, 147], [0, 147]),
    (["last", "tags"], list(range(148, 154))), (np.arange(154) == 5, [5]),
])
def test_selectors_pick_positions(full, selector, expected):
    np.testing.assert_array_equal(full.select(selector), expected)


def test_globs_and_layers_select_names(tiny, case_inputs):
    names = capture_names(tiny)
    assert {"llm.embed", "llm.layers.1.attn.pattern", "llm.layers.0.attn.out", "llm.layers.1.resid_post",
            "encoder.blocks.1.attn.pattern", "encoder.blocks.0.resid_post"} <= set(names)
    t = trace(tiny, case_inputs[0], capture=["*.resid_post"], layers=[-1], rows="last")
    assert t.keys() == ["encoder.blocks.1.resid_post", "llm.layers.1.resid_post"]
    assert t.names() == names
    assert t.layers("self") == [] and t.layers("encoder") == []


def test_size_bound_fails_before_running(tiny, case_inputs, monkeypatch):
    def must_not_run(*args, **kwargs):
        raise AssertionError("the model ran")

    monkeypatch.setattr(tiny, "forward", must_not_run)
    monkeypatch.setattr(tiny, "generate", must_not_run)
    with pytest.raises(TraceTooLargeError, match=r"about [\d.]+ MiB .*max_bytes=.*fewer layers.*heads.*rows="
                                                 r".*float16"):
        trace(tiny, case_inputs[0], capture="llm.layers.*.attn.pattern", max_bytes=100_000, generate=5)
    assert DEFAULT_MAX_BYTES == 2 * 1024 ** 3


# --- the fast path stays on ------------------------------------------------------------------------

def test_only_captured_layers_leave_sdpa_and_the_config_is_restored(tiny, case_inputs, monkeypatch):
    from transformers.integrations import sdpa_attention

    calls = []
    original = sdpa_attention.sdpa_attention_forward
    monkeypatch.setattr(sdpa_attention, "sdpa_attention_forward",
                        lambda module, *a, **k: calls.append(module.layer_idx) or original(module, *a, **k))
    t = trace(tiny, case_inputs[0], capture="llm.layers.0.attn.pattern")
    assert calls == [1] and t.keys() == ["llm.layers.0.attn.pattern"]
    assert tiny.llm.config._attn_implementation == "sdpa" and not capture._SINKS

    def fails(*args, **kwargs):
        assert tiny.llm.config._attn_implementation == capture.CAPTURE_ATTENTION
        raise RuntimeError("inside the forward")

    monkeypatch.setattr(tiny, "forward", fails)
    with pytest.raises(RuntimeError, match="inside the forward"):
        trace(tiny, case_inputs[0], capture="llm.layers.0.attn.pattern")
    assert tiny.llm.config._attn_implementation == "sdpa" and not capture._SINKS


# --- bad requests -------------------------------------------------------------------------------

@pytest.mark.parametrize("options, message", [
    ({"capture": "llm.layers.9.attn.pattern"}, "matches no name this model offers"),
    ({"capture": ["llm.layers.0.attn.pattern", 3]}, "names or glob patterns as strings"),
    ({"capture": "llm.*", "layers": [5]}, "layer 5 does not exist in llm"),
    ({"capture": "llm.embed", "layers": 0}, "keeps none of the names"),
    ({"capture": "llm.layers.0.attn.pattern", "heads": [4]}, r"distinct head indices in 0…3"),
    ({"capture": "llm.embed", "heads": [0]}, "nothing with heads is captured"),
    ({"rows": "words"}, "is not one of all, last, audio"),
    ({"rows": [0, 900]}, "out of range for a sequence of 154"),
    ({"rows": "output"}, r"picks no position.*generate=N"),
    ({"cols": np.ones(3, dtype=bool)}, r"boolean position mask needs shape \(154,\)"),
    ({"generate": -1}, "generate=-1"),
    ({"logits": "first"}, "choose 'all' or 'last'"),
    ({"dtype": torch.int8}, "floating torch dtype"),
    ({"max_bytes": 0}, "max_bytes=0"),
])
def test_bad_requests_name_the_value_and_the_fix(tiny, case_inputs, options, message):
    with pytest.raises(TraceRequestError, match=message):
        trace(tiny, case_inputs[0], **options)


def test_missing_name_says_whether_it_can_be_captured(full):
    with pytest.raises(KeyError, match="not captured: pass capture="):
        full["encoder.blocks.1.attn.pattern"]
    with pytest.raises(KeyError, match="offers no such name"):
        full["llm.layers.7.attn.pattern"]


def test_an_object_that_is_no_workbench_model_is_refused():
    with pytest.raises(UnsupportedModelError, match="cannot run trace on a str"):
        trace("whisper-base", ASR)


# --- other families -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def whisper(tmp_path_factory):
    model = workbench.load(write_whisper(tmp_path_factory.mktemp("whisper")))
    return model


def test_whisper_cross_self_and_encoder_attention(whisper):
    t = trace(whisper, WHISPER_PREFIX, str(demo_path("speech_en")), generate=2,
              capture=["decoder.layers.*.cross_attn.pattern", "decoder.layers.*.self_attn.pattern",
                       "encoder.layers.1.attn.pattern", "decoder.embed"])
    n = t.inputs.length
    assert n == 4 + len(t.generation.ids)
    eager = whisper.forward(t.inputs, output_attentions=True, output_encoder_attentions=True)
    for i in range(2):
        assert t[f"decoder.layers.{i}.cross_attn.pattern"].shape == (4, n, 1500)   # 20 ms encoder frames
        torch.testing.assert_close(t[f"decoder.layers.{i}.cross_attn.pattern"], eager.cross_attentions[i][0],
                                   atol=1e-6, rtol=0)
        torch.testing.assert_close(t[f"decoder.layers.{i}.self_attn.pattern"], eager.attentions[i][0],
                                   atol=1e-6, rtol=0)
    torch.testing.assert_close(t["encoder.layers.1.attn.pattern"][0], eager.encoder_attentions[0][1],
                               atol=1e-6, rtol=0)
    torch.testing.assert_close(t.logits, whisper.forward(t.inputs).logits[0], atol=1e-5, rtol=0)
    table = t.positions
    assert list(table["slot"][:4]) == ["start", "audio_lang", "task", "timestamps"]
    assert set(table["kind"][:4]) == {"tag"} and t.encoder_frames == (1500,) and t.sequence == "decoder"


def test_qwen2_audio_two_audios(tmp_path):
    model = workbench.load(write_qwen2_audio(tmp_path))
    clips = [str(demo_path("speech_en")), str(demo_path("speech_fr"))]
    t = trace(model, "<audio>a</audio><audio>b</audio>Caption:", clips, generate=2,
              capture=["llm.layers.*.attn.pattern", "encoder.layers.*.attn.pattern"])
    eager = model.forward(t.inputs, output_attentions=True, output_encoder_attentions=True)
    for i in range(2):
        torch.testing.assert_close(t[f"llm.layers.{i}.attn.pattern"], eager.attentions[i][0], atol=1e-6, rtol=0)
        for a in range(2):
            torch.testing.assert_close(t[f"encoder.layers.{i}.attn.pattern"][a], eager.encoder_attentions[a][i],
                                       atol=1e-6, rtol=0)
    table = t.positions
    counts = table[table["kind"] == "audio"].groupby("audio").size().to_dict()
    assert counts == {a: model.inputs("<audio>x</audio>", [c]).audios[0].n_positions - 2 for a, c in enumerate(clips)}
    assert list(table.loc[table["kind"] == "audio_bos", "token"]) == ["<|audio_bos|>"] * 2
    assert audio_tokens(52593) == counts[0]


def test_nano_is_traced_as_a_qwen_audio():
    nano = pytest.importorskip("workbench.models.qwen_audio.nano")
    if not (nano.NANO_DIR / "model.safetensors").is_file():
        pytest.skip("the packaged nano checkpoint is not there")
    model = nano.load_nano()
    clip = str(demo_path("speech_en"))
    t = trace(model, workbench.preset("librispeech"), clip, generate=3, capture="llm.layers.*.attn.pattern",
              rows="output", cols="audio")
    # Captured layers run eager softmax, the rest SDPA: float32 rounding differs by ~1e-5 on the trained
    # nano's logits (magnitudes ~10x the random fixture's), so the fixture README's logits bound, 1e-3, applies.
    torch.testing.assert_close(t.logits, model.forward(t.inputs).logits[0], atol=1e-3, rtol=0)
    audio = t.positions[t.positions["kind"] == "audio"]
    assert len(audio) == audio_tokens(52593) and list(audio["audio_token"]) == list(range(len(audio)))
    assert t["llm.layers.0.attn.pattern"].shape[1:] == (len(t.generation.ids), len(audio) + 2)
