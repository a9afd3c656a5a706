"""Damaged weights are refused at load, and a damaged converted-weights cache is rebuilt, never trusted.

Checkpoints: copies of the official-layout fixture (../shared, never modified) with one tensor made
NaN / inf, stored as int8 or float8, the file cut short, a shard missing, or config.json wrong.
faster-whisper directories: the tiny model of test_ct2 written with the same kinds of damage.
The cache: a tiny fake PyPI package converted into a per-test $WORKBENCH_CACHE, then damaged.
Every refusal names what is wrong (the tensor, variable or file) and what to do, and leaves the
source's bytes as they were and no staging directory behind.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import os
import re
import select
import shutil
import struct
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from test_ct2 import export_whisper, tiny_ct2_dir, write_model_bin
from torch import nn

from workbench.errors import CheckpointError, CheckpointFileNotFoundError, NonFiniteWeightsError, WeightDtypeError
from workbench.models import checkpoint, registry
from workbench.models.checkpoint import load_into, tensor_index
from workbench.models.qwen_audio import load_qwen_audio
from workbench.models.whisper import load_whisper

ALIASES = {"decoder/projection/weight": "decoder/embeddings/weight"}


# --- helpers ----------------------------------------------------------------------------------
def _snapshot(directory: Path) -> dict[str, str]:
    """Every file under `directory` with the sha256 of its bytes."""
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def _stagings(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith(".")) if root.is_dir() else []


@pytest.fixture(scope="module")
def fixture_stat(tiny_dir: Path) -> dict[str, tuple[int, int]]:
    """Size and mtime of the shared fixture's files, to check that no test wrote to them."""
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in (tiny_dir / "checkpoint").iterdir()}


def _copy_fixture(tiny_dir: Path, directory: Path) -> Path:
    shutil.copytree(tiny_dir / "checkpoint", directory)
    for path in directory.iterdir():
        path.chmod(0o644)   # the shared copy is read-only; the corrupted one must be writable
    directory.chmod(0o755)
    return directory


def _header(data: bytes) -> tuple[int, dict]:
    (length,) = struct.unpack("<Q", data[:8])
    return 8 + length, json.loads(data[8:8 + length])


def _patch_values(file: Path, name: str, change: Callable[[np.ndarray], None]) -> None:
    """Overwrite tensor `name`'s float16 values in place in the file's bytes (the rest untouched)."""
    data = file.read_bytes()
    base, header = _header(data)
    assert header[name]["dtype"] == "F16"
    start, end = (base + offset for offset in header[name]["data_offsets"])
    values = np.frombuffer(data[start:end], dtype=np.float16).reshape(header[name]["shape"]).copy()
    change(values)
    file.write_bytes(data[:start] + values.tobytes() + data[end:])


def _fill(name: str, value: float, index: tuple | None = None, file: str = "model.safetensors"):
    def corrupt(directory: Path, monkeypatch) -> None:
        def change(values: np.ndarray) -> None:
            if index is None:
                values.fill(value)
            else:
                values[index] = value
        _patch_values(directory / file, name, change)
    return corrupt


def _retype(name: str, dtype: torch.dtype):
    def corrupt(directory: Path, monkeypatch) -> None:
        tensors = load_file(directory / "model.safetensors")
        scale = 1 if dtype.is_floating_point else 100     # int8: the values as a naive cast would store them
        tensors[name] = (tensors[name].float() * scale).clamp(-100, 100).to(dtype)
        save_file(tensors, directory / "model.safetensors", metadata={"format": "pt"})
    return corrupt


