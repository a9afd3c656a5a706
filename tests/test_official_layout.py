"""Checkpoints in the published layout: config keys, tensor names, sharding, the synthetic
tokenizer, random checkpoints that load and run, and loaded models written back bit for bit."""
from __future__ import annotations

import json
from math import prod
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from workbench.audio import audio_span_tokens, load_audio
from workbench.errors import UnsupportedDtypeError
from workbench.models.checkpoint import INDEX_FILE, SINGLE_FILE, tensor_index
from workbench.models.qwen_audio import QwenAudio, load_qwen_audio
from workbench.models.qwen_audio.config import parameter_counts
from workbench.models.qwen_audio.official_layout import (
    REAL_CONFIG,
    generation_config,
    official_config,
    official_part,
    official_shapes,
    save_qwen_audio,
    sinusoids,
    to_official_state_dict,
    write_random_checkpoint,
    write_synthetic_tiktoken,
)
from workbench.tags import N_BPE_RANKS, SPECIAL_TOKENS
from workbench.tokenizer import QwenAudioTokenizer

TINY = dict(hidden=32, layers=2, heads=4, intermediate=128, audio_state=32, audio_layers=2, audio_heads=4)
ASR = "<|startoftranscript|><|en|><|transcribe|><|en|><|notimestamps|><|wo_itn|>"
SPEECH = "1272-128104-0000.flac"


def _tensors(directory: Path) -> dict[str, torch.Tensor]:
    out = {}
    for file in sorted(directory.glob("*.safetensors")):
        with safe_open(file, framework="pt") as handle:
            out |= {name: handle.get_tensor(name) for name in handle.keys()}
    return out


@pytest.fixture(scope="module")
def fixture_model(tiny_dir: Path) -> QwenAudio:
    return load_qwen_audio(tiny_dir / "checkpoint")


@pytest.fixture(scope="module")
def random_dir(tmp_path_factory) -> Path:
    """A tiny random checkpoint with the synthetic tokenizer, in three shards."""
    return write_random_checkpoint(tmp_path_factory.mktemp("random") / "ckpt", official_config(**TINY),
                                   shard_bytes=5_000_000)


# --- config and names ---------------------------------------------------------------------------

def test_config_has_every_key_of_the_published_layout(tiny_dir):
    published = json.loads((tiny_dir / "checkpoint" / "config.json").read_text())
    ours = official_config(**TINY)
    assert set(ours) == set(published) and set(ours["audio"]) == set(published["audio"])
    # Same sizes, same values; only the precision flags the fixture's author set differ.
    assert {k for k in published if published[k] != ours[k]} <= {"fp32", "torch_dtype"}


def test_real_config_has_the_published_sizes_and_parameter_counts():
    counts = parameter_counts(REAL_CONFIG)
    assert counts["encoder"] + counts["projector"] == 640_119_808
    assert counts["llm"] == 7_754_182_656
    assert (REAL_CONFIG["hidden_size"], REAL_CONFIG["num_hidden_layers"], REAL_CONFIG["intermediate_size"],
            REAL_CONFIG["kv_channels"], REAL_CONFIG["seq_length"]) == (4096, 32, 22016, 128, 2048)
    assert {k: REAL_CONFIG["audio"][k] for k in ("n_state", "n_layer", "n_head", "output_dim")} == \
        {"n_state": 1280, "n_layer": 32, "n_head": 20, "output_dim": 4096}


def test_parts_of_the_official_names_add_up_to_the_parameter_counts():
    counts = parameter_counts(REAL_CONFIG)
    by_part: dict[str, int] = {}
    for name, shape in official_shapes(REAL_CONFIG).items():
        by_part[official_part(name)] = by_part.get(official_part(name), 0) + prod(shape)
    # the sinusoids are a buffer saved in the checkpoint, not a parameter
    assert by_part.pop("encoder: positions (fixed sinusoids)") == 1500 * 1280
    assert sum(v for k, v in by_part.items() if k.startswith("encoder")) == counts["encoder"]
    assert sum(v for k, v in by_part.items() if k.startswith("projector")) == counts["projector"]
    assert sum(v for k, v in by_part.items() if k.startswith("LLM")) == counts["llm"]


