"""Tiny replicas of every benchmark's native layout: CI data for the readers, and a dataset the
embedded nano model can be scored on end to end.

    from workbench.evaluation.replicas import build_replicas, read_replica
    roots = build_replicas(Path("replicas"))          # {name: root to hand to its reader}
    items = read_replica("meld", Path("replicas"))      # = read_dataset("meld", roots["meld"], split="test")

Most items are from nano's held-out test split: item i of a task is built exactly as
`recipes/make_corpus.py` builds test item i with seed 0 (the seed of the corpus nano was trained
and evaluated on, `workbench/assets/nano/eval.json`), and the corpus splits by content, so nano
never saw these sentences, mixtures, scenes, vocal recipes or notes, while their labels are in
its label sets. Each ASR replica also holds one real clip: from `real_clips` (a folder laid out
like `../shared/audio`, with `labels.jsonl`) when given, else the package's demo clip. Where a
replica needs something the corpus lacks, it is derived, and said so below.

Replica → task, the layout written under `out/`, and where its items come from:

- librispeech (ASR): `LibriSpeech/dev-clean/SPK/CH/SPK-CH-UTT.flac` + `SPK-CH.trans.txt`. LibriSpeech
  1272-128104-0000 (real) or the demo `speech_en`; synthetic English ASR, transcripts uppercased.
- aishell1 (ASR): `data_aishell/wav/test/S076x/BAC009S076xWyyyy.wav` + `transcript/aishell_transcript_v0.8.txt`.
  The real `zh_ni_mei_shi_ba_negative.wav` or demo `speech_zh`; synthetic Mandarin ASR.
- aishell2 (ASR): `AISHELL-2/iOS/test/{wav.scp, trans.txt, wav/T090x/*.wav}`. The real
  `zh_ni_mei_shi_ba_relaxed.wav` or demo `speech_zh`; synthetic Mandarin ASR, disjoint from aishell1's.
- covost2, covost2_zh_en (S2TT): `covost2/clips/common_voice_*.mp3` + `covost_v2.en_de.test.tsv`,
  `covost_v2.zh-CN_en.test.tsv`. Synthetic S2TT en→de and zh→en; client_id = sha512 of the espeak-ng voice.
- srwt, srwt_json (SRWT): `srwt/ID.wav` + an MFA-style `ID.TextGrid` ("words" tier) + `word_times.json`.
  Synthetic Mandarin SRWT, whose times are exact (every unit is synthesised on its own).
- clotho (AAC): `clotho/clotho_captions_evaluation.csv` + `evaluation/*.wav`. Synthetic AAC; caption_1 is
  the corpus caption, captions 2–5 are templated from the mixture's events (the corpus has one caption).
- clothoaqa (AQA): `clothoaqa/clotho_aqa_test.csv` + `audio_files/*.wav`. Synthetic AQA; each question has
  three answer rows, all the true answer (confidences yes, yes, maybe).
- cochlscene (ASC): `CochlScene/Test/{Cafe,Park,Street}/*.wav`. Synthetic scenes cafe, park, street, in
  CochlScene's capitalisation (the reference is the folder name: "Park", where nano says "park").
- tut2017 (ASC): `TUT-acoustic-scenes-2017-development/{audio/*.wav, meta.txt, evaluation_setup/fold1_*.txt}`.
  Synthetic scenes beach, office, park, train: TUT2017 labels as they are.
- meld (SER): `MELD.Raw/test_sent_emo.csv` + `output_repeated_splits_test/dia0_uttN.mp4`. Synthetic SER
  (neutral, joy, sadness, anger), the wav muxed by ffmpeg into an mp4 with a blank video.
- vocalsound (VSC): `vocalsound/audio_16k/*.wav` + `datafiles/te.json` + `class_labels_indices_vs.csv`.
  Synthetic VSC; the corpus label "throat clearing" is VocalSound's file label "throatclearing".
- nsynth (MNA): `nsynth-test/examples.json` + `audio/*.wav`. Synthetic notes; instrument source "synthetic"
  for synth_lead, else "acoustic" (the GM soundfont's samples).
- official_{librispeech,covost2,clothoaqa,nsynth,srwt}: `official/NAME_eval.jsonl`, the rows of those
  native replicas as the official eval_audio scripts read them (their "source" names are made up here).

`out/replicas.json` lists every replica item's id and origin. Building takes a few seconds on one
core (espeak-ng, numpy, one fluidsynth run, ffmpeg for the mp3s and mp4s) and is deterministic.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from workbench.audio import load_audio
from workbench.demo import demo_clip
from workbench.synth import SPLITS, TASKS
from workbench.synth.sounds import EVENTS
from workbench.synth.speech import EMOTIONS
from workbench.synth.tasks import Item as SynthItem
from workbench.synth.tasks import build_items
from workbench.synth.vocal import LABELS as VOCAL_LABELS

from . import replicas_write as write
from .items import Item
from .readers import read_dataset
from .readers_sound import VOCALSOUND_CLASSES

SEED = 0          # the seed of the corpus nano was trained and evaluated on
_SCAN = 200       # test items of a task looked at to find the labels a replica needs
ITEMS_RANGE = (2, 6)


@dataclass(frozen=True)
class Replica:
    name: str                    # key of build_replicas' result
    reader: str                  # key of READERS
    task: str                    # asr, s2tt, srwt, aac, aqa, asc, ser, vsc, mna
    root: str                    # what to pass to the reader, relative to out/
    kwargs: dict[str, Any] = field(default_factory=dict)   # reader keywords
    relative: tuple[str, ...] = ()   # keywords whose value is a path relative to out/


REPLICAS: dict[str, Replica] = {r.name: r for r in (
    Replica("librispeech", "librispeech", "asr", "LibriSpeech/dev-clean"),
    Replica("aishell1", "aishell1", "asr", "data_aishell", {"split": "test"}),
    Replica("aishell2", "aishell2", "asr", "AISHELL-2", {"channel": "iOS", "split": "test"}),
    Replica("covost2", "covost2", "s2tt", "covost2", {"src": "en", "tgt": "de", "split": "test"}),
    Replica("covost2_zh_en", "covost2", "s2tt", "covost2", {"src": "zh", "tgt": "en", "split": "test"}),
    Replica("srwt", "srwt", "srwt", "srwt", {"lang": "zh"}),
    Replica("srwt_json", "srwt", "srwt", "srwt", {"lang": "zh", "alignments": "srwt/word_times.json"}, ("alignments",)),
    Replica("clotho", "clotho", "aac", "clotho", {"split": "evaluation"}),
    Replica("clothoaqa", "clothoaqa", "aqa", "clothoaqa", {"split": "test"}),
    Replica("cochlscene", "cochlscene", "asc", "CochlScene", {"split": "Test"}),
    Replica("tut2017", "tut2017", "asc", "TUT-acoustic-scenes-2017-development"),
    Replica("meld", "meld", "ser", "MELD.Raw", {"split": "test"}),
    Replica("vocalsound", "vocalsound", "vsc", "vocalsound", {"split": "test"}),
    Replica("nsynth", "nsynth", "mna", "nsynth-test"),
    *(Replica(f"official_{name}", "official_jsonl", task, f"official/{name}_eval.jsonl", {"audio_root": "."},
              ("audio_root",))
      for name, task in (("librispeech", "asr"), ("covost2", "s2tt"), ("clothoaqa", "aqa"), ("nsynth", "mna"),
                         ("srwt", "srwt"))),
)}


# The registered benchmark (`tasks.TASKS`) whose prompt and scoring each replica is run with.
BENCHMARK_OF: dict[str, str] = {
    "librispeech": "librispeech-dev-clean", "aishell1": "aishell1-test", "aishell2": "aishell2-ios",
    "covost2": "covost2-en-de", "covost2_zh_en": "covost2-zh-en", "srwt": "srwt", "srwt_json": "srwt",
    "clotho": "clotho", "clothoaqa": "clotho-aqa", "cochlscene": "cochlscene", "tut2017": "tut2017", "meld": "meld",
    "vocalsound": "vocalsound", "nsynth": "nsynth", "official_librispeech": "librispeech-test-clean",
    "official_covost2": "covost2-en-de", "official_clothoaqa": "clotho-aqa", "official_nsynth": "nsynth",
    "official_srwt": "srwt",
}


def read_replica(name: str, out: Path) -> list[Item]:
    """The items of replica `name` built under `out`, read with its reader and keywords."""
    if name not in REPLICAS:
        raise ValueError(f"no replica {name!r}; replicas: {', '.join(REPLICAS)}")
    replica = REPLICAS[name]
    kwargs = {k: Path(out) / v if k in replica.relative else v for k, v in replica.kwargs.items()}
    return read_dataset(replica.reader, Path(out) / replica.root, **kwargs)


def synthetic_item(task: str, index: int) -> SynthItem:
    """Item `index` of `task` in nano's held-out test split (what make_corpus writes as
    {task}-test-{index:06d} with seed 0)."""
    rng = np.random.default_rng([SEED, TASKS.index(task), SPLITS.index("test"), index])
    return build_items(task, "test", [rng])[0]


# ---------------------------------------------------------------------------------------------
class _Synthetic:
    """Test-split items, built on demand and cached for one build (aishell1 and aishell2 must not share)."""

    def __init__(self) -> None:
        self._items: dict[tuple[str, int], SynthItem] = {}
        self.used: set[tuple[str, int]] = set()

    def item(self, task: str, index: int) -> SynthItem:
        if (task, index) not in self._items:
            self._items[task, index] = synthetic_item(task, index)
        return self._items[task, index]

    def pick(self, task: str, count: int, accept: Callable[[SynthItem], bool] = lambda item: True,
             labels: tuple[str, ...] = ()) -> list[tuple[int, SynthItem]]:
        """The first `count` unused items that `accept`, in index order; with `labels`, as many
        different labels as possible first (a replica with one class scores nothing)."""
        taken: list[tuple[int, SynthItem]] = []
        spare: list[tuple[int, SynthItem]] = []
        seen: set[str] = set()
        for index in range(_SCAN):
            if (task, index) in self.used or not accept(item := self.item(task, index)):
                continue
            label = item.reference if labels else str(index)
            (spare if label in seen else taken).append((index, item))
            seen.add(label)
            if len(taken) == count or (labels and seen >= set(labels) and len(taken) + len(spare) >= count):
                break
        taken = sorted(taken + spare[:count - len(taken)], key=lambda pair: pair[0])
        if len(taken) < count:
            raise RuntimeError(f"only {len(taken)} {task} test items of the first {_SCAN} fit this replica")
        self.used |= {(task, index) for index, _ in taken}
        return taken

    def notes(self, count: int) -> list[tuple[int, SynthItem]]:
        """MNA items 0…count-1, rendered in one fluidsynth run (each run loads the soundfont)."""
        rngs = [np.random.default_rng([SEED, TASKS.index("mna"), SPLITS.index("test"), i]) for i in range(count)]
        return list(enumerate(build_items("mna", "test", rngs)))


def _clip(task: str, index: int, item: SynthItem, **fields: Any) -> write.Clip:
    return write.Clip(f"synthetic {_name(task, index)}", item.audios[0], fields)


def _name(task: str, index: int) -> str:
    return f"{task}-test-{index:06d}"


# ---------------------------------------------------------------------------------------------
# One real (or demo) utterance per ASR replica.
@dataclass(frozen=True)
class _RealClips:
    english: write.Clip          # fields["transcript"]: uppercase, no punctuation (LibriSpeech's form)
    mandarin: tuple[write.Clip, write.Clip]


def _real_clips(folder: Path | None) -> _RealClips:
    """LibriSpeech's utterance and the two Mandarin clips of `folder/labels.jsonl`; the demo clips
    (speech_en, speech_zh) for whatever is absent."""
    rows = []
    if folder is not None:
        labels = Path(folder) / "labels.jsonl"
        if not labels.is_file():
            raise FileNotFoundError(f"{labels} not found: real_clips must be a folder of clips with a labels.jsonl "
                                    "(one JSON object a line: file, kind, language, transcript), like ../shared/audio")
        rows = sorted((json.loads(line) for line in labels.read_text(encoding="utf-8").splitlines() if line.strip()),
                      key=lambda row: row["file"])
    english = next((write.Clip(f"real {r['file']}", None, {"transcript": r["transcript"]},
                               copy_from=Path(folder) / r["file"])
                    for r in rows if r.get("language") == "en" and r.get("transcript")
                    and re.fullmatch(r"\d+-\d+-\d{4}\.flac", r["file"])), None)
    if english is None:
        demo = demo_clip("speech_en")
        english = write.Clip("demo speech_en", load_audio(demo.path), {"transcript": _plain(demo.text).upper()})
    mandarin = [write.Clip(f"real {r['file']}", load_audio(Path(folder) / r["file"]),
                           {"transcript": _plain(r["transcript"])})
                for r in rows if r.get("language") == "zh" and r.get("transcript")]
    demo_zh = demo_clip("speech_zh")
    mandarin += [write.Clip("demo speech_zh", load_audio(demo_zh.path), {"transcript": _plain(demo_zh.text)})] * 2
    return _RealClips(english, (mandarin[0], mandarin[1]))


def _plain(text: str) -> str:
    """A transcript as ASR corpora write it: punctuation (Latin and CJK) removed."""
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s']", "", text)).strip()


# ---------------------------------------------------------------------------------------------
Origins = dict[str, dict[str, str]]   # replica → item id → origin


def build_replicas(out: Path, *, items_per_dataset: int = 4, real_clips: Path | None = None) -> dict[str, Path]:
    """Write every replica under `out` (created); return {replica name: root for its reader}.

    items_per_dataset: 2–6 items in each replica. real_clips: a folder like ../shared/audio whose
    LibriSpeech and Mandarin clips replace the demo clips in the ASR replicas (copied into `out`)."""
    low, high = ITEMS_RANGE
    if not low <= items_per_dataset <= high:
        raise ValueError(f"items_per_dataset={items_per_dataset}: choose {low}–{high} (replicas are tiny on purpose)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    synthetic, real = _Synthetic(), _real_clips(real_clips)
    origins: Origins = {}
    for builder in (_librispeech, _aishell, _covost2, _srwt, _clotho, _clotho_aqa, _scenes, _meld, _vocalsound,
                    _nsynth):
        origins |= builder(out, items_per_dataset, synthetic, real)
    _official(out)
    (out / "replicas.json").write_text(json.dumps(origins, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return {name: out / replica.root for name, replica in REPLICAS.items()}


def _librispeech(out: Path, n: int, synthetic: _Synthetic, real: _RealClips) -> Origins:
    """The real utterance keeps its id (the demo one is 9990-1-0000); synthetic ones are speaker
    9991, chapter 2, UTT = the corpus index."""
    first = real.english.copy_from.stem if real.english.copy_from else "9990-1-0000"
    rows = [(first, real.english.fields["transcript"], real.english)]
    rows += [(f"9991-2-{i:04d}", it.reference.upper(), _clip("asr", i, it))
             for i, it in synthetic.pick("asr", n - 1, lambda it: it.fields["language"] == "en")]
    write.librispeech(out / "LibriSpeech" / "dev-clean", rows)
    return {"librispeech": {utt: clip.origin for utt, _, clip in rows}}


def _aishell(out: Path, n: int, synthetic: _Synthetic, real: _RealClips) -> Origins:
    """Aishell-1 ids BAC009SxxxxWyyyy (test speakers are S0764–S0916), Aishell-2 iOS ids IT0xxxW0yyy;
    the real clip is speaker S0764 / T0900, synthetic ones S0765 / T0901 with W = the corpus index."""
    origins = {}
    for name, real_clip, speakers in (("aishell1", real.mandarin[0], ("BAC009S0764", "BAC009S0765")),
                                      ("aishell2", real.mandarin[1], ("IT0900", "IT0901"))):
        rows = [(f"{speakers[0]}W0000", real_clip.fields["transcript"], real_clip)]
        rows += [(f"{speakers[1]}W{i:04d}", it.reference, _clip("asr", i, it))
                 for i, it in synthetic.pick("asr", n - 1, lambda it: it.fields["language"] == "zh")]
        if name == "aishell1":
            write.aishell1(out / "data_aishell", "test", rows)
        else:
            write.aishell2(out / "AISHELL-2" / "iOS" / "test", rows)
        origins[name] = {utt: clip.origin for utt, _, clip in rows}
    return origins


def _covost2(out: Path, n: int, synthetic: _Synthetic, real: _RealClips) -> Origins:
    """Common Voice clip names, one TSV per direction beside one clips/ folder."""
    origins = {}
    for name, src, tgt, (src_code, tgt_code) in (("covost2", "en", "de", ("en", "de")),
                                                  ("covost2_zh_en", "zh", "en", ("zh-CN", "en"))):
        rows = [(f"common_voice_{src_code}_{90000000 + i}.mp3",
                 _clip("s2tt", i, it, sentence=it.fields["transcript"], translation=it.reference,
                       voice=it.fields["voice"])) for i, it in synthetic.pick("s2tt", n, _translates(src, tgt))]
        write.covost2(out / "covost2", src_code, tgt_code, "test", rows)
        origins[name] = {Path(file).stem: clip.origin for file, clip in rows}
    return origins


def _translates(src: str, tgt: str) -> Callable[[SynthItem], bool]:
    """Accepts S2TT items from `src` to `tgt`. A factory, so that the predicate holds its own pair
    rather than reading the loop's variables whenever it happens to be called."""
    def accept(it: SynthItem) -> bool:
        return (it.fields["language"], it.fields["target_language"]) == (src, tgt)
    return accept