def _truncate(directory: Path, monkeypatch) -> None:
    with open(directory / "model.safetensors", "r+b") as handle:
        handle.truncate(handle.seek(0, 2) // 2)


def _reshard(directory: Path) -> None:
    """model.safetensors → 3 shards + index, as a published multi-shard checkpoint."""
    tensors = load_file(directory / "model.safetensors")
    names = sorted(tensors)
    weight_map = {}
    for i in range(3):
        file = f"model-{i + 1:05d}-of-00003.safetensors"
        save_file({n: tensors[n] for n in names[i::3]}, directory / file, metadata={"format": "pt"})
        weight_map |= dict.fromkeys(names[i::3], file)
    (directory / "model.safetensors").unlink()
    (directory / checkpoint.INDEX_FILE).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def _missing_shard(directory: Path, monkeypatch) -> None:
    _reshard(directory)
    (directory / "model-00002-of-00003.safetensors").unlink()


def _nan_in_a_shard(directory: Path, monkeypatch) -> None:
    _reshard(directory)
    weight_map = json.loads((directory / checkpoint.INDEX_FILE).read_text())["weight_map"]
    assert weight_map["transformer.h.1.attn.c_attn.weight"] == "model-00003-of-00003.safetensors"
    # row 70 of the fused [q; k; v] (96 rows): in v, which is copied as its own slice
    _fill("transformer.h.1.attn.c_attn.weight", np.nan, (70, 3), "model-00003-of-00003.safetensors")(directory, monkeypatch)


def _one_nan_in_a_late_block(directory: Path, monkeypatch) -> None:
    monkeypatch.setattr(checkpoint, "BLOCK_BYTES", 2**16)   # lm_head streams in ~150 blocks of 1,024 rows
    _fill("lm_head.weight", np.nan, (150_001, 3))(directory, monkeypatch)


def _config(key: str, value):
    def corrupt(directory: Path, monkeypatch) -> None:
        config = json.loads((directory / "config.json").read_text())
        if key.startswith("audio."):
            config["audio"][key.removeprefix("audio.")] = value
        else:
            config[key] = value
        (directory / "config.json").write_text(json.dumps(config))
    return corrupt


# --- Qwen-Audio checkpoints -------------------------------------------------------------------
# (damage, exception, substrings the message must hold ({dir}: the checkpoint), regex of the fix)
CHECKPOINT_CASES = [
    pytest.param(_fill("transformer.h.1.mlp.w1.weight", np.nan), NonFiniteWeightsError,
                 ["transformer.h.1.mlp.w1.weight in {dir}/model.safetensors", "NaN or inf", "first in row 0 of 64"],
                 "re-download the checkpoint, or re-convert it", id="nan-tensor"),
    pytest.param(_one_nan_in_a_late_block, NonFiniteWeightsError,
                 ["lm_head.weight in {dir}/model.safetensors", "first in row 150001 of 155947"],
                 "re-download the checkpoint", id="one-nan-in-a-late-block"),
    pytest.param(_fill("transformer.audio.blocks.0.attn.query.bias", np.inf, (5,)), NonFiniteWeightsError,
                 ["transformer.audio.blocks.0.attn.query.bias in {dir}/model.safetensors", "NaN or inf",
                  "first in element 5 of 32"],
                 "re-download the checkpoint", id="inf-bias"),
    pytest.param(_fill("transformer.ln_f.weight", -np.inf, (0,)), NonFiniteWeightsError,
                 ["transformer.ln_f.weight in {dir}/model.safetensors"], "re-download the checkpoint",
                 id="minus-inf-norm"),
    pytest.param(_nan_in_a_shard, NonFiniteWeightsError,
                 ["transformer.h.1.attn.c_attn.weight in {dir}/model-00003-of-00003.safetensors",
                  "first in row 70 of 96"],
                 "re-download the checkpoint", id="nan-in-shard-3"),
    pytest.param(_retype("transformer.h.0.attn.c_attn.weight", torch.int8), WeightDtypeError,
                 ["transformer.h.0.attn.c_attn.weight in {dir}/model.safetensors is stored as int8",
                  "must be float16, bfloat16, float32 or float64"],
                 "re-convert the checkpoint from the original weights", id="int8-instead-of-float16"),
    pytest.param(_retype("transformer.audio.proj.weight", torch.float8_e4m3fn), WeightDtypeError,
                 ["transformer.audio.proj.weight in {dir}/model.safetensors is stored as float8_e4m3fn"],
                 "re-convert the checkpoint", id="float8-tensor"),
    pytest.param(_truncate, CheckpointError,
                 ["{dir}/model.safetensors is not a readable safetensors file", "bytes but its header describes",
                  "truncated"], "re-download it", id="truncated-file"),
    pytest.param(_missing_shard, CheckpointFileNotFoundError,
                 ["model.safetensors.index.json names shard(s) ['model-00002-of-00003.safetensors']"],
                 "download the missing shard", id="missing-shard"),
    pytest.param(_config("audio.n_mels", 128), CheckpointError,
                 ["transformer.audio.conv1.weight in model.safetensors has shape (32, 80, 3)", "expects (32, 128, 3)"],
                 "use the config.json that came with them", id="wrong-shape"),
    pytest.param(_config("num_attention_heads", 0), CheckpointError,
                 ["config.json: num_attention_heads is 0", "positive integer"],
                 "restore config.json from the original checkpoint", id="config-zero-heads"),
    pytest.param(_config("layer_norm_epsilon", float("nan")), CheckpointError,
                 ["config.json: layer_norm_epsilon is nan", "positive finite number"],
                 "restore config.json", id="config-nan-epsilon"),
    pytest.param(_config("audio.n_state", "32"), CheckpointError, ["config.json: audio.n_state is '32'"],
                 "restore config.json", id="config-size-as-string"),
]


@pytest.mark.parametrize("corrupt, error, parts, fix", CHECKPOINT_CASES)
def test_damaged_checkpoint_is_refused(tiny_dir, fixture_stat, tmp_path, monkeypatch, corrupt, error, parts, fix):
    directory = _copy_fixture(tiny_dir, tmp_path / "checkpoint")
    corrupt(directory, monkeypatch)
    before = _snapshot(directory)
    with pytest.raises(error) as caught:
        load_qwen_audio(directory)
    message = str(caught.value)
    for part in parts:
        assert part.format(dir=directory) in message, message
    assert re.search(fix, message), message
    assert _snapshot(directory) == before                      # the loader only reads
    assert {p.name: (p.stat().st_size, p.stat().st_mtime_ns)
            for p in (tiny_dir / "checkpoint").iterdir()} == fixture_stat


def test_the_undamaged_copy_loads(tiny_dir, tmp_path):
    """The control: the same copy, undamaged, loads (so the refusals above come from the damage)."""
    load_qwen_audio(_copy_fixture(tiny_dir, tmp_path / "checkpoint"))


@pytest.mark.parametrize("stored, load_dtype, fix", [
    (torch.tensor([1.0, 1e300, 2.0], dtype=torch.float64), torch.float32,
     "no dtype the workbench computes in holds them; re-convert the checkpoint"),
    (torch.tensor([1.0, 7e4, 2.0], dtype=torch.float32), torch.float16, "load with dtype=torch.float32 or bfloat16"),
], ids=["float64-beyond-float32", "float32-beyond-float16"])
def test_values_that_overflow_the_load_dtype(tmp_path, stored, load_dtype, fix):
    save_file({"weight": stored}, tmp_path / "model.safetensors")
    with torch.device("meta"):
        module = nn.Module()
        module.weight = nn.Parameter(torch.empty(3))
    with pytest.raises(NonFiniteWeightsError, match=rf"weight in {re.escape(str(tmp_path))}/model.safetensors holds "
                                                    rf"values beyond .* overflow to inf in "
                                                    rf"{str(load_dtype).removeprefix('torch.')} "
                                                    rf"\(first in element 1 of 3\): {fix}"):
        load_into(module, tensor_index(tmp_path), lambda name: [(name, None)], dtype=load_dtype,
                  device=torch.device("cpu"))


# --- faster-whisper (CTranslate2) weights -------------------------------------------------------
@pytest.fixture(scope="module")
def ct2_source(tmp_path_factory) -> tuple[Path, dict]:
    """The tiny faster-whisper directory and its variables (float16), to write damaged copies of."""
    directory, model = tiny_ct2_dir(tmp_path_factory.mktemp("ct2") / "tiny")
    return directory, export_whisper(model)


def _ct2_copy(source: Path, directory: Path, variables: dict) -> Path:
    directory.mkdir()
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copyfile(source / name, directory / name)
    write_model_bin(directory / "model.bin", variables, aliases=ALIASES)
    return directory


def _set(variables: dict, name: str, array: np.ndarray, code: int) -> dict:
    return {**variables, name: (array, code)}


def _nan_variable(v: dict) -> dict:
    array = v["decoder/layer_1/ffn/linear_0/weight"][0].copy()
    array[3, 2] = np.nan
    return _set(v, "decoder/layer_1/ffn/linear_0/weight", array, 4)


def _int8_norm(v: dict) -> dict:
    gamma = v["encoder/layer_0/self_attention/layer_norm/gamma"][0]
    return _set(v, "encoder/layer_0/self_attention/layer_norm/gamma", np.ones_like(gamma, dtype=np.int8), 1)


def _int8_without_scale(v: dict) -> dict:
    weight = v["decoder/layer_0/attention/linear_0/weight"][0]
    return _set(v, "decoder/layer_0/attention/linear_0/weight", (weight * 100).astype(np.int8), 1)


def _int8_zero_scale(v: dict) -> dict:
    weight = v["encoder/layer_1/ffn/linear_1/weight"][0]
    scale = np.full(weight.shape[0], 50.0, np.float32)
    scale[4] = 0.0
    v = _set(v, "encoder/layer_1/ffn/linear_1/weight", np.round(weight * 50).astype(np.int8), 1)
    return _set(v, "encoder/layer_1/ffn/linear_1/weight_scale", scale, 0)


@pytest.mark.parametrize("damage, error, parts", [
    (_nan_variable, NonFiniteWeightsError, ["variable decoder/layer_1/ffn/linear_0/weight holds NaN or inf"]),
    (_int8_norm, WeightDtypeError, ["variable encoder/layer_0/self_attention/layer_norm/gamma is stored as int8",
                                    "must be float16, bfloat16 or float32"]),
    (_int8_without_scale, WeightDtypeError, ["variable decoder/layer_0/attention/linear_0/weight is stored as int8 "
                                             "without decoder/layer_0/attention/linear_0/weight_scale"]),
    (_int8_zero_scale, NonFiniteWeightsError, ["variable encoder/layer_1/ffn/linear_1/weight dequantizes to inf or NaN",
                                               "weight_scale holds zeros"]),
], ids=["nan-variable", "int8-layer-norm", "int8-without-scale", "int8-zero-scale"])
def test_damaged_faster_whisper_directory_is_refused(ct2_source, tmp_path, damage, error, parts):
    source, variables = ct2_source
    directory = _ct2_copy(source, tmp_path / "damaged", damage(variables))
    before = _snapshot(directory)
    with pytest.raises(error) as caught:
        load_whisper(directory)
    message = str(caught.value)
    assert message.startswith(f"{directory}/model.bin: "), message
    for part in parts:
        assert part in message, message
    assert "re-download the faster-whisper model" in message
    assert _snapshot(directory) == before


def test_the_undamaged_faster_whisper_copy_loads(ct2_source, tmp_path):
    source, variables = ct2_source
    load_whisper(_ct2_copy(source, tmp_path / "intact", variables))


# --- the converted-weights cache -----------------------------------------------------------------
def _site(site: Path, package: str, source: Path, blob: bytes) -> Path:
    """A fake installed package carrying a faster-whisper model split in two parts, like whisper-base."""
    data = site / package / "data"
    data.mkdir(parents=True)
    (data.parent / "__init__.py").write_text("")
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copyfile(source / name, data / name)
    (data / "model.bin.part1").write_bytes(blob[:1000])
    (data / "model.bin.part2").write_bytes(blob[1000:])
    return site


def _packaged(site: Path, package: str, blob: bytes, monkeypatch) -> registry.PackagedModel:
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, package, raising=False)
    importlib.invalidate_caches()
    return registry.PackagedModel(
        name="fake-whisper", family="whisper", format="ctranslate2",
        directory=registry.PackagedFile(package, "data"),
        weights=(registry.PackagedFile(package, "data/model.bin.part1"),
                 registry.PackagedFile(package, "data/model.bin.part2")),
        sha256=hashlib.sha256(blob).hexdigest(), distributions=("wb-fake-weights",), extra="whisper",
        description="test")


