"""Readers for the speech benchmarks, each from the layout its dataset is distributed in:
LibriSpeech, Aishell-1, Aishell-2 (ASR), CoVoST 2 (S2TT) and word-timestamp alignments (SRWT).

Layouts were checked against the datasets' own tooling: Kaldi's aishell and aishell2 recipes
(`wav/{split}/SPEAKER/*.wav` + `transcript/aishell_transcript_v0.8.txt`; `wav.scp` and
`trans.txt` tab-separated with paths relative to the folder), and CoVoST's
`get_covost_splits.py` (TSVs written by pandas, tab-separated, quoting off, backslash escapes,
columns path, sentence, translation, client_id).
"""
from __future__ import annotations

import warnings
from pathlib import Path

from .items import Item
from .readers_base import (
    AUDIO_SUFFIXES,
    ExcludedItemsWarning,
    by_id,
    check_policy,
    check_unique,
    find_child,
    keep_present,
    layout_error,
    read_json,
    read_lines,
    read_table,
    require_dir,
    shown,
)

# ---------------------------------------------------------------------------------------------
LIBRISPEECH_LAYOUT = ("a LibriSpeech split folder as distributed, e.g. LibriSpeech/dev-clean/, holding "
                      "SPEAKER/CHAPTER/SPEAKER-CHAPTER-UTT.flac and SPEAKER/CHAPTER/SPEAKER-CHAPTER.trans.txt "
                      "(one line 'SPEAKER-CHAPTER-UTT TRANSCRIPT' per flac); or LibriSpeech/ itself with "
                      "split='dev-clean'")


def read_librispeech(root: Path, split: str | None = None) -> list[Item]:
    """Every utterance of a LibriSpeech split; reference = the transcript as in the file (uppercase)."""
    # `root` may be the split folder itself (what `--data dev-clean/` gives) or LibriSpeech/ above it.
    folder = Path(root) / split if split and Path(root).name != split else Path(root)
    require_dir(folder, LIBRISPEECH_LAYOUT)
    transcripts = sorted(folder.glob("*/*/*.trans.txt"))
    if not transcripts:
        splits = sorted(p.name for p in folder.iterdir() if p.is_dir() and any(p.glob("*/*/*.trans.txt")))
        hint = f" (this looks like LibriSpeech/ itself: pass split= one of {', '.join(splits)})" if splits else ""
        raise layout_error(folder, f"no SPEAKER/CHAPTER/*.trans.txt files{hint}", LIBRISPEECH_LAYOUT)
    untranscribed = sorted({p.parent for p in folder.glob("*/*/*.flac")} - {p.parent for p in transcripts})
    if untranscribed:
        raise layout_error(untranscribed[0], "flac files without a SPEAKER-CHAPTER.trans.txt beside them "
                           f"(chapters: {shown([f'{d.parent.name}/{d.name}' for d in untranscribed])})",
                           LIBRISPEECH_LAYOUT)
    items = []
    for path in transcripts:
        chapter_dir = path.parent
        speaker, chapter = chapter_dir.parent.name, chapter_dir.name
        prefix = f"{speaker}-{chapter}"
        if path.name != f"{prefix}.trans.txt":
            raise layout_error(path, f"a transcript in {speaker}/{chapter}/ must be named {prefix}.trans.txt",
                               LIBRISPEECH_LAYOUT)
        texts: dict[str, str] = {}
        for number, line in read_lines(path, LIBRISPEECH_LAYOUT):
            utt, _, text = line.partition(" ")
            if not utt.startswith(prefix + "-") or not text.strip() or utt in texts:
                raise layout_error(path, f"line {number} is not 'UTT-ID TRANSCRIPT' with a new id starting "
                                   f"{prefix}-: {line!r}", LIBRISPEECH_LAYOUT)
            texts[utt] = text.strip()
        flacs = {p.stem for p in chapter_dir.glob("*.flac")}
        if no_audio := sorted(set(texts) - flacs):
            raise layout_error(path, f"lines without a flac in {chapter_dir}: {shown(no_audio)}", LIBRISPEECH_LAYOUT)
        if no_text := sorted(flacs - set(texts)):
            raise layout_error(chapter_dir, f"flac files without a line in {path.name}: {shown(no_text)}",
                               LIBRISPEECH_LAYOUT)
        items += [Item(utt, chapter_dir / f"{utt}.flac", text,
                       meta={"dataset": "librispeech", "split": folder.name, "lang": "en", "speaker": speaker,
                             "chapter": chapter}) for utt, text in texts.items()]
    return by_id(items)