def _srwt(out: Path, n: int, synthetic: _Synthetic, real: _RealClips) -> Origins:
    """Mandarin, as the industrial set; the units are characters with exact times."""
    rows = [(_name("srwt", i), _clip("srwt", i, it, words=[(w["word"], w["start"], w["end"])
                                                           for w in it.fields["words"]]))
            for i, it in synthetic.pick("srwt", n, lambda it: it.fields["language"] == "zh")]
    write.word_times(out / "srwt", rows)
    origins = {utt: clip.origin for utt, clip in rows}
    return {"srwt": origins, "srwt_json": origins}


def _clotho(out: Path, n: int, synthetic: _Synthetic, real: _RealClips) -> Origins:
    """File names with spaces, as Clotho's; the corpus caption and four templated from the events."""
    rows = []
    for i, it in synthetic.pick("aac", n):
        phrases = " and ".join(EVENTS[e].phrase for e in it.fields["events"])
        captions = [it.reference, f"{phrases[0].upper()}{phrases[1:]}.", f"The sound of {phrases}.",
                    f"You can hear {phrases}.", f"There is {phrases} in this recording."]
        rows.append((f"{' '.join(it.fields['events'])} {i}.wav", captions, _clip("aac", i, it)))
    write.clotho(out / "clotho", "evaluation", rows)
    return {"clotho": {file: clip.origin for file, _, clip in rows}}


