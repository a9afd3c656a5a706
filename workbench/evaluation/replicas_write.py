"""Writers of the tiny replicas: each lays out a few clips exactly as its dataset is distributed
(file names, folder nesting, table headers, separators), so a reader test on a replica is a test
against the real layout. `replicas.py` decides which clips go where; this module only writes.

Audio is written deterministically: FLAC/WAV through soundfile (16-bit), MP3 and MP4 through
ffmpeg with `-fflags +bitexact` and single-threaded encoders, so the same ffmpeg writes the same bytes.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

SAMPLE_RATE = 16_000


@dataclass(frozen=True)
class Clip:
    """One replica item before it is laid out: its audio, where it came from, its labels."""

    origin: str                      # "synthetic asr-test-000004", "demo speech_en", "real 1272-128104-0000.flac"
    audio: np.ndarray | None         # float32, 16 kHz mono (None when copy_from is set)
    fields: dict = field(default_factory=dict)  # what the writer needs: transcript, label, words…
    copy_from: Path | None = None    # a file to copy byte for byte instead of encoding `audio`


# ---------------------------------------------------------------------------------------------
# Audio.
def write_audio(path: Path, clip: Clip, kind: str = "wav") -> None:
    """`clip` as a 16-bit wav or flac, an mp3 (Common Voice) or an mp4 with a blank video (MELD)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if clip.copy_from is not None:
        shutil.copyfile(clip.copy_from, path)
    elif kind in ("wav", "flac"):
        sf.write(path, clip.audio, SAMPLE_RATE, subtype="PCM_16", format=kind.upper())
    elif kind == "mp3":
        _ffmpeg(_pcm_input(), ["-c:a", "libmp3lame", "-b:a", "64k", "-ar", "32000"], clip.audio, path)
    elif kind == "mp4":
        seconds = f"{len(clip.audio) / SAMPLE_RATE:.3f}"
        video = ["-f", "lavfi", "-t", seconds, "-i", "color=c=black:s=16x16:r=5"]
        _ffmpeg(video + _pcm_input(), ["-map", "0:v", "-map", "1:a", "-c:v", "libx264", "-pix_fmt", "yuv420p",
                                       "-c:a", "aac", "-b:a", "192k", "-flags:v", "+bitexact"], clip.audio, path)
    else:
        raise ValueError(f"kind={kind!r}: write wav, flac, mp3 or mp4")


def _pcm_input() -> list[str]:
    return ["-f", "s16le", "-ar", str(SAMPLE_RATE), "-ac", "1", "-i", "-"]


def _ffmpeg(inputs: list[str], outputs: list[str], audio: np.ndarray, path: Path) -> None:
    if shutil.which("ffmpeg") is None:
        raise FileNotFoundError("ffmpeg is not installed; the CoVoST and MELD replicas need it: apt-get install ffmpeg")
    pcm = (np.clip(audio, -1, 32767 / 32768) * 32768).astype("<i2").tobytes()
    command = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-threads", "1", *inputs,
               *outputs, "-ac", "1", "-threads", "1", "-map_metadata", "-1", "-fflags", "+bitexact",
               "-flags:a", "+bitexact", str(path)]
    result = subprocess.run(command, input=pcm, capture_output=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"ffmpeg could not write {path}: {result.stderr.decode(errors='replace').strip()}")