@pytest.fixture
def fake(ct2_source, tmp_path, monkeypatch) -> registry.PackagedModel:
    """The tiny model as an installed package (its own import name per test), cache in tmp_path/cache."""
    package = f"wb_fake_{hashlib.sha1(str(tmp_path).encode()).hexdigest()[:10]}"
    blob = (ct2_source[0] / "model.bin").read_bytes()
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    return _packaged(_site(tmp_path / "site", package, ct2_source[0], blob), package, blob, monkeypatch)


def _listing(directory: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in directory.iterdir()}


def _rewrite_marker(change: Callable[[dict], dict]):
    def damage(directory: Path) -> None:
        marker = directory / registry.MARKER
        marker.write_text(json.dumps(change(json.loads(marker.read_text()))))
    return damage


def _edit_same_size(directory: Path) -> None:
    text = (directory / "config.json").read_text()
    assert '"decoder_layers": 2' in text
    (directory / "config.json").write_text(text.replace('"decoder_layers": 2', '"decoder_layers": 3'))


@pytest.mark.parametrize("damage, reason, load", [
    (lambda d: os.truncate(d / "model.safetensors", 4096),
     r"model\.safetensors is 4,096 bytes, [\d,]+ when converted \(truncated or replaced\)", True),
    (lambda d: (d / "tokenizer.json").unlink(), r"tokenizer\.json is missing", True),
    (lambda d: (d / "config.json").unlink(), r"config\.json is missing", False),
    (_edit_same_size, r"config\.json changed since it was converted \(same size, other content\)", False),
    (lambda d: (d / "pytorch_model.bin").write_bytes(b"stray"), r"pytorch_model\.bin is not part of the conversion",
     False),
    (_rewrite_marker(lambda m: {k: v for k, v in m.items() if k != "files"} | {"sources": [["/old/venv", 1, 2]]}),
     r"lists no files \(written by an older workbench\)", False),
    (_rewrite_marker(lambda m: m | {"converter": 1}), r"written by converter version 1, this workbench's is", False),
    (lambda d: (d / registry.MARKER).unlink(), r"has no workbench-source\.json", False),
], ids=["truncated-weights", "missing-tokenizer", "missing-config", "edited-config", "stray-file", "old-marker",
        "other-converter", "no-marker"])
