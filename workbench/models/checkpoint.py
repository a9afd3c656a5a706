"""Safetensors checkpoints: config, shard index, and tensors streamed into modules built on `meta`.

A model is built on the `meta` device (no memory), then every parameter is allocated once in its
final dtype and device and filled from the checkpoint, one tensor at a time. `safe_open` maps a
shard into memory and the pages it touches stay resident while the shard is open, so each tensor
(each block of rows, for large ones) is read through its own short-lived `safe_open`: peak memory
stays at the weights plus one block (`BLOCK_BYTES`). Pickle checkpoints (`*.bin`) are
refused: loading them runs arbitrary code.

Shapes, dtypes and values are checked on the way: a tensor stored in a dtype that cannot hold
weights (int8 where float16 belongs: its bytes would be read as numbers of another kind) is refused
from the headers, before anything is allocated, and every block is checked for NaN / ±inf right
after it is copied (`torch.aminmax` on the block already in memory: no second pass over the file,
under 1 ms per 20 MB on one CPU core). A damaged tensor otherwise loads and generates garbage.

Also here: where the weights go. `resolve_device` / `resolve_dtype` turn the loader's arguments
into a device and dtype, and `check_dtype_runs` tries each kind of op once, tiny, so that a dtype
the device cannot compute fails at load time with a clear message rather than mid-forward.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from math import prod
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from torch import nn

from workbench.errors import (
    CheckpointError,
    CheckpointFileNotFoundError,
    NonFiniteWeightsError,
    UnsupportedDtypeError,
    WeightDtypeError,
)

CONFIG_FILE = "config.json"
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
PICKLE_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json")
BLOCK_BYTES = 64 * 2**20  # the most of a checkpoint file mapped at once while copying

_SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "U16": torch.uint16, "U32": torch.uint32, "U64": torch.uint64, "BOOL": torch.bool,
}
# What a weight may be stored as: floats the loader converts exactly (or by rounding) to the load
# dtype. Integers and float8 are quantized formats that need scales this layout does not have.
WEIGHT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_WEIGHT_DTYPE_NAMES = "float16, bfloat16, float32 or float64"


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives on disk, read from its shard's header (no data read)."""

    name: str
    file: Path
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def nbytes(self) -> int:
        return prod(self.shape) * self.dtype.itemsize


def read_config_json(path: Path) -> dict:
    """A checkpoint's config.json as a dict; invalid JSON names the file and where it breaks (the
    same CheckpointError as `read_json`, which the Qwen-Audio loader uses)."""
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path} is not valid JSON ({error.msg} at line {error.lineno}, column "
                                f"{error.colno}): fix the file, or restore it from the original checkpoint") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path} holds a JSON {type(config).__name__}, not an object of settings: restore "
                                "it from the original checkpoint")
    return config


def read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise CheckpointFileNotFoundError(f"{path} not found: the checkpoint needs its {what}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path} is not valid JSON ({error}): restore the {what} from the original checkpoint") from None


def read_config(directory: str | Path) -> dict:
    return read_json(Path(directory) / CONFIG_FILE, "model config (config.json)")


def _shard_header(file: Path, names: list[str] | None) -> dict[str, TensorInfo]:
    try:
        with safe_open(file, framework="pt") as handle:
            present = set(handle.keys())
            wanted = sorted(present) if names is None else names
            missing = [name for name in wanted if name not in present]
            if missing:
                raise CheckpointError(
                    f"{file.name} lacks {len(missing)} tensor(s) the index assigns to it, e.g. {missing[:3]}: "
                    f"the shard and {INDEX_FILE} disagree; re-download or re-save the checkpoint")
            infos = {}
            for name in wanted:
                piece = handle.get_slice(name)
                stored = piece.get_dtype()
                if stored not in _SAFETENSORS_DTYPES:
                    raise WeightDtypeError(
                        f"{name} in {file} is stored as {stored}, which the workbench cannot read: weights must "
                        f"be {_WEIGHT_DTYPE_NAMES}; re-convert the checkpoint from the original weights")
                infos[name] = TensorInfo(name, file, tuple(piece.get_shape()), _SAFETENSORS_DTYPES[stored])
            return infos
    except (OSError, SafetensorError) as error:
        raise CheckpointError(f"{file} is not a readable safetensors file ({error}{_truncation(file)}): "
                              "re-download it (or re-save it from the original weights)") from None


