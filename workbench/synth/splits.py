"""Train / validation / test by content, not by item.

Every piece of content has a key: a sentence's English text (shared by all its languages and by
every task that speaks it), a mixture's caption (shared by AAC and AQA), a scene layout, a vocal
recipe, a note's program and pitch. A key's split is a fixed hash of the key — independent of the
seed — so a test sentence is unseen in training in every language and task, and the test set of
one seed is unseen by a model trained on the corpus of any other seed.
"""
from __future__ import annotations

import hashlib
from typing import Callable, TypeVar

import numpy as np

SPLITS = ("train", "validation", "test")
_BOUNDS = (0.8, 0.9)  # the hash's share: 80 % train, 10 % validation, 10 % test of all content

T = TypeVar("T")


def split_of(key: str) -> str:
    """The split a content key belongs to."""
    fraction = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2 ** 64
    return SPLITS[sum(fraction >= bound for bound in _BOUNDS)]


def draw(rng: np.random.Generator, split: str, sample: Callable[[np.random.Generator], T],
         key: Callable[[T], str], max_tries: int = 10_000) -> T:
    """Sample content until its key belongs to `split` (rejection sampling, deterministic in rng)."""
    if split not in SPLITS:
        raise ValueError(f"split {split!r} is not one of {', '.join(SPLITS)}")
    for _ in range(max_tries):
        content = sample(rng)
        if split_of(key(content)) == split:
            return content
    raise RuntimeError(f"no content of the {split} split in {max_tries} draws: the sampler's content "
                       "space is too small to be split by hash; enlarge it")