def _clotho_aqa(out: Path, n: int, synthetic: _Synthetic, real: _RealClips) -> Origins:
    """One question a clip (yes/no, count, which first), three answer rows each."""
    answers = ("yes", "no", "two", "bell", "one", "three", "four")
    rows = [(f"aqa clip {i}.wav", it.fields["question"], [(it.reference, c) for c in ("yes", "yes", "maybe")],
             _clip("aqa", i, it)) for i, it in synthetic.pick("aqa", n, labels=answers)]
    write.clotho_aqa(out / "clothoaqa", "test", rows)
    return {"clothoaqa": {f"{file}#1": clip.origin for file, _, _, clip in rows}}


def _scenes(out: Path, n: int, synthetic: _Synthetic, real: _RealClips) -> Origins:
    """CochlScene's classes in its capitalisation (folder names); TUT2017's labels as they are,
    in development-set file names LOCATION_START_END.wav."""
    cochl, tut = ("cafe", "park", "street"), ("beach", "office", "park", "train")
    cochl_rows = [(it.reference.capitalize(), f"{it.reference.capitalize()}_user9{i:03d}_{90000 + i}_000.wav",
                   _clip("asc", i, it))
                  for i, it in synthetic.pick("asc", n, lambda it: it.reference in cochl, labels=cochl)]
    write.cochlscene(out / "CochlScene" / "Test", cochl_rows)
    tut_rows = [(f"z{i:03d}_0_{round(len(it.audios[0]) / write.SAMPLE_RATE)}.wav", it.reference, f"z{i:03d}",
                 _clip("asc", i, it)) for i, it in synthetic.pick("asc", n, lambda it: it.reference in tut, labels=tut)]
    write.tut2017(out / "TUT-acoustic-scenes-2017-development", tut_rows)
    return {"cochlscene": {Path(file).stem: clip.origin for _, file, clip in cochl_rows},
            "tut2017": {Path(file).stem: clip.origin for file, _, _, clip in tut_rows}}