def test_damaged_cache_is_rebuilt_with_a_warning_naming_the_file(fake, tmp_path, damage, reason, load):
    directory = registry.ensure_converted(fake)
    converted, package = _listing(directory), _snapshot(tmp_path / "site")
    damage(directory)
    with pytest.warns(registry.CacheRebuildWarning, match=rf"rebuilding the cached fake-whisper in "
                                                          rf"{re.escape(str(directory))}: .*{reason}"):
        assert registry.ensure_converted(fake) == directory
    assert _listing(directory) == converted                  # every file back, at its size
    assert _stagings(directory.parent) == []
    assert _snapshot(tmp_path / "site") == package
    rebuilt = (directory / "model.safetensors").stat().st_mtime_ns
    with warnings.catch_warnings():
        warnings.simplefilter("error")                       # the rebuilt cache is trusted again, silently
        assert registry.ensure_converted(fake) == directory
    assert (directory / "model.safetensors").stat().st_mtime_ns == rebuilt
    if load:
        lm = load_whisper(directory)
        generation = lm.generate("<|startoftranscript|><|en|><|transcribe|><|notimestamps|>",
                                 np.zeros(16000, np.float32), max_new_tokens=2)
        assert generation.prompt_length == 4


def test_same_weights_from_two_package_paths_share_one_conversion(ct2_source, tmp_path, monkeypatch):
    """Two virtualenvs (two site-packages) with the same packaged weights: the second reuses the cache."""
    blob = (ct2_source[0] / "model.bin").read_bytes()
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    package = "wb_fake_two_venvs"
    first = _packaged(_site(tmp_path / "venv-a", package, ct2_source[0], blob), package, blob, monkeypatch)
    directory = registry.ensure_converted(first)
    written = (directory / "model.safetensors").stat().st_mtime_ns
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(tmp_path / "venv-a")])
    second = _packaged(_site(tmp_path / "venv-b", package, ct2_source[0], blob), package, blob, monkeypatch)
    assert registry.locate(second)[0] == tmp_path / "venv-b" / package / "data"
    for model in (second, first, second):     # back and forth: never converted again
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert registry.ensure_converted(model) == directory
        assert (directory / "model.safetensors").stat().st_mtime_ns == written