def _truncation(file: Path) -> str:
    """'; the file is N bytes but its header describes M' when that is why it cannot be read."""
    try:
        with open(file, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length)) if length < 2**27 else {}
        size = file.stat().st_size
    except (OSError, ValueError, struct.error):
        return ""
    ends = [entry["data_offsets"][1] for name, entry in header.items()
            if name != "__metadata__" and isinstance(entry, dict) and len(entry.get("data_offsets", ())) == 2]
    needed = 8 + length + max(ends, default=0)
    return f"; the file is {size:,} bytes but its header describes {needed:,}: it is truncated" if size < needed else ""


def tensor_index(directory: str | Path) -> dict[str, TensorInfo]:
    """Every tensor of a single-file or sharded safetensors checkpoint, by name (headers only)."""
    directory = Path(directory)
    index_path, single_path = directory / INDEX_FILE, directory / SINGLE_FILE
    if index_path.exists():
        weight_map = read_json(index_path, "shard index").get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(f"{index_path} has no 'weight_map': it should map tensor names to shard files")
        by_file: dict[str, list[str]] = {}
        for name, file in weight_map.items():
            by_file.setdefault(file, []).append(name)
        absent = sorted(file for file in by_file if not (directory / file).is_file())
        if absent:
            raise CheckpointFileNotFoundError(
                f"{index_path.name} names shard(s) {absent} that are not in {directory}: "
                "download the missing shard(s) or fix the index")
        infos: dict[str, TensorInfo] = {}
        for file, names in by_file.items():
            infos.update(_shard_header(directory / file, names))
        return infos
    if single_path.exists():
        return _shard_header(single_path, None)
    pickles = [name for name in PICKLE_FILES if (directory / name).exists()]
    if pickles:
        raise CheckpointError(
            f"{directory} holds {pickles[0]} (a pickle checkpoint), which the workbench does not load because "
            "unpickling runs arbitrary code: convert it to safetensors once, e.g. "
            "`safetensors.torch.save_file(torch.load(path, weights_only=True), 'model.safetensors')`")
    shards = sorted(p.name for p in directory.glob("*.safetensors"))
    if shards:
        raise CheckpointFileNotFoundError(
            f"{directory} has shards {shards[:3]} but no {INDEX_FILE}: restore the index file that maps "
            "tensor names to shards")
    raise CheckpointFileNotFoundError(f"{directory} has no {SINGLE_FILE} and no {INDEX_FILE}: not a safetensors checkpoint")