_SENTIMENT = {"neutral": "neutral", "joy": "positive", "sadness": "negative", "anger": "negative"}


def _meld(out: Path, n: int, synthetic: _Synthetic, real: _RealClips) -> Origins:
    """Dialogue 0, one utterance per item, the wav inside an mp4."""
    rows = [(0, u, _clip("ser", i, it, utterance=it.fields["transcript"], speaker="Narrator", emotion=it.reference,
                         sentiment=_SENTIMENT[it.reference]))
            for u, (i, it) in enumerate(synthetic.pick("ser", n, labels=tuple(EMOTIONS)))]
    write.meld(out / "MELD.Raw", "test", "output_repeated_splits_test", rows)
    return {"meld": {f"dia{d}_utt{u}": clip.origin for d, u, clip in rows}}


def _vocalsound(out: Path, n: int, synthetic: _Synthetic, real: _RealClips) -> Origins:
    """{f|m}{speaker}_{session}_{label}.wav, AudioSet ids, display names."""
    mids = {label: mid for mid, label in VOCALSOUND_CLASSES.items()}
    classes = [(mids[label.replace(" ", "")], label.replace(" ", ""), label.capitalize()) for label in VOCAL_LABELS]
    rows = [(f"{'fm'[k % 2]}9{i:03d}_0_{it.reference.replace(' ', '')}.wav", mids[it.reference.replace(" ", "")],
             _clip("vsc", i, it)) for k, (i, it) in enumerate(synthetic.pick("vsc", n, labels=VOCAL_LABELS))]
    write.vocalsound(out / "vocalsound", "te", classes, rows)
    return {"vocalsound": {Path(file).stem: clip.origin for file, _, clip in rows}}