def _under_a_file(tmp_path: Path) -> Path:
    (tmp_path / "a-file").write_text("not a directory")
    return tmp_path / "a-file" / "cache"


def _is_a_file(tmp_path: Path) -> Path:
    (tmp_path / "cache-file").write_text("not a directory")
    return tmp_path / "cache-file"


@pytest.mark.parametrize("make_root, deny", [
    (_under_a_file, None),
    (_is_a_file, None),
    (lambda tmp_path: tmp_path / "cache", "mkdtemp"),
    (lambda tmp_path: tmp_path / "cache", "write"),
], ids=["cache-under-a-regular-file", "cache-is-a-regular-file", "permission-denied", "disk-full-mid-conversion"])
def test_unwritable_cache_names_the_directory_and_workbench_cache(fake, tmp_path, monkeypatch, make_root, deny):
    """Tests run as root, where chmod does not stop writes: the cache is put under a regular file, or
    the write that a read-only directory (EACCES) or a full disk (ENOSPC) refuses is made to fail."""
    root = make_root(tmp_path)
    monkeypatch.setenv("WORKBENCH_CACHE", str(root))
    if deny == "mkdtemp":
        def mkdtemp(prefix: str = "", dir: str | None = None, **_):
            raise PermissionError(13, "Permission denied", os.path.join(dir or "", prefix + "xxxxxxxx"))
        monkeypatch.setattr(registry.tempfile, "mkdtemp", mkdtemp)
    elif deny == "write":
        def convert(directory, out_dir, **_):
            (Path(out_dir) / "model.safetensors").write_bytes(b"half")
            raise OSError(28, "No space left on device", str(Path(out_dir) / "model.safetensors"))
        monkeypatch.setattr(registry, "convert_ct2_whisper", convert)   # the name registry converts with
    package = _snapshot(tmp_path / "site")
    with pytest.raises(registry.CacheNotWritableError) as caught:
        load_whisper_name(fake)
    message = str(caught.value)
    assert isinstance(caught.value, PermissionError)
    assert f"cannot write the converted-weights cache {root} (WORKBENCH_CACHE={str(root)!r})" in message, message
    assert "Set WORKBENCH_CACHE to a writable folder" in message, message
    assert not (root / "fake-whisper").exists() and _stagings(root) == []
    assert _snapshot(tmp_path / "site") == package


