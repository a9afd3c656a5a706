"""Benchmark readers: a dataset folder, as distributed, → a sorted list of `Item`s.

    from workbench.evaluation.readers import read_dataset
    items = read_dataset("librispeech", Path("/data/LibriSpeech/dev-clean"))
    items = read_dataset("covost2", Path("/data/cv/en"), src="en", tgt="de", split="test")

Nothing is downloaded: the user points at a folder. Every reader returns the items sorted by id,
checks the layout strictly (`DatasetLayoutError` names the file and the layout expected) and
never drops an item silently. The readers live by modality in `readers_speech.py` and
`readers_sound.py`; this module holds the registry and the official eval_audio JSONL reader.

| name | reader | task |
|---|---|---|
| librispeech, aishell1, aishell2 | read_librispeech, read_aishell1, read_aishell2 | ASR |
| covost2 | read_covost2(root, src, tgt, split) | S2TT |
| srwt | read_word_times (MFA TextGrids or a JSON) | ASR with word timestamps |
| clotho | read_clotho | AAC |
| clothoaqa | read_clotho_aqa | AQA |
| cochlscene, tut2017 | read_cochlscene, read_tut2017 | ASC |
| meld | read_meld | SER |
| vocalsound | read_vocalsound | VSC |
| nsynth | read_nsynth | MNA |
| official_jsonl | read_official_jsonl(path, audio_root) | any: the official eval_audio files |
"""
from __future__ import annotations

import difflib
import json
from collections import Counter
from pathlib import Path
from typing import Callable

from .items import Item
from .readers_base import DatasetLayoutError, ExcludedItemsWarning, by_id, keep_present, layout_error, read_lines
from .readers_sound import read_clotho, read_clotho_aqa, read_cochlscene, read_meld, read_nsynth, read_tut2017, read_vocalsound
from .readers_speech import read_aishell1, read_aishell2, read_covost2, read_librispeech, read_word_times

# ---------------------------------------------------------------------------------------------
# The official eval_audio JSONL. Keys as the official scripts read them (QwenLM/Qwen-Audio,
# eval_audio/evaluate_*.py): every script reads "audio", "source" and "gt"; evaluate_aqa.py also
# "question"; evaluate_st.py takes the languages from the source name (source.split("_")[-3] and
# [-2]); evaluate_asr.py and evaluate_srwt.py take the language from the dataset, not the row.
OFFICIAL_LAYOUT = ("a JSON-lines file as the official eval_audio scripts read it: one object per line with "
                   "'audio' (a path; relative paths are resolved against audio_root), 'gt' (the reference), "
                   "'source' (the subset; CoVoST 2's ends '…_{src}_{tgt}_{split}') and, for ClothoAQA, 'question'")
OFFICIAL_KEYS = ("audio", "gt", "source")


def read_official_jsonl(path: Path, audio_root: Path | None = None, *, on_missing: str = "error") -> list[Item]:
    """The rows of an official eval_audio JSONL, one Item per row (the official recipe scores rows:
    ClothoAQA's questions repeat once per accepted answer); reference = "gt" as written.

    id = the "audio" value, with "#N" (N the row's rank among the rows of that audio, 1-based)
    where an audio has several rows. audio_root defaults to the JSONL's folder. meta holds
    "source", "line", every other key of the row, and for CoVoST 2 sources "src"/"tgt"/"lang"."""
    path = Path(path)
    root = Path(audio_root) if audio_root is not None else path.parent
    rows = []
    for number, line in read_lines(path, OFFICIAL_LAYOUT):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise layout_error(path, f"line {number} is not JSON ({error})", OFFICIAL_LAYOUT) from None
        if not isinstance(row, dict) or (absent := [k for k in OFFICIAL_KEYS if k not in row]):
            raise layout_error(path, f"line {number} lacks {absent if isinstance(row, dict) else 'an object'}",
                               OFFICIAL_LAYOUT)
        rows.append((number, row))
    counts = Counter(str(row["audio"]) for _, row in rows)
    width = len(str(max(counts.values(), default=1)))
    rank: Counter[str] = Counter()
    items = []
    for number, row in rows:
        audio = str(row["audio"])
        rank[audio] += 1
        item_id = audio if counts[audio] == 1 else f"{audio}#{rank[audio]:0{width}d}"
        meta = {k: v for k, v in row.items() if k not in ("audio", "gt", "question")} | {"line": number}
        parts = str(row["source"]).split("_")
        if str(row["source"]).startswith("covost") and len(parts) >= 4:
            meta |= {"src": parts[-3], "tgt": parts[-2], "lang": parts[-3]}
        items.append(Item(item_id, root / audio, row["gt"], question=row.get("question"), meta=meta))
    return by_id(keep_present(items, path, on_missing))


# ---------------------------------------------------------------------------------------------
READERS: dict[str, Callable[..., list[Item]]] = {
    "librispeech": read_librispeech,
    "aishell1": read_aishell1,
    "aishell2": read_aishell2,
    "covost2": read_covost2,
    "srwt": read_word_times,
    "clotho": read_clotho,
    "clothoaqa": read_clotho_aqa,
    "cochlscene": read_cochlscene,
    "tut2017": read_tut2017,
    "meld": read_meld,
    "vocalsound": read_vocalsound,
    "nsynth": read_nsynth,
    "official_jsonl": read_official_jsonl,
}


def read_dataset(name: str, root: Path, **kwargs) -> list[Item]:
    """The items of dataset `name` (a key of READERS) read from `root`; kwargs go to its reader
    (split, src/tgt, on_missing…)."""
    if name not in READERS:
        close = difflib.get_close_matches(name, READERS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"no reader for dataset {name!r}{hint}; datasets: {', '.join(READERS)}")
    return READERS[name](Path(root), **kwargs)


__all__ = ["READERS", "DatasetLayoutError", "ExcludedItemsWarning", "read_dataset", "read_official_jsonl",
           "read_librispeech", "read_aishell1", "read_aishell2", "read_covost2", "read_word_times", "read_clotho",
           "read_clotho_aqa", "read_cochlscene", "read_tut2017", "read_meld", "read_vocalsound", "read_nsynth"]