# NSynth's instrument families and sources (index order), and its ten qualities (order of `qualities`).
_NSYNTH_FAMILIES = ("bass", "brass", "flute", "guitar", "keyboard", "mallet", "organ", "reed", "string",
                    "synth_lead", "vocal")
_NSYNTH_SOURCES = ("acoustic", "electronic", "synthetic")
_NSYNTH_QUALITIES = ("bright", "dark", "distortion", "fast_decay", "long_release", "multiphonic", "nonlinear_env",
                     "percussive", "reverb", "tempo-synced")


def _nsynth(out: Path, n: int, synthetic: _Synthetic, real: _RealClips) -> Origins:
    """note_str = {family}_{source}_{program:03d}-{pitch:03d}-{velocity:03d}, with every examples.json field."""
    notes = []
    for i, it in synthetic.notes(n):
        f = it.fields
        source = "synthetic" if f["instrument"] == "synth_lead" else "acoustic"
        instrument = f"{f['instrument']}_{source}_{f['program']:03d}"
        note_str = f"{instrument}-{f['pitch']:03d}-{f['velocity']:03d}"
        entry = {"note": 900000 + i, "note_str": note_str, "instrument": f["program"], "instrument_str": instrument,
                 "pitch": f["pitch"], "velocity": f["velocity"], "sample_rate": write.SAMPLE_RATE,
                 "qualities": [int(q in f["sonic"]) for q in _NSYNTH_QUALITIES], "qualities_str": list(f["sonic"]),
                 "instrument_family": _NSYNTH_FAMILIES.index(f["instrument"]), "instrument_family_str": f["instrument"],
                 "instrument_source": _NSYNTH_SOURCES.index(source), "instrument_source_str": source}
        notes.append((note_str, entry, _clip("mna", i, it)))
    write.nsynth(out / "nsynth-test", notes)
    return {"nsynth": {note_str: clip.origin for note_str, _, clip in notes}}