def copy_tensor(info: TensorInfo, destination: torch.Tensor, rows: slice | None = None) -> None:
    """Copy a tensor (or a range of its rows) from disk into `destination`, converting dtype/device.

    Large tensors go in blocks of rows of about `BLOCK_BYTES`, each through its own `safe_open`,
    so that at most one block of the file is mapped at a time (an embedding can be over a GB).
    """
    first, stop = (0, info.shape[0] if info.shape else 1) if rows is None else (rows.start, rows.stop)
    expected = (stop - first, *info.shape[1:]) if info.shape else ()
    if tuple(destination.shape) != expected:
        raise CheckpointError(f"{info.name} in {info.file.name} has shape {expected} but the model built from "
                              f"config.json expects {tuple(destination.shape)}: the config does not describe "
                              "these weights; use the config.json that came with them")
    if not info.shape:
        with safe_open(info.file, framework="pt") as handle:
            source = handle.get_tensor(info.name)
            destination.copy_(source)
            _check_finite(info, source, destination, 0)
        return
    row_bytes = max(1, info.nbytes // max(1, info.shape[0]))
    step = max(1, BLOCK_BYTES // row_bytes)
    for start in range(first, stop, step):
        end = min(stop, start + step)
        with safe_open(info.file, framework="pt") as handle:
            source = handle.get_slice(info.name)[start:end]
            block = destination[start - first:end - first]
            block.copy_(source)
            _check_finite(info, source, block, start)


def is_finite(tensor: torch.Tensor) -> bool:
    """Whether every value is finite, in one pass that allocates nothing: min and max propagate NaN
    and are ±inf when any value is (on CPU over 10x faster than `torch.isfinite(t).all()`)."""
    if tensor.numel() == 0 or not tensor.is_floating_point():
        return True
    low, high = torch.aminmax(tensor)
    return bool(torch.isfinite(low) & torch.isfinite(high))


def _check_finite(info: TensorInfo, source: torch.Tensor, block: torch.Tensor, first_row: int) -> None:
    """Refuse a block that is not finite after the copy: damaged on disk, or too large for the load dtype."""
    if is_finite(block):
        return
    where = ""
    if info.shape:
        bad_rows = (~torch.isfinite(block.reshape(block.shape[0], -1))).any(dim=1).nonzero()
        unit = "row" if len(info.shape) > 1 else "element"
        where = f" (first in {unit} {first_row + int(bad_rows[0])} of {info.shape[0]})" if len(bad_rows) else ""
    if is_finite(source):
        dtype = str(block.dtype).removeprefix("torch.")
        fix = ("load with dtype=torch.float32 or bfloat16" if block.dtype == torch.float16 else
               "no dtype the workbench computes in holds them; re-convert the checkpoint from the original weights")
        raise NonFiniteWeightsError(
            f"{info.name} in {info.file} holds values beyond ±{torch.finfo(block.dtype).max:.3g}, which overflow "
            f"to inf in {dtype}{where}: {fix}")
    raise NonFiniteWeightsError(
        f"{info.name} in {info.file} holds NaN or inf values{where}: the file is damaged (or the weights "
        "diverged before they were saved); re-download the checkpoint, or re-convert it from the original weights")


def _owner(root: nn.Module, name: str) -> tuple[nn.Module, str]:
    path, _, leaf = name.rpartition(".")
    return (root.get_submodule(path) if path else root), leaf


def placeholder(root: nn.Module, name: str) -> torch.Tensor:
    """The (meta) parameter or buffer `name` of `root`, to read its shape from."""
    module, leaf = _owner(root, name)
    if leaf in module._parameters:
        return module._parameters[leaf]
    if leaf in module._buffers:
        return module._buffers[leaf]
    raise KeyError(f"{type(root).__name__} has no parameter or buffer {name!r}")


def set_tensor(root: nn.Module, name: str, value: torch.Tensor) -> None:
    """Put `value` in place of the parameter or buffer `name` (no copy).

    Parameters are frozen (`requires_grad=False`): the workbench computes gradients with respect to
    inputs, and a frozen 8 B model does not allocate 8 B gradients by accident.
    """
    module, leaf = _owner(root, name)
    if leaf in module._parameters:
        module._parameters[leaf] = nn.Parameter(value, requires_grad=False)
    elif leaf in module._buffers:
        module._buffers[leaf] = value
    else:
        raise KeyError(f"{type(root).__name__} has no parameter or buffer {name!r}")


def unfilled(root: nn.Module) -> list[str]:
    """Parameters and buffers still on the meta device (not found in the checkpoint)."""
    tensors = [*root.named_parameters(), *root.named_buffers()]
    return [name for name, tensor in tensors if tensor.is_meta]


Targets = Callable[[str], list[tuple[str, slice | None]]]


def load_into(root: nn.Module, index: dict[str, TensorInfo], targets: Targets, *, dtype: torch.dtype,
              device: torch.device | Callable[[str], torch.device],
              ignored: Callable[[str], bool] = lambda name: False) -> int:
    """Fill a `meta`-built `root` from the checkpoint; returns the bytes allocated.

    `targets(name)` says where checkpoint tensor `name` goes: a list of (parameter or buffer name
    in `root`, rows of the source to take or None), empty for a tensor the layout does not know.
    Each destination is allocated once, in `dtype` on `device` (or on `device(target)`, for a
    device map), and filled straight from disk.
    """
    device_of = device if callable(device) else (lambda target: device)
    unknown = [name for name in index if not ignored(name) and not targets(name)]
    if unknown:
        raise CheckpointError(f"the checkpoint has {len(unknown)} tensor(s) this layout does not know, e.g. "
                              f"{unknown[:3]}: it is not the layout config.json announces")
    wrong = [info for name, info in index.items() if not ignored(name) and info.dtype not in WEIGHT_DTYPES]
    if wrong:
        first = wrong[0]
        others = f" ({len(wrong)} tensors in all, also {[w.name for w in wrong[1:3]]})" if len(wrong) > 1 else ""
        raise WeightDtypeError(
            f"{first.name} in {first.file} is stored as {str(first.dtype).removeprefix('torch.')}{others}; weights "
            f"must be {_WEIGHT_DTYPE_NAMES} (integer and float8 tensors are quantized formats this layout does not "
            "have): the file was saved wrongly or damaged; re-convert the checkpoint from the original weights")
    allocated = 0
    for name, info in index.items():
        if ignored(name):
            continue
        for target, rows in targets(name):
            destination = torch.empty(placeholder(root, target).shape, dtype=dtype, device=device_of(target))
            copy_tensor(info, destination, rows)
            set_tensor(root, target, destination)
            allocated += destination.numel() * destination.element_size()
    missing = unfilled(root)
    if missing:
        raise CheckpointError(f"{len(missing)} model tensor(s) were not in the checkpoint, e.g. {missing[:3]}: "
                              "the checkpoint is incomplete or was saved for another config")
    return allocated


# --- where the weights go: device and dtype ---------------------------------------------------

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
           "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
           "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None or device == "auto":
        return torch.device("cuda" if device == "auto" and torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device={device!r} is not a device ({error}): use 'cpu', 'cuda', 'cuda:1' or 'auto'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r} but this torch has no CUDA device: use device='cpu'")
    return device


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """None → float32 on CPU, bfloat16 on a GPU that has it (else float16)."""
    if dtype is None:
        if device.type == "cpu":
            return torch.float32
        return torch.bfloat16 if device.type != "cuda" or torch.cuda.is_bf16_supported() else torch.float16
    resolved = _DTYPES.get(dtype) if isinstance(dtype, str) else dtype
    if resolved not in (torch.float32, torch.float16, torch.bfloat16):
        raise UnsupportedDtypeError(f"dtype={dtype!r}: choose float32, bfloat16 or float16")
    return resolved


def check_dtype_runs(dtype: torch.dtype, device: torch.device) -> None:
    """Run each kind of op the model uses once, tiny, so an unsupported dtype fails here, clearly."""
    try:
        x = torch.ones(1, 4, 8, dtype=dtype, device=device)
        x = F.gelu(F.conv1d(x, torch.ones(4, 4, 3, dtype=dtype, device=device), padding=1))
        x = F.layer_norm(F.linear(x, torch.ones(8, 8, dtype=dtype, device=device)), (8,))
        F.scaled_dot_product_attention(x[None], x[None], x[None]).softmax(-1).sum().item()
    except RuntimeError as error:
        raise UnsupportedDtypeError(
            f"{str(dtype).removeprefix('torch.')} does not run on {device} ({error}): use dtype=torch.float32, "
            "or bfloat16 (on CPU float32 or bfloat16; float16 needs a GPU)") from None
