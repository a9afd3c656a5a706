"""The nano tokenizer: a byte-level BPE learned on the corpus texts, written as a tiktoken ranks file.

`tokenizers` learns the merges (with Qwen's own split pattern as pre-tokenizer, so the pieces it
merges are the pieces tiktoken will see); the ranks file lists the 256 single bytes first (rank =
byte value), then each merge's bytes in merge order, one `base64 rank` a line — the format of
`qwen.tiktoken`, so `QwenAudioTokenizer` reads it unchanged and numbers the Qwen-Audio special
tokens after it. Tags (`<|…|>`) and audio references are cut out of the training texts: they are
special tokens, never BPE pieces.
"""
from __future__ import annotations

import base64
import re
import unicodedata
from pathlib import Path
from typing import Iterable

from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers
from tokenizers.pre_tokenizers import ByteLevel

from workbench.tokenizer import SPLIT_PATTERN, TIKTOKEN_FILE

_SPECIAL = re.compile(r"<\|[^<>|]*\|>|<audio>.*?</audio>|\[\[\[AUDIO:modality\]\]\]", re.S)


def _byte_decoder() -> dict[str, int]:
    """ByteLevel's printable stand-in character → the byte it stands for (GPT-2's bytes_to_unicode)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    stand_ins, extra = {b: chr(b) for b in printable}, 0
    for b in range(256):
        if b not in stand_ins:
            stand_ins[b] = chr(256 + extra)
            extra += 1
    return {char: b for b, char in stand_ins.items()}


def plain_texts(texts: Iterable[str]) -> list[str]:
    """The texts NFC-normalised (as the tokenizer encodes), with every tag and audio reference cut out."""
    return [piece for text in texts for piece in _SPECIAL.split(unicodedata.normalize("NFC", text)) if piece]


def train_ranks(texts: Iterable[str], n_ranks: int) -> list[bytes]:
    """`n_ranks` tokens: the 256 bytes, then the merges BPE learns on `texts`, in merge order."""
    if n_ranks <= 256:
        raise ValueError(f"n_ranks={n_ranks}: the 256 single bytes come first, so ask for more than 256")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
        ByteLevel(add_prefix_space=False, use_regex=False)])
    trainer = trainers.BpeTrainer(vocab_size=n_ranks, initial_alphabet=ByteLevel.alphabet(),
                                  show_progress=False, min_frequency=2)
    tokenizer.train_from_iterator(plain_texts(texts), trainer)
    decode = _byte_decoder()
    ranks = [bytes([b]) for b in range(256)]
    seen = set(ranks)
    for merge in tokenizer.model.get_merges() if hasattr(tokenizer.model, "get_merges") else _merges(tokenizer):
        left, right = merge if isinstance(merge, (tuple, list)) else merge.split(" ")
        token = bytes(decode[c] for c in left + right)
        if token not in seen:
            seen.add(token)
            ranks.append(token)
    return ranks[:n_ranks]


def _merges(tokenizer: Tokenizer) -> list:
    import json
    return json.loads(tokenizer.to_str())["model"]["merges"]


def write_ranks(ranks: list[bytes], directory: str | Path) -> Path:
    """Write `qwen.tiktoken` (base64 token, space, rank; one a line) into `directory`."""
    path = Path(directory) / TIKTOKEN_FILE
    path.write_bytes(b"".join(base64.b64encode(token) + b" %d\n" % rank for rank, token in enumerate(ranks)))
    return path