def _official(out: Path) -> None:
    """The official eval_audio JSONL of five native replicas (read back through their readers),
    audio paths relative to `out`."""
    def rel(item: Item) -> str:
        return item.audio.relative_to(out).as_posix()

    tables = {
        "librispeech": [{"audio": rel(i), "gt": i.reference, "source": "librispeech_dev_clean"}
                        for i in read_replica("librispeech", out)],
        "covost2": [{"audio": rel(i), "gt": i.reference, "source": f"covost2_{i.meta['src']}_{i.meta['tgt']}_test"}
                    for name in ("covost2", "covost2_zh_en") for i in read_replica(name, out)],
        "clothoaqa": [{"audio": rel(i), "question": i.question, "gt": answer, "source": "clothoaqa_test"}
                      for i in read_replica("clothoaqa", out) for answer in i.reference],
        "nsynth": [{"audio": rel(i), "gt": _note_tags(i.reference), "source": "nsynth_test"}
                   for i in read_replica("nsynth", out)],
        "srwt": [{"audio": rel(i), "gt": _srwt_tags(i.reference, len(load_audio(i.audio)) / write.SAMPLE_RATE),
                  "source": "srwt_zh"} for i in read_replica("srwt", out)],
    }
    for name, rows in tables.items():
        write.official_jsonl(out / "official" / f"{name}_eval.jsonl", rows)


def _note_tags(reference: dict) -> str:
    """An NSynth reference in Qwen-Audio's note-analysis form."""
    text = (f"<|pitch|><|midi_pitch_{reference['pitch']}|><|velocity|><|midi_velocity_{reference['velocity']}|>"
            f"<|instrument|>{reference['instrument_family_str']}")
    return text + (f"<|sonic|>{', '.join(reference['qualities_str'])}" if reference["qualities_str"] else "")


def _srwt_tags(words: list[tuple[str, float, float]], duration: float) -> str:
    """Word times in the official SRWT ground-truth form: `<|0.00|>`, then time tags around each
    unit and `<|sil|>` over every silence (the form the synthetic corpus writes too)."""
    text, position = "<|0.00|>", 0.0
    for word, start, end in words:
        if start > position:
            text += f"<|sil|><|{start:.2f}|>"
        text += f"{word}<|{end:.2f}|>"
        position = end
    return text + (f"<|sil|><|{duration:.2f}|>" if duration > position else "")