def _lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def _csv(path: Path, header: list[str], rows: list[list], **options) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n", **options)
    writer.writerows([header, *rows])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(buffer.getvalue(), encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# ASR.
def librispeech(split_dir: Path, utterances: list[tuple[str, str, Clip]]) -> None:
    """(SPEAKER-CHAPTER-UTT, TRANSCRIPT, clip) → SPEAKER/CHAPTER/*.flac + SPEAKER-CHAPTER.trans.txt."""
    chapters: dict[tuple[str, str], list[str]] = {}
    for utt, transcript, clip in sorted(utterances, key=lambda u: u[0]):
        speaker, chapter, _ = utt.split("-")
        write_audio(split_dir / speaker / chapter / f"{utt}.flac", clip, "flac")
        chapters.setdefault((speaker, chapter), []).append(f"{utt} {transcript}")
    for (speaker, chapter), lines in chapters.items():
        _lines(split_dir / speaker / chapter / f"{speaker}-{chapter}.trans.txt", lines)


def aishell1(base: Path, split: str, utterances: list[tuple[str, str, Clip]]) -> None:
    """(BAC009SxxxxWyyyy, hanzi, clip) → wav/{split}/Sxxxx/*.wav + the transcript, one space between characters."""
    for utt, _, clip in utterances:
        write_audio(base / "wav" / split / utt[6:11] / f"{utt}.wav", clip)
    _lines(base / "transcript" / "aishell_transcript_v0.8.txt",
           [f"{utt} {' '.join(text)}" for utt, text, _ in sorted(utterances, key=lambda u: u[0])])


def aishell2(folder: Path, utterances: list[tuple[str, str, Clip]]) -> None:
    """(IT0xxxW0yyy, transcript, clip) → wav/T0xxx/*.wav, wav.scp and trans.txt (tab-separated)."""
    rows = sorted(utterances, key=lambda u: u[0])
    for utt, _, clip in rows:
        write_audio(folder / "wav" / utt[1:6] / f"{utt}.wav", clip)
    _lines(folder / "wav.scp", [f"{utt}\twav/{utt[1:6]}/{utt}.wav" for utt, _, _ in rows])
    _lines(folder / "trans.txt", [f"{utt}\t{text}" for utt, text, _ in rows])


def covost2(folder: Path, src: str, tgt: str, split: str, rows: list[tuple[str, Clip]]) -> None:
    """(clip name, clip with sentence/translation/voice) → clips/*.mp3 + covost_v2.{src}_{tgt}.{split}.tsv,
    written as get_covost_splits.py writes it (pandas: tab, quoting off, backslash escapes)."""
    table = []
    for name, clip in rows:
        write_audio(folder / "clips" / name, clip, "mp3")
        client = hashlib.sha512(clip.fields["voice"].encode()).hexdigest()  # Common Voice's ids: 128 hex digits
        table.append([name, clip.fields["sentence"], clip.fields["translation"], client])
    _csv(folder / f"covost_v2.{src}_{tgt}.{split}.tsv", ["path", "sentence", "translation", "client_id"], table,
         delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\")


def word_times(folder: Path, utterances: list[tuple[str, Clip]]) -> None:
    """(id, clip with words [(word, start, end)] and duration) → ID.wav + ID.TextGrid (the Montreal
    Forced Aligner's long format, a 'words' tier with empty intervals for silence) + word_times.json."""
    for utt, clip in utterances:
        write_audio(folder / f"{utt}.wav", clip)
        (folder / f"{utt}.TextGrid").write_text(_textgrid(clip.fields["words"], len(clip.audio) / SAMPLE_RATE),
                                                encoding="utf-8")
    times = {utt: [[w, s, e] for w, s, e in clip.fields["words"]]
             for utt, clip in sorted(utterances, key=lambda u: u[0])}
    (folder / "word_times.json").write_text(json.dumps(times, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


def _textgrid(words: list[tuple[str, float, float]], duration: float) -> str:
    intervals, position = [], 0.0
    for word, start, end in words:
        if start > position:
            intervals.append((position, start, ""))
        intervals.append((start, end, word))
        position = end
    if duration > position:
        intervals.append((position, duration, ""))
    head = ['File type = "ooTextFile"', 'Object class = "TextGrid"', "", "xmin = 0", f"xmax = {duration:g}",
            "tiers? <exists>", "size = 1", "item []:", "    item [1]:", '        class = "IntervalTier"',
            '        name = "words"', "        xmin = 0", f"        xmax = {duration:g}",
            f"        intervals: size = {len(intervals)}"]
    body = [line for n, (start, end, text) in enumerate(intervals, 1)
            for line in (f"        intervals [{n}]:", f"            xmin = {start:g}", f"            xmax = {end:g}",
                         f'            text = "{text}"')]
    return "\n".join(head + body) + "\n"


# ---------------------------------------------------------------------------------------------
# Sound, music, paralinguistics.
def clotho(root: Path, split: str, rows: list[tuple[str, list[str], Clip]]) -> None:
    """(file name, 5 captions, clip) → {split}/*.wav + clotho_captions_{split}.csv."""
    for name, _, clip in rows:
        write_audio(root / split / name, clip)
    _csv(root / f"clotho_captions_{split}.csv", ["file_name", *(f"caption_{n}" for n in range(1, 6))],
         [[name, *captions] for name, captions, _ in rows])


def clotho_aqa(root: Path, split: str, rows: list[tuple[str, str, list[tuple[str, str]], Clip]]) -> None:
    """(file name, question, [(answer, confidence)…], clip) → audio_files/*.wav + clotho_aqa_{split}.csv,
    one row per answer."""
    for name, _, _, clip in rows:
        write_audio(root / "audio_files" / name, clip)
    _csv(root / f"clotho_aqa_{split}.csv", ["file_name", "QuestionText", "answer", "confidence"],
         [[name, question, answer, confidence]
          for name, question, answers, _ in rows for answer, confidence in answers])


def cochlscene(split_dir: Path, rows: list[tuple[str, str, Clip]]) -> None:
    """(class name, file name, clip) → {Class}/*.wav."""
    for label, name, clip in rows:
        write_audio(split_dir / label / name, clip)


def tut2017(root: Path, rows: list[tuple[str, str, str, Clip]]) -> None:
    """(file name, scene, location, clip) → audio/*.wav, meta.txt and evaluation_setup/fold1_{evaluate,test}.txt."""
    for name, _, _, clip in rows:
        write_audio(root / "audio" / name, clip)
    _lines(root / "meta.txt", [f"audio/{name}\t{scene}\t{location}" for name, scene, location, _ in rows])
    _lines(root / "evaluation_setup" / "fold1_evaluate.txt", [f"audio/{name}\t{scene}" for name, scene, _, _ in rows])
    _lines(root / "evaluation_setup" / "fold1_test.txt", [f"audio/{name}" for name, _, _, _ in rows])


MELD_COLUMNS = ["Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID", "Season",
                "Episode", "StartTime", "EndTime"]


def meld(root: Path, split: str, video_dir: str, rows: list[tuple[int, int, Clip]]) -> None:
    """(dialogue, utterance, clip with utterance/speaker/emotion/sentiment) → {video_dir}/dia{D}_utt{U}.mp4 +
    {split}_sent_emo.csv."""
    table = []
    for number, (dialogue, utterance, clip) in enumerate(rows, 1):
        write_audio(root / video_dir / f"dia{dialogue}_utt{utterance}.mp4", clip, "mp4")
        f = clip.fields
        table.append([number, f["utterance"], f["speaker"], f["emotion"], f["sentiment"], dialogue, utterance, 1, 1,
                      "00:00:00,000", _srt_time(len(clip.audio) / SAMPLE_RATE)])
    _csv(root / f"{split}_sent_emo.csv", MELD_COLUMNS, table)


def _srt_time(seconds: float) -> str:
    millis = round(seconds * 1000)
    return f"{millis // 3_600_000:02d}:{millis // 60_000 % 60:02d}:{millis // 1000 % 60:02d},{millis % 1000:03d}"


def vocalsound(root: Path, split_file: str, classes: list[tuple[str, str, str]],
               rows: list[tuple[str, str, Clip]]) -> None:
    """(file name, AudioSet id, clip) → audio_16k/*.wav + datafiles/{split_file}.json + class_labels_indices_vs.csv.
    The JSON's paths are absolute paths of another machine, as in the release (readers look files up by name)."""
    for name, _, clip in rows:
        write_audio(root / "audio_16k" / name, clip)
    data = {"data": [{"wav": f"/data/vocalsound/audio_16k/{name}", "labels": mid} for name, mid, _ in rows]}
    (root / "datafiles").mkdir(parents=True, exist_ok=True)
    (root / "datafiles" / f"{split_file}.json").write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    _csv(root / "class_labels_indices_vs.csv", ["index", "mid", "display_name"],
         [[n, mid, name] for n, (mid, _, name) in enumerate(classes)])


def nsynth(folder: Path, notes: list[tuple[str, dict, Clip]]) -> None:
    """(note_str, examples.json entry, clip) → audio/{note_str}.wav + examples.json."""
    for note, _, clip in notes:
        write_audio(folder / "audio" / f"{note}.wav", clip)
    examples = {note: entry for note, entry, _ in notes}
    (folder / "examples.json").write_text(json.dumps(examples, indent=2) + "\n", encoding="utf-8")


def official_jsonl(path: Path, rows: list[dict]) -> None:
    """One JSON object per line, as the official eval_audio scripts read them."""
    _lines(path, [json.dumps(row, ensure_ascii=False) for row in rows])