def test_a_valid_cache_in_a_read_only_directory_is_used_without_writing(fake, monkeypatch):
    directory = registry.ensure_converted(fake)

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(directory.parent))
    for name in ("mkdtemp", "rmtree", "rename"):    # every way the registry writes
        monkeypatch.setattr({"mkdtemp": registry.tempfile, "rmtree": registry.shutil, "rename": registry.os}[name],
                            name, refuse)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert registry.ensure_converted(fake) == directory


def load_whisper_name(model: registry.PackagedModel):
    """What `workbench.load("whisper-…")` does, for a fake packaged model."""
    return load_whisper(registry.ensure_converted(model))


def test_a_failed_conversion_leaves_no_staging(fake, tmp_path, monkeypatch):
    def convert(directory, out_dir, **_):
        (Path(out_dir) / "model.safetensors").write_bytes(b"half")
        raise RuntimeError("converter crashed")
    monkeypatch.setattr(registry, "convert_ct2_whisper", convert)   # the name registry converts with
    with pytest.raises(RuntimeError, match="converter crashed"):
        registry.ensure_converted(fake)
    assert _stagings(tmp_path / "cache") == [] and not (tmp_path / "cache" / "fake-whisper").exists()


def test_damaged_packaged_weights_are_refused_before_anything_is_cached(ct2_source, tmp_path, monkeypatch):
    """NaN in the packaged model.bin (its pin says these very bytes): the conversion refuses them."""
    source, variables = ct2_source
    bad = _ct2_copy(source, tmp_path / "bad", _nan_variable(variables))
    blob = (bad / "model.bin").read_bytes()
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    model = _packaged(_site(tmp_path / "site", "wb_fake_nan", bad, blob), "wb_fake_nan", blob, monkeypatch)
    with pytest.raises(NonFiniteWeightsError, match=r"model\.bin\.part1 \+ .*model\.bin\.part2: variable "
                                                    r"decoder/layer_1/ffn/linear_0/weight holds NaN or inf.*re-download"):
        registry.ensure_converted(model)
    assert not (tmp_path / "cache" / "fake-whisper").exists() and _stagings(tmp_path / "cache") == []


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


