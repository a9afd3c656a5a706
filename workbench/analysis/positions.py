"""Every position of the token sequence, labelled; the selectors that pick positions; and the
pairs of positions that activation patching aligns between two prompts (`aligned_positions`).

`label_positions` gives one row per position (the LLM's input, or Whisper's decoder input):
- kind: "audio" (an audio token, with its number k and its 40 ms in seconds: k·0.04 to (k+1)·0.04),
  "audio_bos" / "audio_eos" (v1: the `<audio>` / `</audio>` positions that carry the learned
  bos/eos vectors; Qwen2-Audio: `<|audio_bos|>` / `<|audio_eos|>`), "tag" (with `tag_kind` from
  tags.SPECIAL_TOKENS and, inside a run of prompt tags that parses as a TagPrompt, its `slot`),
  "chat" (`<|im_start|>`, `<|im_end|>`), "role" (the role word after `<|im_start|>`),
  "special" (`<|endoftext|>`, …) or "text";
- group: "audio" (audio, audio_bos, audio_eos), "tags" (tag, chat, role, special) or "text";
- part: "prompt" or "output" (tokens generated before the trace);
- role: the chat role of the message the position belongs to (None outside ChatML).

Selectors (for `trace(rows=…, cols=…)`): None or "all", "last", a group, a part, a list of these
(their union), an int (negative from the end), a slice, a sequence of ints, or a boolean mask.
"""
from __future__ import annotations

import math
import re
import warnings
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from workbench.audio import SECONDS_PER_TOKEN
from workbench.errors import PatchingError, TagPromptError, TraceRequestError
from workbench.models.base import ModelInputs
from workbench.tags import SLOTS, SPECIAL_TOKENS, TagPrompt

GROUPS = ("audio", "tags", "text")
PARTS = ("prompt", "output")
SELECTORS = ("all", "last", *GROUPS, *PARTS)
EXTRA_GROUPS = ("all", "answer", "last")   # groups `aligned_positions` pairs beyond GROUPS and the slots
KIND_GROUP = {"audio": "audio", "audio_bos": "audio", "audio_eos": "audio", "tag": "tags", "chat": "tags",
              "role": "tags", "special": "tags", "text": "text"}
_QWEN_KINDS = {t.text: t.kind for t in SPECIAL_TOKENS}
_TAG_LIKE = re.compile(r"<\|[^<>|]*\|>")


def select_positions(positions: pd.DataFrame, selector: Any, *, empty_ok: bool = False) -> np.ndarray:
    """Sequence positions picked by a selector (module docstring), in the order given."""
    n = len(positions)
    if selector is None:
        return np.arange(n)
    if isinstance(selector, str) or (isinstance(selector, (list, tuple)) and selector
                                     and all(isinstance(s, str) for s in selector)):
        names = [selector] if isinstance(selector, str) else list(selector)
        unknown = [s for s in names if s not in SELECTORS]
        if unknown:
            raise TraceRequestError(f"position selector {unknown[0]!r} is not one of {', '.join(SELECTORS)} "
                                    "(or give ints, a slice or a boolean mask)")
        keep = np.zeros(n, dtype=bool)
        for name in names:
            keep |= (np.ones(n, dtype=bool) if name == "all" else np.arange(n) == n - 1 if name == "last"
                     else (positions["group" if name in GROUPS else "part"] == name).to_numpy())
        if not keep.any() and not empty_ok:
            raise TraceRequestError(_picks_nothing(positions, selector, names))
        return np.flatnonzero(keep)
    if isinstance(selector, slice):
        return np.arange(n)[selector]
    array = np.asarray(selector.cpu() if isinstance(selector, torch.Tensor) else selector)
    if array.dtype == bool:
        if array.shape != (n,):
            raise TraceRequestError(f"a boolean position mask needs shape ({n},), got {array.shape}")
        return np.flatnonzero(array)
    array = np.atleast_1d(array)
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise TraceRequestError(f"position selector {selector!r}: give ints, a slice, a boolean mask or one of "
                                f"{', '.join(SELECTORS)}")
    if ((array < -n) | (array >= n)).any():
        raise TraceRequestError(f"positions {array.tolist()[:8]} are out of range for a sequence of {n}")
    return array % n


