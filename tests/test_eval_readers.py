"""Dataset readers (workbench.evaluation.readers) on the tiny replicas of every native layout
(workbench.evaluation.replicas), and on hand-made layouts for the corners the replicas do not
hold: every reader's count, ids and references, its one clear error on a missing or malformed
file, no silent drop, MELD's audio out of an mp4, and replicas built byte-identically."""
from __future__ import annotations

import json
import shutil
import warnings
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from workbench.audio import load_audio
from workbench.evaluation.readers import (
    READERS,
    DatasetLayoutError,
    ExcludedItemsWarning,
    read_aishell1,
    read_clotho_aqa,
    read_dataset,
    read_librispeech,
    read_meld,
    read_official_jsonl,
    read_tut2017,
    read_word_times,
)
from workbench.evaluation.replicas import REPLICAS, build_replicas, read_replica, synthetic_item

N = 4  # items per replica in the module's build
COUNTS = {name: N for name in REPLICAS} | {"official_covost2": 2 * N, "official_clothoaqa": 3 * N}


@pytest.fixture(scope="module")
def replicas(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("replicas")
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # a clean replica reads without a single warning
        build_replicas(out, items_per_dataset=N)
    return out


@pytest.fixture(scope="module")
def origins(replicas: Path) -> dict[str, dict[str, str]]:
    return json.loads((replicas / "replicas.json").read_text())


@cache
def synth(origin: str):
    """The synthetic test item an origin like "synthetic asr-test-000004" names."""
    task, _, index = origin.removeprefix("synthetic ").split("-")
    return synthetic_item(task, int(index))


def _copy(replicas: Path, name: str, tmp_path: Path) -> Path:
    """A private copy of one replica's folder (tests break it); returns the reader root in the copy."""
    top = REPLICAS[name].root.split("/")[0]
    shutil.copytree(replicas / top, tmp_path / top)
    return tmp_path / REPLICAS[name].root


def _wav(path: Path) -> Path:
    """A 0.1 s silent wav (content is never read by the readers)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros(1600, np.float32), 16000)
    return path


def _read(name: str, root: Path, out: Path | None = None, **extra):
    kwargs = {k: (out / v if k in REPLICAS[name].relative else v) for k, v in REPLICAS[name].kwargs.items()}
    return read_dataset(REPLICAS[name].reader, root, **kwargs | extra)


# ---------------------------------------------------------------------------------------------
# Every replica reads back: counts, sorted unique ids, files that exist and decode.
def test_replica_table_covers_every_reader():
    assert {r.reader for r in REPLICAS.values()} == set(READERS)


@pytest.mark.parametrize("name", list(REPLICAS))
def test_replica_reads_back(replicas: Path, origins: dict, name: str):
    items = read_replica(name, replicas)
    ids = [i.id for i in items]
    assert len(items) == COUNTS[name]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(i.audio.is_file() for i in items)
    if not name.startswith("official_"):
        assert sorted(origins[name]) == ids
    audio = load_audio(items[0].audio)          # flac, wav, mp3 and mp4 all decode
    assert audio.dtype == np.float32 and 0.5 < len(audio) / 16000 < 10


def test_read_replica_equals_read_dataset(replicas: Path):
    assert read_replica("covost2", replicas) == read_dataset("covost2", replicas / "covost2", src="en", tgt="de")


# ---------------------------------------------------------------------------------------------
# References exactly as written: compared with the synthetic items they were made from.
def test_librispeech_references(replicas: Path, origins: dict):
    for item in read_replica("librispeech", replicas):
        origin = origins["librispeech"][item.id]
        expected = ("THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG" if origin == "demo speech_en"
                    else synth(origin).reference.upper())
        assert item.reference == expected
        assert item.meta["lang"] == "en" and item.meta["split"] == "dev-clean"
        assert item.meta["speaker"] == item.id.split("-")[0]
    # The parent folder with a split name reads the same items.
    parent = replicas / "LibriSpeech"
    assert read_librispeech(parent, split="dev-clean") == read_replica("librispeech", replicas)


@pytest.mark.parametrize("name", ["aishell1", "aishell2"])
def test_aishell_references(replicas: Path, origins: dict, name: str):
    items = read_replica(name, replicas)
    for item in items:
        origin = origins[name][item.id]
        assert item.reference == ("今天天气很好" if origin == "demo speech_zh" else synth(origin).reference)
        assert item.meta["lang"] == "zh" and " " not in item.reference
    assert not (set(origins["aishell1"].values()) - {"demo speech_zh"}) & set(origins["aishell2"].values())


@pytest.mark.parametrize("name,pair", [("covost2", ("en", "de")), ("covost2_zh_en", ("zh", "en"))])
def test_covost2_references(replicas: Path, origins: dict, name: str, pair: tuple[str, str]):
    for item in read_replica(name, replicas):
        source = synth(origins[name][item.id])
        assert item.reference == source.reference
        assert item.meta["sentence"] == source.fields["transcript"]
        assert (item.meta["src"], item.meta["tgt"]) == pair and item.meta["lang"] == pair[0]
        assert item.audio.suffix == ".mp3" and len(item.meta["client_id"]) == 128
    zh = read_replica("covost2_zh_en", replicas)
    assert zh[0].meta["src_code"] == "zh-CN"   # "zh" found Common Voice's zh-CN files


@pytest.mark.parametrize("name", ["srwt", "srwt_json"])
def test_word_times_references(replicas: Path, origins: dict, name: str):
    for item in read_replica(name, replicas):
        words = synth(origins[name][item.id]).fields["words"]
        assert item.reference == [(w["word"], w["start"], w["end"]) for w in words]
        assert item.meta["text"] == "".join(w["word"] for w in words)
    assert read_replica("srwt", replicas) == read_replica("srwt_json", replicas)


def test_sound_references(replicas: Path, origins: dict):
    for item in read_replica("clotho", replicas):
        source = synth(origins["clotho"][item.id])
        assert len(item.reference) == 5 and item.reference[0] == source.reference
    for item in read_replica("clothoaqa", replicas):
        source = synth(origins["clothoaqa"][item.id])
        assert item.reference == [source.reference] * 3 and item.question == source.fields["question"]
        assert item.meta["confidences"] == ["yes", "yes", "maybe"]
        assert item.meta["yes_no"] == (source.reference in ("yes", "no"))
    for name, expected in (("cochlscene", str.capitalize), ("tut2017", str), ("meld", str),
                           ("vocalsound", lambda label: label.replace(" ", ""))):
        items = read_replica(name, replicas)
        assert [i.reference for i in items] == [expected(synth(origins[name][i.id]).reference) for i in items]
        assert len({i.reference for i in items}) >= 3   # several classes, not one
    for item in read_replica("meld", replicas):
        assert item.meta["utterance"] == synth(origins["meld"][item.id]).fields["transcript"]
    for item in read_replica("nsynth", replicas):
        fields = synth(origins["nsynth"][item.id]).fields
        source = "synthetic" if fields["instrument"] == "synth_lead" else "acoustic"
        assert item.reference == {"pitch": fields["pitch"], "velocity": fields["velocity"],
                                  "instrument_family_str": fields["instrument"], "instrument_source_str": source,
                                  "qualities_str": fields["sonic"]}


def test_official_jsonl_replicas(replicas: Path, origins: dict):
    rows = read_replica("official_clothoaqa", replicas)
    assert [r.id.rsplit("#", 1)[1] for r in rows[:3]] == ["1", "2", "3"]
    assert all(r.question and r.meta["source"] == "clothoaqa_test" for r in rows)
    st = {(r.meta["src"], r.meta["tgt"]) for r in read_replica("official_covost2", replicas)}
    assert st == {("en", "de"), ("zh", "en")}
    notes = read_replica("official_nsynth", replicas)
    assert all(r.reference.startswith("<|pitch|><|midi_pitch_") for r in notes)
    srwt = read_replica("official_srwt", replicas)
    assert all(r.reference.startswith("<|0.00|>") for r in srwt)
    # The synthetic corpus writes the same SRWT form after the prompt's <|0.00|>.
    for row in srwt:
        assert row.reference == "<|0.00|>" + synth(origins["srwt"][row.audio.stem]).reference


# ---------------------------------------------------------------------------------------------
# MELD: the audio is the mp4's sound track, decoded by load_audio (ffmpeg).
def test_meld_audio_from_mp4_equals_source(replicas: Path, origins: dict):
    for item in read_replica("meld", replicas)[:2]:
        source = synth(origins["meld"][item.id]).audios[0]
        for decoder in ("auto", "ffmpeg"):
            decoded = load_audio(item.audio, decoder=decoder)
            n = min(len(decoded), len(source))
            assert abs(len(decoded) - len(source)) < 0.1 * 16000
            assert np.corrcoef(decoded[:n], source[:n])[0, 1] > 0.99   # aac at 192 kb/s, time-aligned
            assert np.sqrt(np.mean((decoded[:n] - source[:n]) ** 2)) < 0.1 * np.sqrt(np.mean(source ** 2))


# ---------------------------------------------------------------------------------------------
# Determinism and options of the builder.
def test_build_is_byte_identical(replicas: Path, tmp_path: Path):
    build_replicas(tmp_path, items_per_dataset=N)
    files = sorted(p.relative_to(replicas) for p in replicas.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    different = [f for f in files if (replicas / f).read_bytes() != (tmp_path / f).read_bytes()]
    assert different == []


def test_build_rejects_sizes_out_of_range(tmp_path: Path):
    for n in (1, 7):
        with pytest.raises(ValueError, match="items_per_dataset"):
            build_replicas(tmp_path, items_per_dataset=n)


def test_real_clips_replace_demo_clips(shared_audio: Path, tmp_path: Path):
    build_replicas(tmp_path, items_per_dataset=2, real_clips=shared_audio)
    rows = [json.loads(line) for line in (shared_audio / "labels.jsonl").read_text().splitlines()]
    labels = {row["file"]: row for row in rows}
    libri = {i.id: i for i in read_replica("librispeech", tmp_path)}
    assert libri["1272-128104-0000"].reference == labels["1272-128104-0000.flac"]["transcript"]
    assert (tmp_path / "LibriSpeech/dev-clean/1272/128104/1272-128104-0000.flac").read_bytes() == \
        (shared_audio / "1272-128104-0000.flac").read_bytes()
    assert "你没事吧" in [i.reference for i in read_replica("aishell1", tmp_path)]
    assert "你没事吧" in [i.reference for i in read_replica("aishell2", tmp_path)]
    assert len(read_replica("meld", tmp_path)) == 2


def test_unknown_dataset_names_the_choices(tmp_path: Path):
    with pytest.raises(ValueError, match=r"did you mean 'librispeech'.*datasets: librispeech"):
        read_dataset("librispeach", tmp_path)


# ---------------------------------------------------------------------------------------------
# One clear error per missing or malformed file: it names the file and the layout expected.
BREAKS = [  # replica, file relative to the replica root, what to do with it
    ("librispeech", "9991/2/9991-2.trans.txt", "delete"),
    ("librispeech", "9991/2/9991-2.trans.txt", "9991-2-0004\n"),
    ("aishell1", "transcript/aishell_transcript_v0.8.txt", "delete"),
    ("aishell1", "wav/test", "delete"),
    ("aishell2", "iOS/test/trans.txt", "delete"),
    ("aishell2", "iOS/test/wav.scp", "IT0901W0004\n"),
    ("covost2", "covost_v2.en_de.test.tsv", "delete"),
    ("covost2", "covost_v2.en_de.test.tsv", "path\tsentence\nx.mp3\thello\n"),
    ("srwt", "srwt-test-000003.TextGrid", "not a textgrid"),
    ("srwt_json", "word_times.json", "{not json"),
    ("clotho", "clotho_captions_evaluation.csv", "delete"),
    ("clotho", "clotho_captions_evaluation.csv", "file_name,caption_1\nx.wav,a\n"),
    ("clothoaqa", "clotho_aqa_test.csv", "delete"),
    ("clothoaqa", "clotho_aqa_test.csv", "file_name,QuestionText,answer,confidence\nx.wav,q,a\n"),
    ("cochlscene", "Test", "delete"),
    ("tut2017", "meta.txt", "delete"),
    ("tut2017", "meta.txt", "not-a-wav-line\n"),
    ("meld", "test_sent_emo.csv", "delete"),
    ("meld", "test_sent_emo.csv", "Utterance,Speaker,Emotion\nhi,A,joy\n"),
    ("meld", "output_repeated_splits_test", "delete"),
    ("vocalsound", "datafiles/te.json", "delete"),
    ("vocalsound", "datafiles/te.json", '{"rows": []}'),
    ("nsynth", "examples.json", "delete"),
    ("nsynth", "examples.json", '{"x-060-100": {"pitch": 60}}'),
]


@pytest.mark.parametrize("name,file,action", BREAKS, ids=[f"{n}:{f}:{'delete' if a == 'delete' else 'garble'}"
                                                        for n, f, a in BREAKS])
def test_missing_or_malformed_file_is_one_clear_error(replicas: Path, tmp_path: Path, name: str, file: str,
                                                      action: str):
    root = _copy(replicas, name, tmp_path)
    target = root / file
    if name == "srwt_json":
        target = tmp_path / "srwt" / file
    if action == "delete":
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    else:
        target.write_text(action, encoding="utf-8")
    with pytest.raises(DatasetLayoutError) as error:
        _read(name, root, tmp_path)
    message = str(error.value)
    assert str(target) in message or str(target.parent) in message
    assert "Expected layout:" in message


def test_official_jsonl_errors(tmp_path: Path):
    path = tmp_path / "eval.jsonl"
    for text in ('{"audio": "a.wav", "gt": "x"}\n', "not json\n", "[1, 2]\n"):
        path.write_text(text)
        with pytest.raises(DatasetLayoutError, match=r"eval\.jsonl: line 1(.|\n)*Expected layout"):
            read_official_jsonl(path)
    with pytest.raises(DatasetLayoutError, match="file not found"):
        read_official_jsonl(tmp_path / "absent.jsonl")


# ---------------------------------------------------------------------------------------------
# No silent drops: a row without its audio, or an audio without its row, is an error naming both;
# on_missing="warn" leaves such rows out with one counted warning.
@pytest.mark.parametrize("name", ["covost2", "clothoaqa", "tut2017", "meld", "vocalsound", "aishell2"])
def test_row_without_audio_is_an_error_or_a_counted_warning(replicas: Path, tmp_path: Path, name: str):
    root = _copy(replicas, name, tmp_path)
    audio = tmp_path / read_replica(name, replicas)[-1].audio.relative_to(replicas)
    audio.unlink()
    with pytest.raises(DatasetLayoutError, match=r"1 of \d+ rows of .* name \w+ files that do not exist") as error:
        _read(name, root)
    assert audio.name in str(error.value)
    with pytest.warns(ExcludedItemsWarning, match="1 of"):
        items = _read(name, root, on_missing="warn")
    assert len(items) == N - 1


@pytest.mark.parametrize("name", ["librispeech", "nsynth", "clotho", "srwt", "aishell1"])
def test_listed_audio_missing_is_an_error(replicas: Path, tmp_path: Path, name: str):
    root = _copy(replicas, name, tmp_path)
    audio = tmp_path / read_replica(name, replicas)[-1].audio.relative_to(replicas)
    audio.unlink()
    with pytest.raises(DatasetLayoutError, match=audio.stem):
        _read(name, root)


@pytest.mark.parametrize("name,file", [("librispeech", "9991/2/9991-2-0099.flac"),
                                       ("librispeech", "9992/3/9992-3-0001.flac"),
                                       ("nsynth", "audio/bass_acoustic_032-040-050.wav"),
                                       ("clotho", "evaluation/extra clip.wav"), ("srwt", "extra.wav"),
                                       ("tut2017", "audio/extra_0_4.wav")])
def test_audio_without_a_row_is_an_error(replicas: Path, tmp_path: Path, name: str, file: str):
    root = _copy(replicas, name, tmp_path)
    _wav(root / file)
    with pytest.raises(DatasetLayoutError, match=Path(file).stem.split("-")[0]) as error:
        _read(name, root)
    assert "Expected layout:" in str(error.value)


def test_aishell1_excludes_untranscribed_wavs_with_a_count(replicas: Path, tmp_path: Path):
    """The official test set is the utterances with a transcript; the others are counted, not hidden."""
    root = _copy(replicas, "aishell1", tmp_path)
    _wav(root / "wav/test/S0765/BAC009S0765W0999.wav")
    with (root / "transcript/aishell_transcript_v0.8.txt").open("a", encoding="utf-8") as f:
        f.write("BAC009S0002W0122 而 对 楼市\n")         # a train utterance: not this split's
    with pytest.warns(ExcludedItemsWarning, match=r"1 of 5 wavs .* BAC009S0765W0999"):
        items = read_aishell1(root, "test")
    assert [i.id for i in items] == [i.id for i in read_replica("aishell1", replicas)]


# ---------------------------------------------------------------------------------------------
# Corners the replicas do not hold, on hand-made layouts.
def test_clotho_aqa_keeps_one_item_per_question_with_every_answer(tmp_path: Path):
    _wav(tmp_path / "audio_files" / "rain, wind.wav")
    (tmp_path / "clotho_aqa_val.csv").write_text(
        "file_name,QuestionText,answer,confidence\n"
        '"rain, wind.wav",Is it raining?,yes,yes\n"rain, wind.wav",Is it raining?,yes,maybe\n'
        '"rain, wind.wav",Is it raining?,no,no\n"rain, wind.wav",What is blowing?,wind,yes\n')
    items = read_clotho_aqa(tmp_path, split="val")
    assert [(i.id, i.reference, i.question, i.meta["yes_no"]) for i in items] == [
        ("rain, wind.wav#1", ["yes", "yes", "no"], "Is it raining?", True),
        ("rain, wind.wav#2", ["wind"], "What is blowing?", False)]
    assert items[0].meta["confidences"] == ["yes", "maybe", "no"]


def test_tut2017_folds_take_labels_from_meta(tmp_path: Path):
    for name in ("a001_0_10", "b002_10_20"):
        _wav(tmp_path / "audio" / f"{name}.wav")
    (tmp_path / "meta.txt").write_text("audio/a001_0_10.wav\tcafe/restaurant\ta001\n"
                                       "audio/b002_10_20.wav\tcity_center\tb002\n")
    setup = tmp_path / "evaluation_setup"
    setup.mkdir()
    (setup / "fold2_test.txt").write_text("audio/b002_10_20.wav\n")
    (setup / "fold2_evaluate.txt").write_text("audio/a001_0_10.wav\tbeach\n")
    assert [(i.id, i.reference, i.meta["location"]) for i in read_tut2017(tmp_path)] == [
        ("a001_0_10", "cafe/restaurant", "a001"), ("b002_10_20", "city_center", "b002")]
    assert [i.reference for i in read_tut2017(tmp_path, fold=2, part="test")] == ["city_center"]
    with pytest.raises(DatasetLayoutError, match="fold2_evaluate.txt.*'beach' here, 'cafe/restaurant' in meta.txt"):
        read_tut2017(tmp_path, fold=2)
    (tmp_path / "meta.txt").unlink()          # a fold file with labels needs no meta.txt; a test list does
    assert [i.reference for i in read_tut2017(tmp_path, fold=2)] == ["beach"]
    with pytest.raises(DatasetLayoutError, match="fold2_test.txt.*scene '' here, 'none' in meta.txt"):
        read_tut2017(tmp_path, fold=2, part="test")


def test_meld_finds_videos_under_the_split_folder(tmp_path: Path):
    video = tmp_path / "dev" / "dev_splits_complete" / "dia3_utt1.mp4"
    video.parent.mkdir(parents=True)
    video.write_bytes(b"")   # the reader only checks that the file is there
    (tmp_path / "dev_sent_emo.csv").write_text(
        "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,StartTime,EndTime\n"
        '1,"Oh, no!\nNo!",Ross,surprise,negative,3,1,1,2,"00:01:02,000","00:01:03,000"\n')
    [item] = read_meld(tmp_path, split="dev")
    assert (item.id, item.reference, item.meta["utterance"], item.meta["sentiment"]) == \
        ("dia3_utt1", "surprise", "Oh, no!\nNo!", "negative")


def test_official_jsonl_rows(tmp_path: Path):
    _wav(tmp_path / "data" / "a.wav")
    rows = [{"audio": "data/a.wav", "gt": "yes", "question": "Is it?", "source": "clothoaqa"}] * 2
    rows.append({"audio": str(tmp_path / "data" / "a.wav"), "gt": "Hallo.", "source": "covost2_en_de_test"})
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    items = read_official_jsonl(tmp_path / "eval.jsonl")
    assert [i.id for i in items] == sorted(["data/a.wav#1", "data/a.wav#2", str(tmp_path / "data" / "a.wav")])
    st = [i for i in items if i.meta["source"].startswith("covost")][0]
    assert (st.meta["src"], st.meta["tgt"], st.reference, st.question) == ("en", "de", "Hallo.", None)
    assert all(i.audio == tmp_path / "data" / "a.wav" for i in items)


def test_word_times_from_a_separate_alignment_folder(tmp_path: Path):
    _wav(tmp_path / "audio" / "spk1" / "u1.wav")
    grid = tmp_path / "aligned" / "spk1" / "u1.TextGrid"
    grid.parent.mkdir(parents=True)
    grid.write_text('File type = "ooTextFile"\nObject class = "TextGrid"\n\nxmin = 0\nxmax = 1\ntiers? <exists>\n'
                    'size = 1\nitem []:\n    item [1]:\n        class = "IntervalTier"\n        name = "phones"\n'
                    '        xmin = 0\n        xmax = 1\n        intervals: size = 1\n        intervals [1]:\n'
                    '            xmin = 0\n            xmax = 1\n            text = "a"\n')
    with pytest.raises(DatasetLayoutError, match="no 'words' tier"):
        read_word_times(tmp_path / "audio", alignments=tmp_path / "aligned")
    assert read_word_times(tmp_path / "audio", alignments=tmp_path / "aligned", tier="phones",
                           lang="en")[0].reference == [("a", 0.0, 1.0)]


def test_librispeech_reads_the_split_folder_itself_when_the_task_names_its_split(tmp_path):
    from workbench.evaluation.readers import read_dataset
    from workbench.evaluation.replicas import build_replicas

    split_folder = build_replicas(tmp_path)["librispeech"]
    assert split_folder.name == "dev-clean"
    assert read_dataset("librispeech", split_folder, split="dev-clean") == read_dataset("librispeech", split_folder)
    assert read_dataset("librispeech", split_folder.parent, split="dev-clean") == read_dataset("librispeech",
                                                                                              split_folder)
