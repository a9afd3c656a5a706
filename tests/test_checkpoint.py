"""Safetensors reading: shard index, streaming into meta-built modules, and the errors on bad layouts."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from workbench.errors import CheckpointError, CheckpointFileNotFoundError
from workbench.models.checkpoint import INDEX_FILE, load_into, read_config, tensor_index


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 3)
        self.norm = nn.LayerNorm(3)
        self.register_buffer("table", torch.zeros(5, 3))


def _state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"proj.weight": torch.randn(3, 4, generator=g), "proj.bias": torch.randn(3, generator=g),
            "norm.weight": torch.randn(3, generator=g), "norm.bias": torch.randn(3, generator=g),
            "table": torch.randn(5, 3, generator=g)}


def _same_name(name: str) -> list[tuple[str, slice | None]]:
    return [(name, None)]


def _meta_tiny() -> Tiny:
    with torch.device("meta"):
        return Tiny()


def _write_sharded(directory: Path, tensors: dict[str, torch.Tensor], shards: list[list[str]]) -> None:
    weight_map = {}
    for i, names in enumerate(shards):
        file = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file({n: tensors[n].contiguous() for n in names}, directory / file)
        weight_map.update({n: file for n in names})
    (directory / INDEX_FILE).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def test_single_file_streams_into_a_meta_module_converting_dtype(tmp_path):
    state = _state()
    save_file({k: v.half() for k, v in state.items()}, tmp_path / "model.safetensors")
    index = tensor_index(tmp_path)
    assert index["proj.weight"].shape == (3, 4) and index["proj.weight"].dtype == torch.float16
    assert index["table"].nbytes == 5 * 3 * 2
    module = _meta_tiny()
    allocated = load_into(module, index, _same_name, dtype=torch.float32, device=torch.device("cpu"))
    assert allocated == sum(v.numel() for v in state.values()) * 4
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        assert tensor.dtype == torch.float32 and not tensor.requires_grad
        torch.testing.assert_close(tensor, state[name].half().float(), rtol=0, atol=0)
    assert "table" in dict(module.named_buffers())   # still a buffer, not turned into a parameter


def test_sharded_checkpoint_with_index_equals_single_file(tmp_path):
    state = _state()
    _write_sharded(tmp_path, state, [["proj.weight", "table"], ["proj.bias", "norm.weight", "norm.bias"]])
    module = _meta_tiny()
    load_into(module, tensor_index(tmp_path), _same_name, dtype=torch.float32, device=torch.device("cpu"))
    for name, tensor in module.state_dict().items():
        torch.testing.assert_close(tensor, state[name], rtol=0, atol=0)


def test_rows_split_one_fused_tensor_into_several_targets(tmp_path):
    fused = torch.arange(24, dtype=torch.float32).reshape(6, 4)
    save_file({"fused": fused}, tmp_path / "model.safetensors")
    with torch.device("meta"):
        module = nn.ModuleDict({"a": nn.Linear(4, 3, bias=False), "b": nn.Linear(4, 3, bias=False)})
    load_into(module, tensor_index(tmp_path), lambda name: [("a.weight", slice(0, 3)), ("b.weight", slice(3, 6))],
              dtype=torch.float32, device=torch.device("cpu"))
    torch.testing.assert_close(module["a"].weight, fused[:3], rtol=0, atol=0)
    torch.testing.assert_close(module["b"].weight, fused[3:], rtol=0, atol=0)


def test_large_tensors_are_copied_in_blocks_of_rows(tmp_path, monkeypatch):
    from workbench.models import checkpoint

    fused = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
    save_file({"fused": fused}, tmp_path / "model.safetensors")
    monkeypatch.setattr(checkpoint, "BLOCK_BYTES", 2 * 4 * 4)   # two rows a block
    index = tensor_index(tmp_path)
    opened = []
    real_open = checkpoint.safe_open
    monkeypatch.setattr(checkpoint, "safe_open", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k))
    with torch.device("meta"):
        module = nn.ModuleDict({"a": nn.Linear(4, 1, bias=False), "b": nn.Linear(4, 5, bias=False)})
    load_into(module, index, lambda name: [("a.weight", slice(0, 1)), ("b.weight", slice(1, 6))],
              dtype=torch.float32, device=torch.device("cpu"))
    torch.testing.assert_close(module["a"].weight, fused[:1], rtol=0, atol=0)
    torch.testing.assert_close(module["b"].weight, fused[1:], rtol=0, atol=0)
    assert len(opened) == 1 + 3   # a: one block; b: rows 1-2, 3-4, 5


def test_index_naming_a_missing_shard(tmp_path):
    _write_sharded(tmp_path, _state(), [["proj.weight", "table"], ["proj.bias", "norm.weight", "norm.bias"]])
    (tmp_path / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointFileNotFoundError, match=r"names shard\(s\) \['model-00002-of-00002.safetensors'\]"):
        tensor_index(tmp_path)


def test_index_naming_a_tensor_its_shard_lacks(tmp_path):
    _write_sharded(tmp_path, _state(), [["proj.weight", "table", "proj.bias", "norm.weight", "norm.bias"]])
    index = json.loads((tmp_path / INDEX_FILE).read_text())
    index["weight_map"]["extra.weight"] = "model-00001-of-00001.safetensors"
    (tmp_path / INDEX_FILE).write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=r"lacks 1 tensor\(s\) the index assigns to it, e.g. \['extra.weight'\]"):
        tensor_index(tmp_path)


def test_index_that_is_not_json(tmp_path):
    (tmp_path / INDEX_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match="is not valid JSON"):
        tensor_index(tmp_path)


def test_index_without_weight_map(tmp_path):
    (tmp_path / INDEX_FILE).write_text(json.dumps({"metadata": {}}))
    with pytest.raises(CheckpointError, match="has no 'weight_map'"):
        tensor_index(tmp_path)


def test_pickle_checkpoint_is_refused_with_the_conversion(tmp_path):
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x02")
    with pytest.raises(CheckpointError, match=r"pytorch_model.bin \(a pickle checkpoint\).*convert it to safetensors"):
        tensor_index(tmp_path)


def test_shards_without_their_index(tmp_path):
    _write_sharded(tmp_path, _state(), [["proj.weight", "table"], ["proj.bias", "norm.weight", "norm.bias"]])
    (tmp_path / INDEX_FILE).unlink()
    with pytest.raises(CheckpointFileNotFoundError, match=f"but no {INDEX_FILE}"):
        tensor_index(tmp_path)


def test_directory_without_weights(tmp_path):
    with pytest.raises(CheckpointFileNotFoundError, match="not a safetensors checkpoint"):
        tensor_index(tmp_path)


def test_corrupted_shard(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(CheckpointError, match="is not a readable safetensors file"):
        tensor_index(tmp_path)


def test_missing_config(tmp_path):
    with pytest.raises(CheckpointFileNotFoundError, match=r"config.json not found: the checkpoint needs its model config"):
        read_config(tmp_path)


def test_tensor_the_layout_does_not_know(tmp_path):
    save_file({**_state(), "stray": torch.zeros(2)}, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"1 tensor\(s\) this layout does not know, e.g. \['stray'\]"):
        load_into(_meta_tiny(), tensor_index(tmp_path), lambda n: [] if n == "stray" else [(n, None)],
                  dtype=torch.float32, device=torch.device("cpu"))


def test_tensor_the_checkpoint_lacks(tmp_path):
    state = _state()
    del state["norm.bias"]
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"1 model tensor\(s\) were not in the checkpoint, e.g. \['norm.bias'\]"):
        load_into(_meta_tiny(), tensor_index(tmp_path), _same_name, dtype=torch.float32, device=torch.device("cpu"))


def test_shape_that_disagrees_with_the_config(tmp_path):
    save_file({**_state(), "proj.weight": torch.zeros(3, 5)}, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"proj.weight .* has shape \(3, 5\) but the model .* expects \(3, 4\)"):
        load_into(_meta_tiny(), tensor_index(tmp_path), _same_name, dtype=torch.float32, device=torch.device("cpu"))


def test_resharded_tiny_checkpoint_loads_the_same_model(tiny_dir, tmp_path):
    """The official layout split into 3 shards with an index loads to the very same weights."""
    from workbench.models.qwen_audio import load_qwen_audio

    source = tiny_dir / "checkpoint"
    tensors = load_file(source / "model.safetensors")
    names = sorted(tensors)
    _write_sharded(tmp_path, tensors, [names[0::3], names[1::3], names[2::3]])
    for file in ("config.json", "generation_config.json", "qwen.tiktoken", "tokenizer_config.json"):
        os.symlink(source / file, tmp_path / file)
    sharded, single = load_qwen_audio(tmp_path), load_qwen_audio(source)
    single_state = single.network.state_dict()
    assert sharded.network.state_dict().keys() == single_state.keys()
    for name, tensor in sharded.network.state_dict().items():
        torch.testing.assert_close(tensor, single_state[name], rtol=0, atol=0)