def test_names_and_shapes_are_those_of_the_published_checkpoint(tiny_dir):
    config = json.loads((tiny_dir / "checkpoint" / "config.json").read_text())
    on_disk = {name: info.shape for name, info in tensor_index(tiny_dir / "checkpoint").items()}
    assert official_shapes(config) == on_disk


def test_sinusoids_are_the_saved_positional_embedding(tiny_dir):
    with safe_open(tiny_dir / "checkpoint" / SINGLE_FILE, framework="pt") as handle:
        saved = handle.get_tensor("transformer.audio.positional_embedding")
    assert torch.equal(sinusoids(*saved.shape).to(saved.dtype), saved)


# --- writing a loaded model back ------------------------------------------------------------------

def test_state_dict_runs_the_loader_mapping_backwards(fixture_model):
    state = to_official_state_dict(fixture_model)
    layer = fixture_model.llm.model.layers[1]
    attention, mlp = layer.self_attn, layer.mlp
    assert torch.equal(state["transformer.h.1.attn.c_attn.weight"],
                       torch.cat([attention.q_proj.weight, attention.k_proj.weight, attention.v_proj.weight]))
    assert torch.equal(state["transformer.h.1.attn.c_attn.bias"],
                       torch.cat([attention.q_proj.bias, attention.k_proj.bias, attention.v_proj.bias]))
    assert torch.equal(state["transformer.h.1.mlp.w1.weight"], mlp.up_proj.weight)
    assert torch.equal(state["transformer.h.1.mlp.w2.weight"], mlp.gate_proj.weight)
    assert torch.equal(state["transformer.h.1.mlp.c_proj.weight"], mlp.down_proj.weight)


def test_round_trip_is_bit_exact_and_computes_the_same_logits(fixture_model, tiny_dir, tmp_path):
    out = save_qwen_audio(fixture_model, tmp_path / "copy", dtype=torch.float16, shard_bytes=4_000_000)
    assert (out / INDEX_FILE).exists() and not (out / SINGLE_FILE).exists()
    assert len(list(out.glob("model-*-of-*.safetensors"))) > 1
    original, written = _tensors(tiny_dir / "checkpoint"), _tensors(out)
    assert written.keys() == original.keys()
    assert all(torch.equal(written[name], original[name]) for name in original)
    for name in ("config.json", "generation_config.json", "tokenizer_config.json"):
        assert json.loads((out / name).read_text()) == json.loads((tiny_dir / "checkpoint" / name).read_text())
    assert (out / "qwen.tiktoken").read_bytes() == (tiny_dir / "checkpoint" / "qwen.tiktoken").read_bytes()
    reloaded = load_qwen_audio(out)
    prompt = f"<audio>{SPEECH}</audio>{ASR}"
    before = fixture_model.forward(prompt, audio_dir=tiny_dir / "clips").logits
    after = reloaded.forward(prompt, audio_dir=tiny_dir / "clips").logits
    assert torch.equal(before, after)


def test_model_without_a_tokenizer_file_asks_for_one(fixture_model, tmp_path):
    orphan = QwenAudio(fixture_model.network, fixture_model.tokenizer, fixture_model.config, path=None)
    with pytest.raises(FileNotFoundError, match="pass tokenizer= a qwen.tiktoken file"):
        save_qwen_audio(orphan, tmp_path / "x")


def test_only_a_qwen_audio_model_has_an_official_state_dict():
    with pytest.raises(TypeError, match="takes a QwenAudio.*not Linear"):
        to_official_state_dict(torch.nn.Linear(2, 2))


# --- random checkpoints ---------------------------------------------------------------------------

def test_random_checkpoint_is_sharded_with_an_index(random_dir):
    index = json.loads((random_dir / INDEX_FILE).read_text())
    shards = sorted(p.name for p in random_dir.glob("*.safetensors"))
    assert shards == [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    assert set(index["weight_map"].values()) == set(shards)
    tensors = _tensors(random_dir)
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in tensors.values())
    assert set(tensors) == set(official_shapes(official_config(**TINY)))
    assert {t.dtype for t in tensors.values()} == {torch.float16}
    assert json.loads((random_dir / "config.json").read_text())["torch_dtype"] == "float16"
    assert json.loads((random_dir / "generation_config.json").read_text()) == generation_config(chat=False)