# ---------------------------------------------------------------------------------------------
AISHELL1_LAYOUT = ("data_aishell/ (or the folder holding it) as distributed, with wav/{train,dev,test}/"
                   "SPEAKER/BAC009SPEAKERWNNNN.wav (the per-speaker .tar.gz archives in wav/ extracted) and "
                   "transcript/aishell_transcript_v0.8.txt (lines 'ID word word …')")
AISHELL1_TRANSCRIPT = "transcript/aishell_transcript_v0.8.txt"


def read_aishell1(root: Path, split: str = "test", *, on_missing: str = "error") -> list[Item]:
    """The utterances of an Aishell-1 split that have a transcript; reference = the transcript
    with its word-separating spaces removed (Chinese characters).

    The official test set is "the utterances with a transcript": the corpus ships some wavs that
    the transcript file lacks, and the Kaldi recipe filters them out. So does this reader, with an
    `ExcludedItemsWarning` that counts them. A transcript line of a speaker of this split whose
    wav is absent means a partial extraction: an error (on_missing="warn": left out, counted)."""
    check_policy(on_missing)
    base = Path(root)
    if not (base / "wav").is_dir() and (base / "data_aishell").is_dir():
        base = base / "data_aishell"
    transcript_path = base / AISHELL1_TRANSCRIPT
    texts: dict[str, str] = {}
    for number, line in read_lines(transcript_path, AISHELL1_LAYOUT):
        parts = line.split()
        if len(parts) < 2 or parts[0] in texts:
            raise layout_error(transcript_path, f"line {number} is not 'ID word …' with a new id: {line!r}",
                               AISHELL1_LAYOUT)
        texts[parts[0]] = "".join(parts[1:])
    wav_dir = base / "wav" / split
    if not wav_dir.is_dir():
        archives = sorted(p.name for p in (base / "wav").glob("*.tar.gz")) if (base / "wav").is_dir() else []
        hint = f" (wav/ holds archives {shown(archives)}: extract each one there)" if archives else ""
        raise layout_error(wav_dir, f"folder not found{hint}", AISHELL1_LAYOUT)
    wavs = {p.stem: p for p in sorted(wav_dir.glob("*/*.wav"))}
    if not wavs:
        raise layout_error(wav_dir, "no SPEAKER/*.wav files", AISHELL1_LAYOUT)
    if untranscribed := sorted(set(wavs) - set(texts)):
        warnings.warn(f"{len(untranscribed)} of {len(wavs)} wavs in {wav_dir} have no line in {transcript_path} "
                      f"and are left out, as in the official recipe: {shown(untranscribed)}",
                      ExcludedItemsWarning, stacklevel=2)
    speakers = {p.parent.name for p in wavs.values()}
    ids = [i for i in texts if i in wavs or i[6:11] in speakers]   # BAC009 S0764 W0121: the speaker
    items = [Item(i, wavs.get(i, wav_dir / i[6:11] / f"{i}.wav"), texts[i],
                  meta={"dataset": "aishell1", "split": split, "lang": "zh", "speaker": i[6:11]}) for i in ids]
    return by_id(keep_present(items, transcript_path, on_missing))


# ---------------------------------------------------------------------------------------------
AISHELL2_LAYOUT = ("an AISHELL-2 evaluation folder as distributed, e.g. iOS/test/, holding wav.scp "
                   "(lines 'ID<TAB>wav/SPEAKER/ID.wav', relative to the folder) and trans.txt "
                   "(lines 'ID<TAB>TRANSCRIPT'); or a folder above it with channel= (iOS, Android, Mic) "
                   "and split= (dev, test)")


