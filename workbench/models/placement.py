"""Where a Qwen-Audio model's parts live: one device, or a device map that spreads them over GPUs.

A full-size Qwen-Audio (8.4 B parameters, 16.8 GB in bfloat16) fits one 80 GB card, but not two
24 GB ones. A device map splits the network into *units* that are never cut (the audio encoder,
the token embedding, each LLM decoder layer, the final norm, the LM head), gives each unit a
device, and the loader allocates each weight straight on its unit's device. During the forward
pass a pre-hook on every unit moves the tensors it receives onto its device: the hidden states
hop from GPU to GPU between layers and nothing else changes (rotary phases, masks and the KV
cache follow the layer that uses them).

    load("path/to/Qwen-Audio", device_map="auto")                 # all visible GPUs, balanced
    load(..., device_map={"encoder": "cuda:0", "llm": "cuda:1"})   # prefixes of unit names

A dict maps name prefixes to devices; the longest prefix that matches a unit wins, so
`{"": "cuda:0", "llm.model.layers.20": "cuda:1"}` is valid. `describe()` lists the result.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from workbench.errors import DeviceMapError

__all__ = ["DeviceMapError", "auto_device_map", "dispatch", "plan_units", "resolve_device_map", "unit_of"]


def plan_units(network: nn.Module) -> dict[str, int]:
    """The units of a Qwen-Audio network in forward order, with their parameter bytes (works on meta)."""
    llm = network["llm"]
    units = {"encoder": network["encoder"], "llm.model.embed_tokens": llm.model.embed_tokens,
             "llm.model.rotary_emb": llm.model.rotary_emb}
    units |= {f"llm.model.layers.{i}": layer for i, layer in enumerate(llm.model.layers)}
    units |= {"llm.model.norm": llm.model.norm, "llm.lm_head": llm.lm_head}
    return {name: sum(p.numel() * p.element_size() for p in module.parameters()) for name, module in units.items()}


def auto_device_map(units: Mapping[str, int], devices: list[torch.device]) -> dict[str, torch.device]:
    """Contiguous runs of units with about equal bytes on each device, in forward order.

    Contiguous, so the hidden states cross each device boundary once per forward pass; the
    encoder and the embedding land on the first device, the LM head on the last."""
    if not devices:
        raise DeviceMapError("device_map='auto' found no device: pass device_map=None and device='cpu'")
    total = sum(units.values()) or 1
    placed, done = {}, 0
    for name, size in units.items():
        # The device whose share of the total holds the middle of this unit.
        index = min(int((done + size / 2) / total * len(devices)), len(devices) - 1)
        placed[name] = devices[index]
        done += size
    return placed


def resolve_device_map(device_map: str | Mapping[str, Any], units: Mapping[str, int]) -> dict[str, torch.device]:
    """A device per unit from `device_map` ('auto' or {prefix: device}); every unit must be placed."""
    if isinstance(device_map, str):
        if device_map != "auto":
            raise DeviceMapError(f"device_map={device_map!r}: use 'auto' or a dict {{name prefix: device}}, "
                                 f"e.g. {{'encoder': 'cuda:0', 'llm': 'cuda:1'}}")
        count = torch.cuda.device_count()
        devices = [torch.device(f"cuda:{i}") for i in range(count)] or [torch.device("cpu")]
        return auto_device_map(units, devices)
    if not isinstance(device_map, Mapping):
        raise DeviceMapError(f"device_map must be 'auto' or a dict of name prefix → device, not {type(device_map).__name__}")
    prefixes: dict[str, torch.device] = {}
    for prefix, device in device_map.items():
        try:
            prefixes[str(prefix)] = torch.device(device)
        except (RuntimeError, TypeError) as error:
            raise DeviceMapError(f"device_map[{prefix!r}] = {device!r} is not a device ({error}): "
                                 "use 'cpu', 'cuda:0', … or an int GPU index") from None
    placed = {}
    for name in units:
        matches = [p for p in prefixes if unit_of(name, p)]
        if not matches:
            continue
        placed[name] = prefixes[max(matches, key=len)]
    missing = [name for name in units if name not in placed]
    if missing:
        raise DeviceMapError(f"device_map places no device for {missing[:4]}{' …' if len(missing) > 4 else ''}: "
                             "add those names (or a prefix of them, '' for everything else) to the map")
    unused = [p for p in prefixes if not any(unit_of(name, p) for name in units)]
    if unused:
        raise DeviceMapError(f"device_map names {unused}, which match no part of this model; its parts are "
                             f"{list(units)[:3]} … {list(units)[-2:]}")
    for device in set(placed.values()):
        if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
            raise DeviceMapError(f"device_map uses {device}, but this machine has {torch.cuda.device_count()} "
                                 "CUDA device(s): map onto the devices that exist")
    return placed


def unit_of(name: str, prefix: str) -> bool:
    """Whether dotted `name` lies under `prefix` ('' covers everything; 'llm.model.layers.1' is not
    a prefix of 'llm.model.layers.10')."""
    return prefix == "" or name == prefix or name.startswith(prefix + ".")


def _to(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, tuple):
        return tuple(_to(v, device) for v in value)
    if isinstance(value, list):
        return [_to(v, device) for v in value]
    return value   # caches and other objects: each layer keeps its own tensors on its device


def dispatch(network: nn.Module, placement: Mapping[str, torch.device]) -> list:
    """Hook every unit so that its inputs move to its device first; returns the hook handles."""
    handles = []
    for name, device in placement.items():
        module = network.get_submodule(name)

        def move(module: nn.Module, args: tuple, kwargs: dict, device: torch.device = device) -> tuple:
            return _to(args, device), {k: _to(v, device) for k, v in kwargs.items()}

        handles.append(module.register_forward_pre_hook(move, with_kwargs=True))
    return handles
