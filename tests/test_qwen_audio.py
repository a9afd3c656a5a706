"""Native Qwen-Audio v1 against the golden outputs of the official implementation (tiny fixture).

Tolerances from the fixture README (float32, chosen to hold on any CPU): mel 1e-4; hidden states, audio embeddings and
attention probabilities 1e-4; logits 1e-3; ids, argmax and generated ids exact.
Case 1 is a 48 kHz mp3: it reproduces only with the official ffmpeg decoding. Case 2 has two
audios: it reproduces with audio_batching="official"; the default encodes each clip alone.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from workbench.audio import load_audio
from workbench.errors import (
    AudioTagError,
    CheckpointError,
    CheckpointFileNotFoundError,
    ContextTooLongError,
    UnsupportedDtypeError,
)
from workbench.models.base import ModelInputs
from workbench.models.checkpoint import resolve_dtype
from workbench.models.qwen_audio import QwenAudio, load_qwen_audio
from workbench.models.qwen_audio.config import parameter_counts
from workbench.tags import AUDIO_PAD_ID, ENDOFTEXT_ID, IM_END_ID, IM_START_ID, TagPrompt

CASES = (0, 1, 2)
N_GENERATED = 8


def _close(actual: torch.Tensor, expected: np.ndarray, atol: float) -> None:
    np.testing.assert_allclose(actual.detach().float().cpu().numpy(), expected, rtol=0, atol=atol)


@pytest.fixture(scope="module")
def models(tiny_dir: Path) -> dict[str, QwenAudio]:
    # music.wav (case 2) is 96 s: the official code keeps the first 30 s, here that is explicit.
    sdpa = load_qwen_audio(tiny_dir / "checkpoint", audio_on_long="truncate")
    eager = load_qwen_audio(tiny_dir / "checkpoint", attn="eager", audio_on_long="truncate")
    return {"sdpa": sdpa, "eager": eager}


def _as_official(model: QwenAudio, case: int) -> QwenAudio:
    """Case 1 needs the official decoding, case 2 the official batching of its two clips."""
    if case == 1:
        return model.with_options(audio_decoder="ffmpeg")
    if case == 2:
        return model.with_options(audio_batching="official")
    return model


@pytest.fixture(scope="module")
def inputs(models, golden, tiny_dir) -> list:
    def build(case: int):
        model = _as_official(models["sdpa"], case)
        return model.inputs(golden["cases"][case]["prompt"], audio_dir=tiny_dir / "clips")

    with pytest.warns(UserWarning, match="music.wav' is 96.63 s long: keeping the first 30 s"):
        case_2 = build(2)
    return [build(0), build(1), case_2]


@pytest.fixture(scope="module")
def results(models, inputs) -> dict:
    """Per (attn, case): the numbers the golden file holds (full logits are dropped: 0.6 GB for case 2)."""
    out = {}
    for attn, model in models.items():
        for case in CASES:
            official = _as_official(model, case)
            forward = official.forward(inputs[case], output_attentions=attn == "eager")
            out[attn, case] = {
                "audio_embeds": forward.audio_embeds, "last_hidden": forward.last_hidden_state[0],
                "logits_last": forward.logits[0, -1].clone(), "argmax": forward.logits[0].argmax(-1),
                "attentions": forward.attentions,
                "generated": official.generate(inputs[case], max_new_tokens=N_GENERATED),
            }
    return out


# --- inputs ------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES)
def test_input_ids_match_the_official_tokenizer(inputs, golden_arrays, golden, case):
    assert inputs[case].input_ids[0].tolist() == golden_arrays[f"case{case}_input_ids"].tolist()
    assert [a.n_positions for a in inputs[case].audios] == golden["cases"][case]["audio_span_tokens"]


@pytest.mark.parametrize("case", CASES)
def test_mel_matches(inputs, golden_arrays, case):
    _close(torch.stack([a.mel for a in inputs[case].audios]), golden_arrays[f"case{case}_mel"], 1e-4)


def test_tag_prompt_with_an_array_builds_the_same_ids(models, inputs, tiny_dir):
    clip = load_audio(tiny_dir / "clips" / "1272-128104-0000.flac")
    built = models["sdpa"].inputs(TagPrompt(), audio=clip)
    assert built.input_ids.tolist() == inputs[0].input_ids.tolist()
    assert built.text.startswith("<audio>audio_0</audio><|startoftranscript|>")


def test_audio_list_fills_the_tags_in_order(models, inputs, tiny_dir):
    clip = load_audio(tiny_dir / "clips" / "1272-128104-0000.flac")
    text = "<audio>any label</audio><|startoftranscript|><|en|><|transcribe|><|en|><|notimestamps|><|wo_itn|>"
    built = models["sdpa"].inputs(text, audio=[clip])
    assert built.input_ids.tolist() == inputs[0].input_ids.tolist()
    assert built.audios[0].source == "any label"


# --- numbers against golden -------------------------------------------------------------------

@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("case", CASES)
def test_audio_embeddings(results, golden_arrays, golden, attn, case):
    embeds = results[attn, case]["audio_embeds"]
    assert len(embeds) == len(golden["cases"][case]["clips"])
    for j, audio in enumerate(embeds):
        _close(audio, golden_arrays[f"case{case}_audio_embeds{j}"], 1e-4)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("case", CASES)
def test_last_hidden_states(results, golden_arrays, attn, case):
    _close(results[attn, case]["last_hidden"], golden_arrays[f"case{case}_last_hidden"], 1e-4)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("case", CASES)
def test_last_position_logits(results, golden_arrays, attn, case):
    _close(results[attn, case]["logits_last"], golden_arrays[f"case{case}_logits_last"], 1e-3)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("case", CASES)
def test_argmax_at_every_position(results, golden_arrays, attn, case):
    assert results[attn, case]["argmax"].tolist() == golden_arrays[f"case{case}_argmax"].tolist()


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("case", CASES)
def test_greedy_generation(results, golden_arrays, golden, attn, case):
    generation = results[attn, case]["generated"]
    assert generation.ids == golden_arrays[f"case{case}_generated"].tolist()
    assert generation.text == golden["cases"][case]["generated_text"]
    assert generation.stop_token is None and generation.prompt_length == golden["cases"][case]["n_input_ids"]


@pytest.mark.parametrize("case", CASES)
def test_last_layer_attention_of_the_last_query(results, golden_arrays, case):
    attentions = results["eager", case]["attentions"]
    assert len(attentions) == 2
    _close(attentions[-1][0, :, -1], golden_arrays[f"case{case}_llm_attn_last_layer_last_query"], 1e-4)


def test_sdpa_model_returns_attentions_by_switching_to_eager_for_the_call(models, inputs, golden_arrays):
    model = models["sdpa"]
    out = model.forward(inputs[0], output_attentions=True, logits_to_keep=1)
    _close(out.attentions[-1][0, :, -1], golden_arrays["case0_llm_attn_last_layer_last_query"], 1e-4)
    assert model.llm.config._attn_implementation == "sdpa"   # restored after the call
    assert model.forward(inputs[0], logits_to_keep=1).attentions is None


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_encoder_attention_of_block_0(models, inputs, golden_arrays, attn):
    out = models[attn].forward(inputs[0], output_encoder_attentions=True, logits_to_keep=1)
    (blocks,) = out.encoder_attentions  # one audio
    assert len(blocks) == 2 and blocks[0].shape == (4, 293, 293)
    _close(blocks[0], golden_arrays["case0_encoder_attn_layer0"], 1e-4)
    assert models[attn].encoder.attn_implementation == attn


def test_audio_is_spliced_over_its_span_after_the_embedding_layer(models, inputs):
    out = models["sdpa"].forward(inputs[2], output_hidden_states=True, logits_to_keep=1)
    spliced = out.hidden_states[0][0]
    for span, audio in zip(inputs[2].audios, out.audio_embeds):
        assert inputs[2].input_ids[0, span.start + 1:span.stop - 1].eq(AUDIO_PAD_ID).all()
        torch.testing.assert_close(spliced[span.start:span.stop], audio, rtol=0, atol=0)
    assert len(out.hidden_states) == 3   # embeddings + 2 layers, the last one after the final norm
    torch.testing.assert_close(out.hidden_states[-1], out.last_hidden_state, rtol=0, atol=0)


# --- several audios: separate (default) vs official batching ---------------------------------

def test_default_encodes_each_clip_alone_and_differs_from_official_batching_by_the_documented_amount(
        models, inputs, golden_arrays):
    separate = models["sdpa"].encode_audio(inputs[2]).embeds
    official = models["sdpa"].with_options(audio_batching="official").encode_audio(inputs[2]).embeds
    gap = (separate[0] - torch.from_numpy(golden_arrays["case2_audio_embeds0"])).abs().max().item()
    assert 1e-6 < gap <= 7.5e-4 + 5e-5   # README: up to 7.5e-4 for the short clip next to a 30 s one
    _close(official[0], golden_arrays["case2_audio_embeds0"], 1e-4)
    _close(separate[1], golden_arrays["case2_audio_embeds1"], 1e-4)  # the longest clip sees no padding
    alone = models["sdpa"].encode_audio(inputs[0]).embeds[0]
    torch.testing.assert_close(separate[0], alone, rtol=0, atol=1e-6)  # batch-invariant


def test_padded_batch_equals_one_prompt_at_a_time(models, inputs):
    model = models["sdpa"]
    batch = model.forward_batch(inputs, logits_to_keep=1)
    generated = model.generate_batch(inputs, max_new_tokens=N_GENERATED)
    for case in CASES:
        alone = model.forward(inputs[case], logits_to_keep=1)
        assert batch[case].last_hidden_state.shape == alone.last_hidden_state.shape
        torch.testing.assert_close(batch[case].last_hidden_state, alone.last_hidden_state, rtol=0, atol=1e-4)
        torch.testing.assert_close(batch[case].logits, alone.logits, rtol=0, atol=1e-4)
        assert generated[case].ids == model.generate(inputs[case], max_new_tokens=N_GENERATED).ids


def test_padded_batch_attentions_are_cut_to_each_prompt(models, inputs, golden_arrays):
    batch = models["eager"].forward_batch(inputs[:2], output_attentions=True, logits_to_keep=1)
    for case in (0, 1):
        last_layer = batch[case].attentions[-1]
        assert last_layer.shape[-1] == inputs[case].length
        _close(last_layer[0, :, -1], golden_arrays[f"case{case}_llm_attn_last_layer_last_query"], 1e-4)


# --- loading, description, chat -------------------------------------------------------------

REAL_CONFIG = {
    "model_type": "qwen", "hidden_size": 4096, "num_attention_heads": 32, "num_hidden_layers": 32,
    "intermediate_size": 22016, "vocab_size": 155947, "kv_channels": 128, "layer_norm_epsilon": 1e-6,
    "rotary_emb_base": 10000, "seq_length": 2048, "use_dynamic_ntk": True, "use_logn_attn": True,
    "audio": {"n_mels": 80, "n_ctx": 1500, "n_state": 1280, "n_head": 20, "n_layer": 32, "output_dim": 4096,
              "avg_pool": True, "add_audio_bos_eos_token": True, "audio_start_id": 155163},
}


def test_parameter_counts_of_the_published_sizes_from_the_config_alone():
    counts = parameter_counts(REAL_CONFIG)
    assert counts["encoder"] + counts["projector"] == 640_119_808
    assert counts["projector"] == 1280 * 4096 + 4096 + 2 * 4096
    assert counts["llm"] == 7_754_182_656


def test_describe_counts_the_loaded_parts(models, tiny_dir):
    described = models["sdpa"].describe()
    official = json.loads((tiny_dir / "checkpoint" / "config.json").read_text())
    assert described["parameters"] == parameter_counts(official)
    assert (described["family"], described["dtype"], described["device"]) == ("qwen-audio", "float32", "cpu")
    assert not any(p.requires_grad for p in models["sdpa"].network.parameters())


def test_with_options_shares_the_weights(models):
    other = models["sdpa"].with_options(audio_batching="official")
    assert other.network is models["sdpa"].network and other.audio_batching == "official"


def _variant(tiny_dir: Path, tmp_path: Path, config: dict | None = None, generation: dict | None = None,
             skip: tuple[str, ...] = ()) -> Path:
    """A copy of the tiny checkpoint made of symlinks, with config/generation config replaced."""
    for file in (tiny_dir / "checkpoint").iterdir():
        if file.name not in skip and not (config and file.name == "config.json") and not (
                generation is not None and file.name == "generation_config.json"):
            os.symlink(file, tmp_path / file.name)
    if config:
        (tmp_path / "config.json").write_text(json.dumps(config))
    if generation is not None:
        (tmp_path / "generation_config.json").write_text(json.dumps(generation))
    return tmp_path


def test_chat_family_is_read_from_the_generation_config(tiny_dir, tmp_path, inputs):
    chat = load_qwen_audio(_variant(tiny_dir, tmp_path, generation={"chat_format": "chatml"}))
    assert chat.family == "qwen-audio-chat"
    assert chat.stop_ids(inputs[0]) == {ENDOFTEXT_ID, IM_END_ID, IM_START_ID}
    assert load_qwen_audio(tmp_path, chat=False).family == "qwen-audio"   # the argument overrides


def test_base_family_stops_at_chatml_markers_only_for_chatml_prompts(models, inputs):
    assert models["sdpa"].family == "qwen-audio"
    assert models["sdpa"].stop_ids(inputs[0]) == {ENDOFTEXT_ID}
    assert models["sdpa"].stop_ids(inputs[2]) == {ENDOFTEXT_ID, IM_END_ID, IM_START_ID}


def test_generation_stops_at_the_stop_token(tiny_dir, inputs):
    model = load_qwen_audio(tiny_dir / "checkpoint")
    first = model.generate(inputs[0], max_new_tokens=1).ids[0]
    with torch.no_grad():   # <|endoftext|> now scores twice the (positive) best logit
        model.llm.lm_head.weight[ENDOFTEXT_ID] = 2 * model.llm.lm_head.weight[first]
    generation = model.generate(inputs[0], max_new_tokens=N_GENERATED)
    assert generation.ids == [] and generation.stop_token == ENDOFTEXT_ID and generation.text == ""


@pytest.mark.parametrize("dtype", [torch.bfloat16, "float16"])
def test_half_precision_loads_and_runs(tiny_dir, inputs, golden_arrays, dtype):
    model = load_qwen_audio(tiny_dir / "checkpoint", dtype=dtype)
    assert model.dtype == resolve_dtype(dtype, torch.device("cpu"))
    logits = model.forward(inputs[0], logits_to_keep=1).logits[0, -1].float()
    assert torch.isfinite(logits).all()
    assert (logits - torch.from_numpy(golden_arrays["case0_logits_last"])).abs().max() < 0.1


# --- bad input ------------------------------------------------------------------------------------

def test_config_without_the_audio_block_is_refused(tiny_dir, tmp_path):
    config = json.loads((tiny_dir / "checkpoint" / "config.json").read_text())
    del config["audio"]
    with pytest.raises(CheckpointError, match="model_type 'qwen' with an 'audio' encoder block"):
        load_qwen_audio(_variant(tiny_dir, tmp_path, config))


def test_unknown_model_type_is_refused(tiny_dir, tmp_path):
    config = json.loads((tiny_dir / "checkpoint" / "config.json").read_text())
    config["model_type"] = "llama"
    with pytest.raises(CheckpointError, match="model_type 'llama'"):
        load_qwen_audio(_variant(tiny_dir, tmp_path, config))


def test_missing_tokenizer_file_is_named(tiny_dir, tmp_path):
    with pytest.raises(CheckpointFileNotFoundError, match="no qwen.tiktoken"):
        load_qwen_audio(_variant(tiny_dir, tmp_path, skip=("qwen.tiktoken",)))


def test_vocabulary_smaller_than_the_special_ids_is_refused(tiny_dir, tmp_path):
    config = json.loads((tiny_dir / "checkpoint" / "config.json").read_text())
    config["vocab_size"] = 151936   # a plain Qwen vocabulary: no audio tags
    with pytest.raises(CheckpointError, match="vocab_size 151936 is smaller than the tokenizer's 155165"):
        load_qwen_audio(_variant(tiny_dir, tmp_path, config))


def test_embedding_with_too_few_rows_is_refused(tiny_dir, tmp_path):
    from safetensors.torch import load_file, save_file
    tensors = load_file(tiny_dir / "checkpoint" / "model.safetensors")
    tensors["transformer.wte.weight"] = tensors["transformer.wte.weight"][:151936].clone()
    directory = _variant(tiny_dir, tmp_path, skip=("model.safetensors",))
    save_file(tensors, directory / "model.safetensors")
    with pytest.raises(CheckpointError, match="transformer.wte.weight has 151936 rows, fewer than"):
        load_qwen_audio(directory)


def test_pickle_checkpoint_asks_for_safetensors(tiny_dir, tmp_path):
    directory = _variant(tiny_dir, tmp_path, skip=("model.safetensors",))
    (directory / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(CheckpointError, match="convert it to safetensors"):
        load_qwen_audio(directory)


def test_unclosed_audio_tag(models):
    with pytest.raises(AudioTagError, match="has no </audio>"):
        models["sdpa"].inputs("<audio>clip.flac<|startoftranscript|>")


def test_more_audio_tags_than_audios(models):
    with pytest.raises(AudioTagError, match="more audio tags than audios: the prompt has 2"):
        models["sdpa"].inputs("<audio>a</audio><audio>b</audio>", audio=[np.zeros(16000, np.float32)])


def test_missing_audio_file_names_audio_dir(models, tmp_path):
    with pytest.raises(FileNotFoundError, match="pass audio_dir="):
        models["sdpa"].inputs("<audio>absent.flac</audio>", audio_dir=tmp_path)


def test_long_audio_is_an_error_by_default(tiny_dir):
    model = load_qwen_audio(tiny_dir / "checkpoint")
    with pytest.raises(ValueError, match="96.63 s long"):
        model.inputs("<audio>music.wav</audio>", audio_dir=tiny_dir / "clips")


def test_prompt_beyond_2048_positions_is_refused(models, inputs):
    model = models["sdpa"]
    at_limit = ModelInputs(text="", input_ids=torch.full((1, 2048), 9707))
    assert model.forward(at_limit, logits_to_keep=1).logits.shape == (1, 1, 155947)
    with pytest.raises(ContextTooLongError, match="needs 2049 positions, more than 2048: .*dynamic-NTK"):
        model.forward(ModelInputs(text="", input_ids=torch.full((1, 2049), 9707)))
    with pytest.raises(ContextTooLongError, match="max_new_tokens=1900"):
        model.generate(inputs[2], max_new_tokens=1900)


def test_dtype_the_device_cannot_run(tiny_dir, monkeypatch):
    def no_half_conv(*args, **kwargs):
        raise RuntimeError("\"slow_conv2d_cpu\" not implemented for 'Half'")
    monkeypatch.setattr(torch.nn.functional, "conv1d", no_half_conv)
    with pytest.raises(UnsupportedDtypeError, match="float16 does not run on cpu .*use dtype=torch.float32"):
        load_qwen_audio(tiny_dir / "checkpoint", dtype=torch.float16)


def test_unknown_dtype_and_device(tiny_dir):
    with pytest.raises(UnsupportedDtypeError, match="dtype='float8'"):
        load_qwen_audio(tiny_dir / "checkpoint", dtype="float8")
    with pytest.raises(ValueError, match="device='gpu0' is not a device"):
        load_qwen_audio(tiny_dir / "checkpoint", device="gpu0")
