"""One builder per task: content of the requested split → audio, prompt, reference, fields.

`build_items(task, split, rngs)` returns one `Item` per generator. Items of one task are built
in batches so that MNA can render all its notes in one fluidsynth run; every other task builds
each item from its own generator alone.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from workbench.tags import time_tag

from . import grammar, mixtures, notes, scenes, speech, vocal
from .prompts import task_prompt
from .splits import draw

SAMPLE_RATE = speech.SAMPLE_RATE
LANGUAGE_NAMES = {"en": "English", "de": "German", "fr": "French", "es": "Spanish", "zh": "Mandarin Chinese"}
_ASR_LANGUAGES, _ASR_WEIGHTS = ("en", "de", "fr", "es", "zh"), (0.4, 0.15, 0.15, 0.15, 0.15)
_SCENE_PHRASES = {"street": "traffic on a busy street", "cafe": "people talking in a cafe",
                  "park": "birds and wind in a park", "office": "typing in an office",
                  "train": "a train rolling along", "beach": "waves on a beach"}


@dataclass(frozen=True)
class ChatTurn:
    audio: tuple[int, ...]  # indices into Item.audios of the audios in this user message
    text: str
    answer: str


@dataclass(frozen=True)
class Item:
    task: str
    audios: tuple[np.ndarray, ...]
    reference: str
    content_keys: tuple[str, ...]  # what decided the split (see splits.py)
    prompt: str = ""  # the tags after </audio>; empty for chat, whose prompt needs the audio paths
    turns: tuple[ChatTurn, ...] = ()  # chat only: the last turn's answer is the reference
    fields: dict = field(default_factory=dict)  # task-specific manifest fields


# ---------------------------------------------------------------------------------------------
# Shared pieces.
def _sentence(rng: np.random.Generator, split: str) -> grammar.Sentence:
    return draw(rng, split, grammar.sample_sentence, lambda s: s.key)


def _finish(rng: np.random.Generator, audio: np.ndarray, noise_probability: float = 0.0,
            level: bool = True) -> np.ndarray:
    """Pad with 0.05–0.3 s of silence, set a random peak level, maybe add noise (SNR 15–35 dB)."""
    pads = [speech.silence(rng.uniform(0.05, 0.3)) for _ in range(2)]
    audio = np.concatenate([pads[0], audio, pads[1]]).astype(np.float64)
    if level:
        audio = speech.to_peak(audio, float(rng.uniform(0.3, 0.9)))
    if rng.random() < noise_probability:
        noise = rng.standard_normal(len(audio))
        snr_db = rng.uniform(15, 35)
        power = np.mean(audio ** 2)
        audio = audio + noise * np.sqrt(power / 10 ** (snr_db / 10))
        audio = audio * min(1.0, 0.95 / np.max(np.abs(audio)))
    return np.asarray(audio, dtype=np.float32)


def _voice_field(voice: speech.Voice) -> str:
    return f"{voice.espeak_name()} s{voice.speed} p{voice.pitch}"


def _speech(rng: np.random.Generator, split: str, language: str) -> tuple[np.ndarray, grammar.Sentence, speech.Voice]:
    sentence = _sentence(rng, split)
    voice = speech.random_voice(rng, language)
    audio = speech.synthesize(sentence.speech_text(language), voice)
    return _finish(rng, speech.trim(audio), noise_probability=0.3), sentence, voice


def _mixture(rng: np.random.Generator, split: str) -> tuple[mixtures.Mixture, mixtures.RenderedMixture]:
    mixture = draw(rng, split, mixtures.sample_mixture, lambda m: m.caption())
    return mixture, mixtures.render(mixture, rng)


def _scene(rng: np.random.Generator, split: str) -> tuple[str, int, np.ndarray]:
    scene = scenes.SCENES[rng.integers(len(scenes.SCENES))]
    layout = draw(rng, split, lambda r: int(r.integers(scenes.N_LAYOUTS)), lambda n: f"{scene}:{n}")
    return scene, layout, scenes.render_scene(scene, layout, rng, float(rng.uniform(3.0, 5.0)))


def _emotion(rng: np.random.Generator, split: str) -> tuple[str, grammar.Sentence, np.ndarray]:
    emotion = list(speech.EMOTIONS)[rng.integers(len(speech.EMOTIONS))]
    sentence = _sentence(rng, split)
    audio = speech.speak_with_emotion(sentence.text("en"), emotion, rng)
    return emotion, sentence, _finish(rng, speech.trim(audio), level=False)  # the level is the cue


def srwt_reference(timed: speech.TimedSpeech, language: str) -> str:
    """The target after the prompt's `<|0.00|>`: the official SRWT form, where consecutive time
    tags bound each word and `<|sil|>` fills every silence, e.g.
    `<|sil|><|0.39|> the<|0.71|><|sil|><|0.89|> duck<|1.24|> buys<|1.76|><|sil|><|2.72|>`.
    English words carry their leading space (the same tokens as in transcripts); Mandarin
    characters none."""
    text, position = "", 0.0
    for word in timed.words:
        if word.start > position:
            text += f"<|sil|>{time_tag(word.start)}"
        text += (word.word if language == "zh" else " " + word.word) + time_tag(word.end)
        position = word.end
    return text + f"<|sil|>{time_tag(round(timed.duration, 2))}"


# ---------------------------------------------------------------------------------------------
def _asr(rng: np.random.Generator, split: str) -> Item:
    language = str(rng.choice(_ASR_LANGUAGES, p=_ASR_WEIGHTS))
    audio, sentence, voice = _speech(rng, split, language)
    return Item("asr", (audio,), sentence.transcript(language), (sentence.key,), task_prompt("asr", lang=language),
                fields={"language": language, "voice": _voice_field(voice)})


def _s2tt(rng: np.random.Generator, split: str) -> Item:
    other = ("de", "fr", "es", "zh")[rng.integers(4)]
    source, target = ("en", other) if rng.random() < 0.5 else (other, "en")
    audio, sentence, voice = _speech(rng, split, source)
    return Item("s2tt", (audio,), sentence.text(target), (sentence.key,),
                task_prompt("s2tt", src=source, tgt=target),
                fields={"language": source, "target_language": target, "transcript": sentence.text(source),
                        "voice": _voice_field(voice)})


def _srwt(rng: np.random.Generator, split: str) -> Item:
    language = "en" if rng.random() < 0.6 else "zh"
    sentence = _sentence(rng, split)
    voice = speech.random_voice(rng, language)
    timed = speech.speak_words(sentence.words(language), voice, rng)
    audio = speech.to_peak(timed.audio, float(rng.uniform(0.3, 0.9)))
    words = [{"word": w.word, "start": w.start, "end": w.end} for w in timed.words]
    return Item("srwt", (audio,), srwt_reference(timed, language), (sentence.key,),
                task_prompt("srwt", lang=language),
                fields={"language": language, "transcript": sentence.transcript(language), "words": words,
                        "voice": _voice_field(voice)})


def _aac(rng: np.random.Generator, split: str) -> Item:
    mixture, rendered = _mixture(rng, split)
    return Item("aac", (rendered.audio,), mixture.caption(), (mixture.caption(),), task_prompt("aac"),
                fields={"events": list(mixture.events())})


def _aqa(rng: np.random.Generator, split: str) -> Item:
    mixture, rendered = _mixture(rng, split)
    question = mixtures.sample_question(mixture, rendered, rng)
    return Item("aqa", (rendered.audio,), question.answer, (mixture.caption(),),
                task_prompt("aqa", question=question.text),
                fields={"question": question.text, "question_type": question.kind, "caption": mixture.caption()})


def _asc(rng: np.random.Generator, split: str) -> Item:
    scene, layout, audio = _scene(rng, split)
    return Item("asc", (audio,), scene, (f"{scene}:{layout}",), task_prompt("asc"), fields={"label": scene})


def _ser(rng: np.random.Generator, split: str) -> Item:
    emotion, sentence, audio = _emotion(rng, split)
    return Item("ser", (audio,), emotion, (sentence.key,), task_prompt("ser"),
                fields={"label": emotion, "transcript": sentence.text("en")})


def _vsc(rng: np.random.Generator, split: str) -> Item:
    label = vocal.LABELS[rng.integers(len(vocal.LABELS))]
    recipe = draw(rng, split, lambda r: vocal.sample_vocal(r, label), lambda v: v.key)
    return Item("vsc", (vocal.render_vocal(recipe, rng),), label, (recipe.key,), task_prompt("vsc"),
                fields={"label": label})


def _mna_batch(rngs: list[np.random.Generator], split: str) -> list[Item]:
    planned = []
    for rng in rngs:
        family = list(notes.FAMILIES)[rng.integers(len(notes.FAMILIES))]
        planned.append(draw(rng, split, lambda r, family=family: notes.sample_note(r, family), lambda n: n.key))
    items = []
    for note, clip in zip(planned, notes.render_notes(planned)):
        sonic = notes.qualities(clip)
        items.append(Item("mna", (clip,), notes.note_reference(note, sonic), (note.key,), task_prompt("mna"),
                          fields={"pitch": note.pitch, "velocity": note.velocity, "instrument": note.family,
                                  "program": note.program, "sonic": list(sonic)}))
    return items


# ---------------------------------------------------------------------------------------------
# Chat: Qwen-Audio-Chat style SFT conversations over the same content.
def _describe(rng: np.random.Generator, split: str, kind: str) -> tuple[np.ndarray, str, str]:
    """(audio, noun phrase for "the recording is of …", content key) of a speech, mixture or scene clip."""
    if kind == "speech":
        audio, sentence, _ = _speech(rng, split, "en")
        return audio, "a person speaking", sentence.key
    if kind == "mixture":
        mixture, rendered = _mixture(rng, split)
        return rendered.audio, " and ".join(mixtures.EVENTS[e].phrase for e in mixture.events()), mixture.caption()
    scene, layout, audio = _scene(rng, split)
    return audio, _SCENE_PHRASES[scene], f"{scene}:{layout}"


def _chat(rng: np.random.Generator, split: str) -> Item:
    kind = str(rng.choice(["transcript", "grounding", "caption", "emotion", "language", "compare"],
                          p=[0.15, 0.25, 0.15, 0.1, 0.1, 0.25]))
    if kind == "transcript":
        audio, sentence, _ = _speech(rng, split, "en")
        question = ("what does the person say?", "What is the person saying?", "Transcribe the speech.")[rng.integers(3)]
        turn = ChatTurn((0,), question, f'The person says: "{sentence.transcript("en")}".')
        return Item("chat", (audio,), turn.answer, (sentence.key,), turns=(turn,), fields={"chat_type": kind})
    if kind == "grounding":
        sentence = _sentence(rng, split)
        timed = speech.speak_words(sentence.words("en"), speech.random_voice(rng, "en"), rng)
        words = timed.words
        spans = [(i, n) for n in (1, 2) for i in range(len(words) - n + 1)
                 if _phrase(words[i:i + n]) != "the" and _count_phrase(words, _phrase(words[i:i + n])) == 1]
        start, n = spans[rng.integers(len(spans))]
        phrase = _phrase(words[start:start + n])
        answer = (f'The word "{phrase}" starts at {time_tag(words[start].start)} seconds and ends at '
                  f'{time_tag(words[start + n - 1].end)} seconds.')
        ask = ChatTurn((), f'Find the start time and end time of the word "{phrase}"', answer)
        audio = speech.to_peak(timed.audio, float(rng.uniform(0.3, 0.9)))
        if rng.random() < 0.5:  # after a first turn that asked for the transcript, as in the SFT sample
            first = ChatTurn((0,), "what does the person say?", f'The person says: "{sentence.transcript("en")}".')
            turns = (first, ask)
        else:
            turns = (ChatTurn((0,), ask.text, answer),)
        return Item("chat", (audio,), answer, (sentence.key,), turns=turns,
                    fields={"chat_type": kind, "words": [{"word": w.word, "start": w.start, "end": w.end}
                                                         for w in words]})
    if kind == "caption":
        mixture, rendered = _mixture(rng, split)
        question = ("What can you hear?", "Describe the sound.", "What is happening in this recording?")[rng.integers(3)]
        turn = ChatTurn((0,), question, mixture.caption())
        return Item("chat", (rendered.audio,), turn.answer, (mixture.caption(),), turns=(turn,), fields={"chat_type": kind})
    if kind == "emotion":
        emotion, sentence, audio = _emotion(rng, split)
        word = {"neutral": "calm", "joy": "happy", "sadness": "sad", "anger": "angry"}[emotion]
        turn = ChatTurn((0,), "How does the speaker sound?", f"The speaker sounds {word}.")
        return Item("chat", (audio,), turn.answer, (sentence.key,), turns=(turn,),
                    fields={"chat_type": kind, "label": emotion})
    if kind == "language":
        language = str(rng.choice(_ASR_LANGUAGES))
        audio, sentence, _ = _speech(rng, split, language)
        turn = ChatTurn((0,), "What language is the person speaking?", f"The person is speaking {LANGUAGE_NAMES[language]}.")
        return Item("chat", (audio,), turn.answer, (sentence.key,), turns=(turn,),
                    fields={"chat_type": kind, "language": language})
    kinds = rng.choice(["speech", "mixture", "scene"], size=2, replace=False)
    (first, first_phrase, first_key), (second, second_phrase, second_key) = (_describe(rng, split, k) for k in kinds)
    turn = ChatTurn((0, 1), "what is the difference of the two recordings?",
                    f"The first recording is of {first_phrase}, and the second recording is of {second_phrase}.")
    return Item("chat", (first, second), turn.answer, (first_key, second_key), turns=(turn,), fields={"chat_type": kind})


def _phrase(words: tuple[speech.TimedWord, ...]) -> str:
    return " ".join(w.word for w in words)


def _count_phrase(words: tuple[speech.TimedWord, ...], phrase: str) -> int:
    n = len(phrase.split())
    return sum(_phrase(words[i:i + n]) == phrase for i in range(len(words) - n + 1))


_SINGLE = {"asr": _asr, "s2tt": _s2tt, "srwt": _srwt, "aac": _aac, "aqa": _aqa, "asc": _asc, "ser": _ser,
           "vsc": _vsc, "chat": _chat}


def build_items(task: str, split: str, rngs: list[np.random.Generator]) -> list[Item]:
    """One item of `task` from `split`'s content per generator."""
    if task == "mna":
        return _mna_batch(rngs, split)
    if task not in _SINGLE:
        raise ValueError(f"unknown task {task!r}; tasks: {', '.join([*_SINGLE, 'mna'])}")
    return [_SINGLE[task](rng, split) for rng in rngs]