def test_random_weights_norms_and_positions(random_dir):
    tensors = _tensors(random_dir)
    assert torch.equal(tensors["transformer.h.0.ln_1.weight"], torch.ones(32, dtype=torch.float16))
    assert torch.equal(tensors["transformer.audio.blocks.1.attn_ln.bias"], torch.zeros(32, dtype=torch.float16))
    assert torch.equal(tensors["transformer.audio.positional_embedding"], sinusoids(1500, 32).half())
    embedding = tensors["transformer.wte.weight"].float()
    assert abs(embedding.std().item() - 0.02) < 1e-3 and abs(embedding.mean().item()) < 1e-3


def test_same_seed_same_values_whatever_the_sharding(random_dir, tmp_path):
    config = official_config(**TINY)
    single = write_random_checkpoint(tmp_path / "single", config, dtype="float32")
    other_seed = write_random_checkpoint(tmp_path / "seed1", config, seed=1, shard_bytes=5_000_000)
    sharded, single_tensors, reseeded = _tensors(random_dir), _tensors(single), _tensors(other_seed)
    assert (single / SINGLE_FILE).exists() and not (single / INDEX_FILE).exists()
    assert all(torch.equal(single_tensors[name].half(), sharded[name]) for name in sharded)
    name = "transformer.h.1.attn.c_attn.weight"
    assert not torch.equal(reseeded[name], sharded[name])
    again = write_random_checkpoint(tmp_path / "again", config, shard_bytes=5_000_000)
    for file in random_dir.iterdir():
        assert (again / file.name).read_bytes() == file.read_bytes(), file.name


def test_random_checkpoint_loads_and_runs_on_a_real_clip(random_dir, tiny_dir):
    model = load_qwen_audio(random_dir)
    clip = load_audio(tiny_dir / "clips" / SPEECH)
    inputs = model.inputs(f"<audio>{SPEECH}</audio>{ASR}", audio_dir=tiny_dir / "clips")
    assert inputs.audios[0].n_positions == audio_span_tokens(len(clip))
    out = model.forward(inputs)
    assert out.logits.shape == (1, inputs.length, 155947) and torch.isfinite(out.logits).all()
    assert out.audio_embeds[0].shape == (inputs.audios[0].n_positions, 32)
    generation = model.generate(inputs, max_new_tokens=4)
    assert 1 <= len(generation.ids) <= 4 and all(0 <= i < 155947 for i in generation.ids)


@pytest.mark.parametrize("dtype", ["bfloat16", torch.float32])
def test_dtype_on_disk(tmp_path, dtype):
    out = write_random_checkpoint(tmp_path / "c", official_config(**TINY), dtype=dtype)
    expected = torch.bfloat16 if dtype == "bfloat16" else torch.float32
    assert {t.dtype for t in _tensors(out).values()} == {expected}
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == str(expected).removeprefix("torch.")
    assert load_qwen_audio(out, dtype=expected).dtype == expected


def test_chat_checkpoint_loads_as_the_chat_family(tmp_path):
    out = write_random_checkpoint(tmp_path / "chat", official_config(**TINY), chat=True)
    assert load_qwen_audio(out).family == "qwen-audio-chat"


# --- the tokenizer file ---------------------------------------------------------------------------

def test_synthetic_tokenizer_keeps_the_special_ids_and_encodes_any_text(tiny_dir, random_dir):
    synthetic = QwenAudioTokenizer.from_dir(random_dir)
    real = QwenAudioTokenizer.from_dir(tiny_dir / "checkpoint")
    assert synthetic.vocab_size == real.vocab_size
    specials = "".join(t.text for t in SPECIAL_TOKENS[::37])
    assert synthetic.encode(specials) == real.encode(specials)
    texts = ("what does the speaker say?", "Grüße, 你好！ 🎵\n\tx = 1 + 2", "<|im_start|>user\nhi<|im_end|>")
    for text in texts:
        assert synthetic.decode(synthetic.encode(text)) == text
    text = "the quick brown fox jumps over the lazy dog"
    ids = synthetic.encode(text)
    assert len(ids) < len(text) / 2                         # pairs and triples merge: fewer ids than bytes
    assert ids != real.encode(text)                         # documented: text ids are not the real ones


