"""Readers for the sound, music and paralinguistic benchmarks, each from its distributed layout:
Clotho (AAC), ClothoAQA (AQA), CochlScene and TUT2017 (ASC), MELD (SER), VocalSound (VSC),
NSynth (MNA).

Layouts checked against the datasets' own descriptions and tooling: ClothoAQA's
`clotho_aqa_{train,val,test}.csv` (file_name, QuestionText, answer, confidence) beside
`audio_files/`; CochlScene's `{Train,Val,Test}/{Class}/*.wav`; the DCASE `meta.txt` and
`evaluation_setup/fold{N}_{train,evaluate,test}.txt`; MELD.Raw's `{split}_sent_emo.csv` and its
video folders `train_splits/`, `dev_splits_complete/`, `output_repeated_splits_test/`;
VocalSound's `audio_16k/`, `datafiles/{tr,val,te}.json` and AudioSet ids; NSynth's
`examples.json` fields.
"""
from __future__ import annotations

from pathlib import Path

from .items import Item
from .readers_base import (
    AUDIO_SUFFIXES,
    by_id,
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
CLOTHO_LAYOUT = ("Clotho as distributed: clotho_captions_{split}.csv (header file_name, caption_1 … caption_5) "
                 "beside the folder {split}/ of its wav files (clotho_audio_{split}.7z extracted); "
                 "split ∈ development, validation, evaluation")
CAPTIONS = tuple(f"caption_{n}" for n in range(1, 6))


def read_clotho(root: Path, split: str = "evaluation", *, on_missing: str = "error") -> list[Item]:
    """Every clip of a Clotho split; reference = its five captions, in column order, as written."""
    root = Path(root)
    table = root / f"clotho_captions_{split}.csv"
    rows = read_table(table, ("file_name", *CAPTIONS), CLOTHO_LAYOUT)
    audio_dir = require_dir(root / split, CLOTHO_LAYOUT)
    items = [Item(row["file_name"], audio_dir / row["file_name"], [row[c] for c in CAPTIONS],
                  meta={"dataset": "clotho", "split": split}) for _, row in rows]
    check_unique((i.id for i in items), table, CLOTHO_LAYOUT)
    # The audio folder holds exactly the split's clips: a clip without captions is a damaged copy.
    wavs = {p.name for p in audio_dir.iterdir() if p.suffix.lower() == ".wav"}
    if uncaptioned := sorted(wavs - {i.id for i in items}):
        raise layout_error(audio_dir, f"wav files without a row in {table}: {shown(uncaptioned)}", CLOTHO_LAYOUT)
    return by_id(keep_present(items, table, on_missing))


# ---------------------------------------------------------------------------------------------
CLOTHO_AQA_LAYOUT = ("Clotho-AQA as distributed: clotho_aqa_{split}.csv (header file_name, QuestionText, answer, "
                     "confidence; one row per annotator's answer) beside audio_files/ (the wavs of every "
                     "split); split ∈ train, val, test")


def read_clotho_aqa(root: Path, split: str = "test", *, on_missing: str = "error") -> list[Item]:
    """One Item per (clip, question); reference = the list of its annotators' answers, in row order.

    The CSV (and the official eval JSONL after it) repeats a question once per answer. Keeping
    one item per question with all its answers lets a scorer do both: the official per-row
    accuracy (each answer counts once) and "correct if it matches any accepted answer".
    id = "FILE#K", K the question's rank among the clip's questions in file order (1-based).
    meta: "confidences" (parallel to the answers), "yes_no" (every answer is yes or no)."""
    root = Path(root)
    table = root / f"clotho_aqa_{split}.csv"
    questions: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for _, row in read_table(table, ("file_name", "QuestionText", "answer", "confidence"), CLOTHO_AQA_LAYOUT):
        questions.setdefault((row["file_name"], row["QuestionText"]), []).append((row["answer"], row["confidence"]))
    audio_dir = require_dir(root / "audio_files", CLOTHO_AQA_LAYOUT)
    rank: dict[str, int] = {}
    items = []
    for (file_name, question), answers in questions.items():
        rank[file_name] = rank.get(file_name, 0) + 1
        items.append(Item(f"{file_name}#{rank[file_name]}", audio_dir / file_name, [a for a, _ in answers],
                          question=question,
                          meta={"dataset": "clothoaqa", "split": split, "lang": "en",
                                "confidences": [c for _, c in answers],
                                "yes_no": all(a.strip().lower() in ("yes", "no") for a, _ in answers)}))
    return by_id(keep_present(items, table, on_missing))


# ---------------------------------------------------------------------------------------------
COCHLSCENE_LAYOUT = ("CochlScene as distributed: {Train,Val,Test}/{ClassName}/*.wav (e.g. "
                     "CochlScene/Test/Park/Park_user0807_14976869_001.wav), root = the folder holding the splits")


def read_cochlscene(root: Path, split: str = "Test") -> list[Item]:
    """Every clip of a CochlScene split; reference = its class folder's name as written ("Park",
    "CrowdedIndoor"). The split name matches case-insensitively."""
    folder = find_child(Path(root), split, COCHLSCENE_LAYOUT)
    stray = sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
    if stray:
        raise layout_error(folder, f"audio files outside a class folder: {shown(stray)}", COCHLSCENE_LAYOUT)
    items = [Item(path.stem, path, class_dir.name,
                  meta={"dataset": "cochlscene", "split": folder.name})
             for class_dir in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
             for path in sorted(class_dir.iterdir()) if path.suffix.lower() in AUDIO_SUFFIXES]
    if not items:
        raise layout_error(folder, "no CLASS/*.wav files", COCHLSCENE_LAYOUT)
    check_unique((i.id for i in items), folder, COCHLSCENE_LAYOUT)
    return by_id(items)


# ---------------------------------------------------------------------------------------------
TUT2017_LAYOUT = ("a TUT Acoustic Scenes 2017 folder as distributed (TUT-acoustic-scenes-2017-development or "
                  "-evaluation) holding audio/*.wav, meta.txt (lines 'audio/FILE.wav<TAB>scene[<TAB>location]') "
                  "and, for the folds, evaluation_setup/fold{N}_{train,evaluate,test}.txt (lines "
                  "'audio/FILE.wav[<TAB>scene]')")


def read_tut2017(root: Path, fold: int | None = None, part: str = "evaluate", *,
                 on_missing: str = "error") -> list[Item]:
    """TUT2017 clips; reference = the scene label as written ("cafe/restaurant", "city_center").

    fold=None: every clip of meta.txt (the evaluation set's labelled list). fold=N: the clips of
    evaluation_setup/foldN_{part}.txt, labels from that file or, where it has none (the test
    lists), from meta.txt; where both have a label they must agree."""
    root = Path(root)
    meta_path = root / "meta.txt"
    labels = dict(_tab_lines(meta_path, min_fields=2)) if fold is None or meta_path.exists() else {}
    if fold is None:
        table, rows = meta_path, [(file, fields[0]) for file, fields in sorted(labels.items())]
        # meta.txt lists the whole audio folder: a clip missing from it is a damaged copy.
        on_disk = {f"audio/{p.name}" for p in (root / "audio").glob("*.wav")} if (root / "audio").is_dir() else set()
        if unlisted := sorted(on_disk - set(labels)):
            raise layout_error(meta_path, f"wav files in audio/ without a line here: {shown(unlisted)}", TUT2017_LAYOUT)
    else:
        table = root / "evaluation_setup" / f"fold{fold}_{part}.txt"
        rows = []
        for file, fields in _tab_lines(table, min_fields=1):
            known = labels.get(file, ("",))[0]
            scene = fields[0] if fields else known
            if not scene or (known and known != scene):
                raise layout_error(table, f"{file}: scene {scene!r} here, {known or 'none'!r} in {meta_path.name}",
                                   TUT2017_LAYOUT)
            rows.append((file, scene))
    items = [Item(Path(file).stem, root / file, scene,
                  meta={"dataset": "tut2017", "fold": fold, "part": None if fold is None else part,
                        "location": _location(labels.get(file, ()))})
             for file, scene in rows]
    check_unique((i.id for i in items), table, TUT2017_LAYOUT)
    return by_id(keep_present(items, table, on_missing))


def _location(fields: tuple[str, ...]) -> str | None:
    """The recording location of a development-set meta.txt line ('a001'); evaluation lines have none."""
    return fields[1] if len(fields) > 1 else None


def _tab_lines(path: Path, min_fields: int) -> list[tuple[str, tuple[str, ...]]]:
    """(file, other fields) of tab-separated lines (whitespace-separated when a line has no tab)."""
    rows = []
    for number, line in read_lines(path, TUT2017_LAYOUT):
        fields = [f.strip() for f in (line.split("\t") if "\t" in line else line.split())]
        if len(fields) < min_fields or not fields[0].lower().endswith(".wav"):
            raise layout_error(path, f"line {number} is not 'audio/FILE.wav<TAB>scene…': {line!r}", TUT2017_LAYOUT)
        rows.append((fields[0], tuple(fields[1:])))
    return rows


# ---------------------------------------------------------------------------------------------
MELD_VIDEO_DIRS = {"train": "train_splits", "dev": "dev_splits_complete", "test": "output_repeated_splits_test"}
MELD_LAYOUT = ("MELD.Raw as distributed: {split}_sent_emo.csv (header Sr No., Utterance, Speaker, Emotion, "
               "Sentiment, Dialogue_ID, Utterance_ID, …) and the extracted videos dia{D}_utt{U}.mp4 in "
               "train_splits/, dev_splits_complete/ or output_repeated_splits_test/ (beside the CSV or in "
               "train/, dev/, test/ beside it), or video_dir=FOLDER; split ∈ train, dev, test")


def read_meld(root: Path, split: str = "test", *, video_dir: Path | None = None,
              on_missing: str = "error") -> list[Item]:
    """Every utterance of a MELD split; audio = its .mp4 (load_audio decodes the sound track with
    ffmpeg); reference = the emotion label (neutral, joy, sadness, anger, surprise, fear, disgust).
    Known gap in the real data: dev's dia110_utt7.mp4 is absent (on_missing="warn" leaves it out)."""
    root = Path(root)
    table = root / f"{split}_sent_emo.csv"
    rows = read_table(table, ("Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID"),
                      MELD_LAYOUT)
    if video_dir is None:
        name = MELD_VIDEO_DIRS.get(split, split)
        video_dir = next((d for d in (root / name, root / split / name) if d.is_dir()), root / name)
    videos = require_dir(Path(video_dir), MELD_LAYOUT)
    items = []
    for number, row in rows:
        if not (row["Dialogue_ID"].strip().isdigit() and row["Utterance_ID"].strip().isdigit()):
            raise layout_error(table, f"line {number}: Dialogue_ID {row['Dialogue_ID']!r} and Utterance_ID "
                               f"{row['Utterance_ID']!r} must be whole numbers", MELD_LAYOUT)
        dialogue, utterance = int(row["Dialogue_ID"]), int(row["Utterance_ID"])
        name = f"dia{dialogue}_utt{utterance}"
        items.append(Item(name, videos / f"{name}.mp4", row["Emotion"],
                          meta={"dataset": "meld", "split": split, "lang": "en", "sentiment": row["Sentiment"],
                                "speaker": row["Speaker"], "utterance": row["Utterance"],
                                "dialogue_id": dialogue, "utterance_id": utterance}))
    check_unique((i.id for i in items), table, MELD_LAYOUT)
    return by_id(keep_present(items, table, on_missing, what="video"))


# ---------------------------------------------------------------------------------------------
VOCALSOUND_LAYOUT = ("VocalSound as distributed (vs_release_16k): audio_16k/{speaker}_{n}_{label}.wav, "
                     "datafiles/{tr,val,te,all}.json ({\"data\": [{\"wav\": PATH, \"labels\": AUDIOSET_ID}, …]}) "
                     "and optionally class_labels_indices_vs.csv (index, mid, display_name)")
# The AudioSet ids of VocalSound's six classes and the label word of its file names.
VOCALSOUND_CLASSES = {"/m/01j3sz": "laughter", "/m/07plz5l": "sigh", "/m/01b_21": "cough",
                      "/m/0dl9sf8": "throatclearing", "/m/01hsr_": "sneeze", "/m/07ppn3j": "sniff"}
_VOCALSOUND_SPLITS = {"train": "tr", "tr": "tr", "validation": "val", "val": "val", "test": "te", "te": "te",
                      "all": "all"}


def read_vocalsound(root: Path, split: str = "test", *, audio: str = "audio_16k",
                    on_missing: str = "error") -> list[Item]:
    """The clips of a VocalSound split file; reference = the class word of the file name
    (laughter, sigh, cough, throatclearing, sneeze, sniff), checked against the AudioSet id.

    The released JSONs hold the authors' absolute paths; like VocalSound's own prep_data.py, the
    reader looks each file up by name in `audio` (audio_16k/, or audio_44k/)."""
    root = Path(root)
    if split not in _VOCALSOUND_SPLITS:
        raise ValueError(f"split={split!r}: use one of {', '.join(_VOCALSOUND_SPLITS)}")
    table = root / "datafiles" / f"{_VOCALSOUND_SPLITS[split]}.json"
    data = read_json(table, VOCALSOUND_LAYOUT)
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise layout_error(table, 'not an object {"data": [...]}', VOCALSOUND_LAYOUT)
    names = _display_names(root / "class_labels_indices_vs.csv")
    audio_dir = require_dir(root / audio, VOCALSOUND_LAYOUT)
    items = []
    for n, entry in enumerate(data["data"]):
        if not isinstance(entry, dict) or not {"wav", "labels"} <= set(entry):
            raise layout_error(table, f"entry {n} lacks 'wav' or 'labels': {entry!r}", VOCALSOUND_LAYOUT)
        path = audio_dir / Path(str(entry["wav"])).name
        label, mid = path.stem.rsplit("_", 1)[-1], str(entry["labels"]).strip()
        if VOCALSOUND_CLASSES.get(mid) != label:
            raise layout_error(table, f"entry {n}: {path.name} is labelled {mid!r} "
                               f"({VOCALSOUND_CLASSES.get(mid, 'not a VocalSound class')})", VOCALSOUND_LAYOUT)
        items.append(Item(path.stem, path, label,
                          meta={"dataset": "vocalsound", "split": split, "mid": mid, "display_name": names.get(mid),
                                "speaker": path.stem.split("_")[0]}))
    check_unique((i.id for i in items), table, VOCALSOUND_LAYOUT)
    return by_id(keep_present(items, table, on_missing))


def _display_names(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    return {row["mid"]: row["display_name"] for _, row in read_table(path, ("mid", "display_name"), VOCALSOUND_LAYOUT)}


# ---------------------------------------------------------------------------------------------
NSYNTH_LAYOUT = ("an NSynth split folder as distributed, nsynth-{train,valid,test}/, holding examples.json "
                 "({note_str: {pitch, velocity, instrument_family_str, instrument_source_str, qualities_str, …}}) "
                 "and audio/{note_str}.wav; or the folder above it with split=")
NSYNTH_FIELDS = ("pitch", "velocity", "instrument_family_str", "instrument_source_str", "qualities_str")


def read_nsynth(root: Path, split: str | None = None, *, on_missing: str = "error") -> list[Item]:
    """Every note of an NSynth split; reference = {pitch, velocity, instrument_family_str,
    instrument_source_str, qualities_str}; meta keeps instrument_str."""
    folder = Path(root) / f"nsynth-{split}" if split else Path(root)
    table = folder / "examples.json"
    if split is None and not table.exists() and folder.is_dir():
        splits = sorted(p.name[len("nsynth-"):] for p in folder.glob("nsynth-*") if p.is_dir())
        if splits:
            raise layout_error(table, f"file not found; pass split= one of {', '.join(splits)}", NSYNTH_LAYOUT)
    examples = read_json(table, NSYNTH_LAYOUT)
    if not isinstance(examples, dict):
        raise layout_error(table, "not an object {note_str: {…}}", NSYNTH_LAYOUT)
    audio_dir = require_dir(folder / "audio", NSYNTH_LAYOUT)
    items = []
    for note, fields in examples.items():
        absent = [f for f in NSYNTH_FIELDS if not isinstance(fields, dict) or f not in fields]
        if absent:
            raise layout_error(table, f"{note!r} lacks {', '.join(absent)}", NSYNTH_LAYOUT)
        reference = {f: fields[f] for f in NSYNTH_FIELDS} | {"qualities_str": list(fields["qualities_str"])}
        items.append(Item(note, audio_dir / f"{note}.wav", reference,
                          meta={"dataset": "nsynth", "split": split or folder.name.removeprefix("nsynth-"),
                                "instrument_str": fields.get("instrument_str")}))
    # audio/ holds exactly the notes of examples.json as distributed.
    if unlisted := sorted({p.stem for p in audio_dir.glob("*.wav")} - set(examples)):
        raise layout_error(audio_dir, f"wav files without an entry in {table}: {shown(unlisted)}", NSYNTH_LAYOUT)
    return by_id(keep_present(items, table, on_missing))