@pytest.mark.parametrize("name, hours_old, removed", [
    ("{model}.staging-{host}-{dead}-ab12cd34", 0, True),            # killed conversion on this host
    ("{model}.staging-{host}-{live}-ab12cd34", 0, False),           # converting now: left alone
    ("{model}.staging-otherhost-{dead}-ab12cd34", 0, False),        # another host's: its pid means nothing here
    ("{model}.staging-otherhost-{dead}-ab12cd34", 7, True),         # … unless abandoned for hours
    ("whisper-base-k2j4h5g6", 7, True),                             # an older workbench's staging, abandoned
    ("whisper-base-k2j4h5g6", 0, False),                            # … or maybe still converting
], ids=["dead-owner", "live-owner", "other-host", "other-host-old", "old-format-old", "old-format-fresh"])
def test_stale_staging_is_removed_by_the_next_conversion(fake, tmp_path, name, hours_old, removed):
    root = tmp_path / "cache"
    staging = root / ("." + name.format(model="fake-whisper", host=registry._host(), dead=_dead_pid(),
                                        live=os.getppid()))
    staging.mkdir(parents=True)
    (staging / "model.safetensors").write_bytes(b"\0" * 4096)
    then = time.time() - hours_old * 3600
    os.utime(staging, (then, then))
    registry.ensure_converted(fake)
    assert _stagings(root) == ([] if removed else [staging.name])


def test_sigkill_mid_conversion_leaves_no_cache_and_its_staging_is_removed_next_time(fake, tmp_path):
    """A real process killed with SIGKILL while it writes: no half cache; the next conversion cleans up."""
    fields = {"package": fake.directory.package, "sha256": fake.sha256}
    child = subprocess.Popen([sys.executable, "-c", f"""
import json, sys, time
from pathlib import Path
sys.path.insert(0, {str(tmp_path / "site")!r})
from workbench.models import registry

def hang(directory, out_dir, **_):
    (Path(out_dir) / "model.safetensors").write_bytes(b"half")
    print("writing", flush=True)
    time.sleep(300)

registry.convert_ct2_whisper = hang
f = json.loads({json.dumps(fields)!r})
registry.ensure_converted(registry.PackagedModel(
    name="fake-whisper", family="whisper", format="ctranslate2",
    directory=registry.PackagedFile(f["package"], "data"),
    weights=(registry.PackagedFile(f["package"], "data/model.bin.part1"),
             registry.PackagedFile(f["package"], "data/model.bin.part2")),
    sha256=f["sha256"], distributions=("wb-fake-weights",), extra="whisper", description="test"))
"""], stdout=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([child.stdout], [], [], 120)
        assert ready and child.stdout.readline().strip() == "writing"
        root = tmp_path / "cache"
        assert [n for n in _stagings(root) if f"-{child.pid}-" in n], _stagings(root)
    finally:
        child.kill()
        child.wait()
    assert not (root / "fake-whisper").exists()              # nothing half-written in place
    directory = registry.ensure_converted(fake)
    assert _stagings(root) == [] and registry._cache_problem(directory, registry._cache_key(fake)) is None


def test_of_two_conversions_at_once_the_first_to_finish_is_kept(fake, tmp_path, monkeypatch):
    """Another process finishes while this one converts: this one discards its own and uses the other's."""
    real, racer = registry.convert_ct2_whisper, {}

    def convert(directory, out_dir, **options):
        if not racer:   # the other process: converts from start to finish meanwhile
            racer["staging"] = Path(out_dir)
            target = registry.cache_dir(fake)
            registry._convert(fake, *registry.locate(fake), target, registry._cache_key(fake))
            racer["written"] = (target / "model.safetensors").stat().st_mtime_ns
        return real(directory, out_dir, **options)

    monkeypatch.setattr(registry, "convert_ct2_whisper", convert)
    directory = registry.ensure_converted(fake)
    assert (directory / "model.safetensors").stat().st_mtime_ns == racer["written"]
    assert not racer["staging"].exists() and _stagings(directory.parent) == []