def _picks_nothing(positions: pd.DataFrame, selector: Any, names: list[str]) -> str:
    """Why a named selector picked nothing, and what picks what the caller most likely meant."""
    groups = [g for g in GROUPS if (positions["group"] == g).any()]
    message = (f"selector {selector!r} picks no position of this prompt (its positions are {' and '.join(groups)}"
               f"{'' if 'output' in set(positions['part']) else ', with no output yet'})")
    if "output" in names or "text" in names:
        message += (": to select the generated tokens (a tag prompt has no free text; the model's answer is the "
                    "text), pass generate=N with rows='output'")
    return message + "; selectors: " + ", ".join(SELECTORS)


def label_positions(model: Any, inputs: ModelInputs, n_prompt: int | None = None) -> pd.DataFrame:
    """One row per position: token, kind, group, part, audio index and token number with its time in
    seconds, the tag's kind (tags.SPECIAL_TOKENS) and prompt slot, and the chat role of its message."""
    ids = inputs.input_ids[0].tolist()
    n_prompt = len(ids) if n_prompt is None else n_prompt
    audio_at: dict[int, tuple[int, str, int | None]] = {}
    for a, span in enumerate(inputs.audios):
        # The placeholder repeats once per audio token (v1 `[[[AUDIO:modality]]]`, Qwen2-Audio
        # `<|AUDIO|>`, whatever id a smaller vocabulary gives it); the middle of a span is always one.
        placeholder, k = ids[(span.start + span.stop - 1) // 2], 0
        for p in range(span.start, span.stop):
            if ids[p] == placeholder:
                audio_at[p], k = (a, "audio", k), k + 1
            else:   # v1: <audio> / </audio> carry the learned bos / eos; Qwen2-Audio: <|audio_bos|> / <|audio_eos|>
                audio_at[p] = (a, "audio_bos" if p == span.start else "audio_eos", None)
    rows, role = [], None
    for p, token_id in enumerate(ids):
        text = decode_ids(model, [token_id])
        row = {"position": p, "token_id": token_id, "token": text, "part": "prompt" if p < n_prompt else "output",
               "audio": pd.NA, "audio_token": pd.NA, "start_s": math.nan, "end_s": math.nan, "tag_kind": None,
               "slot": None}
        if p in audio_at:
            row["audio"], row["kind"], k = audio_at[p]
            if k is not None:
                row["audio_token"], row["start_s"], row["end_s"] = k, k * SECONDS_PER_TOKEN, (k + 1) * SECONDS_PER_TOKEN
        elif rows and rows[-1]["token"] == "<|im_start|>":
            row["kind"], role = "role", text.strip()
        else:
            row["kind"], row["tag_kind"] = _kind_of(text)
        if text == "<|im_start|>":
            role = None
        row["role"] = role
        if text == "<|im_end|>":
            role = None
        rows.append(row)
    for p in range(len(rows) - 1):   # <|im_start|> opens the message of the role word after it
        if rows[p]["token"] == "<|im_start|>" and rows[p + 1]["kind"] == "role":
            rows[p]["role"] = rows[p + 1]["role"]
    table = pd.DataFrame(rows).astype({"tag_kind": object, "slot": object, "role": object})
    table["group"] = table["kind"].map(KIND_GROUP)
    table["label"] = [f"audio {r.audio}·{r.audio_token} ({r.start_s:.2f} s)" if r.kind == "audio" else r.token
                      for r in table.itertuples()]
    _label_slots(table, n_prompt)
    table = table.astype({"audio": "Int64", "audio_token": "Int64"})
    for column in ("tag_kind", "slot", "role"):   # missing text is None, not NaN
        table[column] = table[column].where(table[column].notna(), None)
    return table[["position", "token_id", "token", "label", "kind", "group", "part", "audio", "audio_token",
                  "start_s", "end_s", "tag_kind", "slot", "role"]]


def decode_ids(model: Any, ids: Sequence[int]) -> str:
    """Text of `ids`, tags kept; ids the tokenizer has no text for (a random model's embedding
    padding) are shown as `<id N>`, each on its own, the others decoded as usual."""
    try:
        return model.decode(list(ids))
    except (ValueError, KeyError, IndexError, TypeError):
        return "".join(decode_ids(model, [i]) if len(ids) > 1 else f"<id {i}>" for i in ids)


def _kind_of(text: str) -> tuple[str, str | None]:
    qwen = _QWEN_KINDS.get(text)
    if qwen == "chat":
        return "chat", None
    if qwen in ("special", "extra", "audio"):
        return "special", None
    if qwen is not None:
        return "tag", qwen
    if _TAG_LIKE.fullmatch(text):   # another family's special token (Whisper's <|nospeech|>, …)
        return "tag", "other"
    return "text", None


def _label_slots(table: pd.DataFrame, n_prompt: int) -> None:
    """Name the TagPrompt slot of each tag in every run of prompt tags that parses as one."""
    kinds, tokens = table["kind"].tolist(), table["token"].tolist()
    p = 0
    while p < n_prompt:
        if kinds[p] != "tag":
            p += 1
            continue
        end = p
        while end < n_prompt and kinds[end] == "tag":
            end += 1
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                slots = TagPrompt.parse("".join(tokens[p:end])).slots()
        except TagPromptError:
            slots = ()
        if "".join(text for _, text in slots) != "".join(tokens[p:end]):
            slots = ()
        offsets = np.cumsum([0] + [len(t) for t in tokens[p:end]])
        start = 0
        for slot, text in slots:    # slots render back to the run's exact text, in order
            for q in range(p, end):
                if start <= offsets[q - p] < start + len(text):
                    table.at[q, "slot"] = slot
            start += len(text)
        p = end


# ---------------------------------------------------------------------------------------------
# Pairs of positions in two prompts (activation patching)


def aligned_positions(source: pd.DataFrame, target: pd.DataFrame, group: str) -> np.ndarray:
    """(n, 2) array of (source position, target position) pairs for `group`, from two prompts'
    `label_positions` tables (activation patching: which source position patches which target
    position, `workbench.analysis.patching`). The tables may carry a scored continuation (part
    "output"), which counts as text.

    "audio": the k-th audio position of each (the same clip in both, checked); "tags": slot by slot,
    aligned from the end within a slot; "text" / "answer": aligned from the end; a slot name: that
    slot's tokens; "last": the prompt's last position; "all": audio + tags + text."""
    if group == "all":
        return np.concatenate([aligned_positions(source, target, g) for g in GROUPS])
    if group == "last":
        return np.array([[_prompt_end(source) - 1, _prompt_end(target) - 1]])
    if group == "audio":
        a, b = _members(source, "audio"), _members(target, "audio")
        if len(a) != len(b):
            raise PatchingError(f"the source has {len(a)} audio positions and the target {len(b)}: patching needs "
                                "the same clip in both prompts")
        return np.stack([a, b], axis=1).reshape(-1, 2)
    if group == "tags" or group in SLOTS:
        pairs = []
        for slot in dict.fromkeys(_slots(source, group) + _slots(target, group)):
            pairs.append(_from_end(_members(source, "tags", slot), _members(target, "tags", slot)))
        return np.concatenate(pairs) if pairs else np.zeros((0, 2), dtype=int)
    if group in ("text", "answer"):
        return _from_end(_members(source, group), _members(target, group))
    raise PatchingError(f"position group {group!r}: choose one of {', '.join((*GROUPS, *EXTRA_GROUPS, *SLOTS))}")


def _prompt_end(table: pd.DataFrame) -> int:
    return int((table["part"] == "prompt").sum())


def _members(table: pd.DataFrame, group: str, slot: Any = "any") -> np.ndarray:
    output = (table["part"] == "output").to_numpy()
    if group == "answer":
        keep = output
    elif group == "text":
        keep = output | (table["group"] == "text").to_numpy()
    else:
        keep = ~output & (table["group"] == group).to_numpy()
    if slot != "any":
        keep &= np.array([s == slot for s in table["slot"]])
    return np.flatnonzero(keep)


def _slots(table: pd.DataFrame, group: str) -> list[Any]:
    present = list(dict.fromkeys(table["slot"][_members(table, "tags")]))
    return present if group == "tags" else [group] if group in present else []


def _from_end(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    n = min(len(a), len(b))
    return np.stack([a[len(a) - n:], b[len(b) - n:]], axis=1).reshape(-1, 2)