def read_aishell2(root: Path, channel: str | None = None, split: str = "test", *,
                  on_missing: str = "error") -> list[Item]:
    """One AISHELL-2 evaluation set; reference = the transcript as in trans.txt. wav.scp and
    trans.txt must list the same ids."""
    folder = Path(root)
    if channel is not None and not (folder / "wav.scp").exists():
        folder = find_child(find_child(folder, channel, AISHELL2_LAYOUT), split, AISHELL2_LAYOUT)
    scp, trans = folder / "wav.scp", folder / "trans.txt"
    paths, texts = _two_columns(scp), _two_columns(trans)
    if no_text := sorted(set(paths) - set(texts)):
        raise layout_error(scp, f"ids without a line in {trans}: {shown(no_text)}", AISHELL2_LAYOUT)
    if no_audio := sorted(set(texts) - set(paths)):
        raise layout_error(trans, f"ids without a line in {scp}: {shown(no_audio)}", AISHELL2_LAYOUT)
    meta = {"dataset": "aishell2", "split": split if channel else folder.name, "lang": "zh",
            "channel": channel or folder.parent.name}
    items = [Item(i, folder / paths[i], texts[i], meta=meta | {"speaker": Path(paths[i]).parent.name})
             for i in paths]
    return by_id(keep_present(items, scp, on_missing))


def _two_columns(path: Path) -> dict[str, str]:
    """'ID<whitespace>VALUE' lines (Kaldi style) → {ID: VALUE}."""
    rows: dict[str, str] = {}
    for number, line in read_lines(path, AISHELL2_LAYOUT):
        key, _, value = line.replace("\t", " ", 1).partition(" ")
        if not value.strip() or key in rows:
            raise layout_error(path, f"line {number} is not 'ID<TAB>VALUE' with a new id: {line!r}", AISHELL2_LAYOUT)
        rows[key] = value.strip()
    return rows


# ---------------------------------------------------------------------------------------------
COVOST2_LAYOUT = ("a Common Voice language folder holding clips/*.mp3 and, beside clips/, CoVoST 2's "
                  "covost_v2.{src}_{tgt}.{split}.tsv as get_covost_splits.py writes it (tab-separated, "
                  "header path, sentence, translation, client_id); split ∈ train, dev, test")
COVOST2_COLUMNS = ("path", "sentence", "translation", "client_id")
# Common Voice's codes where they differ from Qwen-Audio's language tags.
_CV_CODES = {"zh": "zh-CN", "sv": "sv-SE"}


def read_covost2(root: Path, src: str, tgt: str, split: str = "test", *, clips: Path | None = None,
                 on_missing: str = "error") -> list[Item]:
    """One CoVoST 2 direction; reference = the translation. `src`/`tgt` are Common Voice codes or
    Qwen-Audio tags ("zh" finds the "zh-CN" files); meta holds the tags, the codes, the source sentence."""
    root = Path(root)
    codes = [(src, tgt), (_CV_CODES.get(src, src), _CV_CODES.get(tgt, tgt))]
    names = [f"covost_v2.{s}_{t}.{split}.tsv" for s, t in dict.fromkeys(codes)]
    tsv = next((root / n for n in names if (root / n).is_file()), root / names[-1])
    if not tsv.is_file():
        present = sorted(p.name for p in root.glob("covost_v2.*.tsv")) if root.is_dir() else []
        raise layout_error(tsv, f"file not found (CoVoST TSVs here: {shown(present) or 'none'})", COVOST2_LAYOUT)
    clip_dir = require_dir(Path(clips) if clips else root / "clips", COVOST2_LAYOUT)
    src_code, tgt_code = tsv.name.split(".")[1].split("_")
    meta = {"dataset": "covost2", "split": split, "src": _tag(src_code), "tgt": _tag(tgt_code),
            "lang": _tag(src_code), "src_code": src_code, "tgt_code": tgt_code}
    items = [Item(Path(row["path"]).stem, clip_dir / row["path"], row["translation"],
                  meta=meta | {"sentence": row["sentence"], "client_id": row["client_id"]})
             for _, row in read_table(tsv, COVOST2_COLUMNS, COVOST2_LAYOUT, delimiter="\t", plain=True)]
    check_unique((i.id for i in items), tsv, COVOST2_LAYOUT)
    return by_id(keep_present(items, tsv, on_missing))


def _tag(code: str) -> str:
    """Common Voice code → Qwen-Audio language tag: "zh-CN" → "zh"."""
    return code.split("-")[0].lower()