def test_synthetic_tokenizer_file_is_deterministic(tmp_path):
    first, second = write_synthetic_tiktoken(tmp_path / "a"), write_synthetic_tiktoken(tmp_path / "b")
    assert first.read_bytes() == second.read_bytes()
    assert len(first.read_bytes().splitlines()) == N_BPE_RANKS


def test_a_smaller_vocabulary_moves_the_special_ids(tmp_path):
    out = write_random_checkpoint(tmp_path / "small", official_config(**TINY, n_ranks=1000, vocab_size=4600))
    model = load_qwen_audio(out)
    assert model.tokenizer.n_ranks == 1000 and model.tokenizer.vocab_size == 1000 + len(SPECIAL_TOKENS)
    assert model.tokenizer.audio_start_id == json.loads((out / "config.json").read_text())["audio"]["audio_start_id"]
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == 1000
    text = "hello, world"
    assert model.tokenizer.decode(model.tokenizer.encode(text)) == text
    with pytest.raises(ValueError, match=r"n_ranks=255: .* give an int in \[256, "):
        write_synthetic_tiktoken(tmp_path / "x", n_ranks=255)


def test_given_tokenizer_is_copied(tiny_dir, tmp_path):
    out = write_random_checkpoint(tmp_path / "c", official_config(**TINY), tokenizer=tiny_dir / "checkpoint")
    assert (out / "qwen.tiktoken").read_bytes() == (tiny_dir / "checkpoint" / "qwen.tiktoken").read_bytes()


def test_missing_or_wrong_tokenizer_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer=.*no such file.*None for a synthetic one"):
        write_random_checkpoint(tmp_path / "c", official_config(**TINY), tokenizer=tmp_path / "nope.tiktoken")
    short = tmp_path / "short.tiktoken"
    short.write_text("YQ== 0\n")
    with pytest.raises(ValueError, match="has 1 ranks but the config's audio_start_id is written for 151643"):
        write_random_checkpoint(tmp_path / "d", official_config(**TINY), tokenizer=short)
    assert not (tmp_path / "d").exists()          # checked before anything is written


# --- bad arguments --------------------------------------------------------------------------------

def test_refuses_a_directory_that_is_not_empty(random_dir):
    with pytest.raises(FileExistsError, match="is not empty: write a checkpoint into a new or empty directory"):
        write_random_checkpoint(random_dir, official_config(**TINY))


def test_bad_sizes_dtypes_and_seeds(tmp_path):
    with pytest.raises(ValueError, match="hidden 30 / heads 4 .* must divide evenly"):
        official_config(**{**TINY, "hidden": 30})
    with pytest.raises(ValueError, match="intermediate=127: give an even number"):
        official_config(**{**TINY, "intermediate": 127})
    with pytest.raises(ValueError, match="layers=0: give a positive int"):
        official_config(**{**TINY, "layers": 0})
    with pytest.raises(ValueError, match="vocab_size 1000 is smaller than the tokenizer's"):
        write_random_checkpoint(tmp_path / "v", official_config(**TINY, vocab_size=1000))
    with pytest.raises(UnsupportedDtypeError, match="dtype='int8': choose float32, bfloat16 or float16"):
        write_random_checkpoint(tmp_path / "d", official_config(**TINY), dtype="int8")
    with pytest.raises(ValueError, match=r"seed=-1: give an int in \[0, 2\*\*31\)"):
        write_random_checkpoint(tmp_path / "s", official_config(**TINY), seed=-1)
    with pytest.raises(ValueError, match="shard_bytes=0: give a positive number of bytes"):
        write_random_checkpoint(tmp_path / "b", official_config(**TINY), shard_bytes=0)
    with pytest.raises(ValueError, match="'transformer.h.0.attn.q_proj.weight' is not a tensor name"):
        official_part("transformer.h.0.attn.q_proj.weight")
