"""The one place that knows how a transformers model takes its KV cache.

transformers renamed the `past_key_values` argument to `cache` during 5.x (keeping the old name
as a deprecated alias for a while); every cached call in the workbench passes `**cache_kwarg(module,
cache)`, which names it as this version of the module's `forward` does.
"""
from __future__ import annotations

import functools
import inspect
from typing import Any

from torch import nn


@functools.cache
def _cache_argument(forward: Any) -> str:
    return "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"


def cache_kwarg(module: nn.Module, cache: Any) -> dict[str, Any]:
    """`{name: cache}` for `module(...)`, the name being the one its `forward` takes."""
    return {_cache_argument(type(module).forward): cache}