# ---------------------------------------------------------------------------------------------
WORD_TIMES_LAYOUT = ("a folder of audio files (wav, flac, …; sub-folders allowed) and either one Montreal "
                     "Forced Aligner TextGrid per audio (same name, .TextGrid, with a 'words' interval tier; "
                     "empty intervals are silence) in the same folder tree or in alignments=FOLDER, or "
                     "alignments=FILE.json holding {ID: [[word, start_s, end_s], …]}, ID = the audio's name "
                     "without extension")


def read_word_times(root: Path, *, alignments: Path | None = None, lang: str = "zh",
                    tier: str = "words") -> list[Item]:
    """Audio with word times; reference = [(word, start_s, end_s), …] without the silences.
    meta["text"] is the words joined (without spaces for zh)."""
    root = require_dir(Path(root), WORD_TIMES_LAYOUT)
    audio = _by_stem([p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES], root)
    if not audio:
        raise layout_error(root, "no audio files", WORD_TIMES_LAYOUT)
    source = Path(alignments) if alignments is not None else root
    if source.suffix.lower() == ".json":
        words = _json_times(source)
    else:
        grids = _by_stem(list(require_dir(source, WORD_TIMES_LAYOUT).rglob("*.TextGrid")), source)
        words = {stem: _textgrid_words(path, tier) for stem, path in grids.items()}
    if no_times := sorted(set(audio) - set(words)):
        raise layout_error(source, f"no word times for the audio files {shown(no_times)} (in {root})",
                           WORD_TIMES_LAYOUT)
    if no_audio := sorted(set(words) - set(audio)):
        raise layout_error(root, f"no audio file for the word times of {shown(no_audio)} (in {source})",
                           WORD_TIMES_LAYOUT)
    joiner = "" if lang == "zh" else " "
    return by_id(Item(stem, path, words[stem], meta={"dataset": "srwt", "lang": lang,
                                                     "text": joiner.join(w for w, _, _ in words[stem])})
                 for stem, path in audio.items())


def _by_stem(paths: list[Path], root: Path) -> dict[str, Path]:
    stems: dict[str, Path] = {}
    for path in sorted(paths):
        if path.stem in stems:
            raise layout_error(root, f"two files share the name {path.stem!r}: {stems[path.stem]} and {path}",
                               WORD_TIMES_LAYOUT)
        stems[path.stem] = path
    return stems


def _checked(words: list[tuple[str, float, float]], where: Path) -> list[tuple[str, float, float]]:
    for word, start, end in words:
        if not 0 <= start <= end:
            raise layout_error(where, f"word {word!r} has start {start} and end {end}", WORD_TIMES_LAYOUT)
    return words


def _json_times(path: Path) -> dict[str, list[tuple[str, float, float]]]:
    data = read_json(path, WORD_TIMES_LAYOUT)
    if not isinstance(data, dict):
        raise layout_error(path, "the JSON is not an object {ID: [[word, start, end], …]}", WORD_TIMES_LAYOUT)
    times = {}
    for key, entries in data.items():
        try:
            rows = [(str(word), float(start), float(end)) for word, start, end in entries]
        except (TypeError, ValueError) as error:
            raise layout_error(path, f"{key!r} is not a list of [word, start, end] ({error})",
                               WORD_TIMES_LAYOUT) from None
        times[key] = _checked([r for r in rows if r[0].strip()], path)
    return times


def _textgrid_words(path: Path, tier: str) -> list[tuple[str, float, float]]:
    try:
        from praatio import textgrid
    except ImportError as error:  # pragma: no cover - praatio is a dependency of the evaluation extra
        raise ImportError("reading TextGrids needs praatio: pip install praatio") from error
    try:
        grid = textgrid.openTextgrid(str(path), includeEmptyIntervals=False)
    except Exception as error:  # praatio raises many types on a damaged file
        raise layout_error(path, f"not a readable TextGrid ({type(error).__name__}: {error})",
                           WORD_TIMES_LAYOUT) from None
    if tier not in grid.tierNames:
        raise layout_error(path, f"no {tier!r} tier (tiers: {', '.join(grid.tierNames) or 'none'})", WORD_TIMES_LAYOUT)
    intervals = grid.getTier(tier).entries
    return _checked([(label.strip(), float(start), float(end)) for start, end, label in intervals if label.strip()],
                    path)
