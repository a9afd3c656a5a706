"""The v2 speech items: real sentences × engines/voices × augmentation, plus noise-only clips.

Each kind builds a batch of items of one split from their generators: the plan (sentence, voice,
speed/pitch, augmentation) is drawn from each item's own generator first, then the speech is
synthesised voice by voice (festival reads a whole batch in one process), so an item is the same
whatever the batch it lands in. Kinds and the manifest task they write:

    asr_en     asr   real English sentence, any engine of the split's voices, augmented
    asr_other  asr   de / fr / es / zh: Spanish proverbs (real) or the v1 grammar, espeak-ng
    noise      asr   noise or a procedural scene, no speech: the reference is empty
    srwt_en    srwt  real English sentence with word times: festival (natural prosody) or
                     espeak-ng word by word (v1's exact method)
    srwt_zh    srwt  v1 grammar in Mandarin, word by word
    chat_real  chat  "what does the person say?" on a real English sentence
"""
from __future__ import annotations

import functools
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from workbench.synth import augment, grammar, scenes, speech, text, voices
from workbench.synth.prompts import task_prompt
from workbench.synth.splits import draw
from workbench.synth.tasks import ChatTurn, Item, srwt_reference

# Engine shares of the English voices per split (festival's HTS voice synthesises at ~1× real time,
# so it gets a small share). Test: flite (held-out engine) and festival's ked (held-out speaker) lead.
ENGINE_SHARES = {"train": {"espeak-ng": 0.6, "festival:kal_diphone": 0.25, "festival:cmu_us_slt_arctic_hts": 0.15},
                 "validation": {"flite": 1.0},
                 "test": {"flite": 0.5, "festival": 0.25, "espeak-ng": 0.25}}
SRWT_MAX_WORDS = 16  # word-by-word speech of longer sentences runs past 10 s
KINDS = {"asr_en": "asr", "asr_other": "asr", "noise": "asr", "srwt_en": "srwt", "srwt_zh": "srwt", "chat_real": "chat"}
_QUESTIONS = ("what does the person say?", "What is the person saying?", "Transcribe the speech.")


def variants_for(split: str) -> tuple[str, ...]:
    """espeak-ng variants a split may use: held-out ones for test, the rest otherwise."""
    return voices.TEST_VARIANTS if split == "test" else voices.TRAIN_VARIANTS


def pick_voice(rng: np.random.Generator, language: str, split: str) -> voices.EngineVoice:
    pool = voices.voices_for(language, split)
    if not pool:
        raise voices.MissingToolError(f"no installed voice speaks {language} for {split}: "
                                      + "; ".join(voices.missing_engines()))
    if language != "en":
        return pool[int(rng.integers(len(pool)))]
    shares = {k: v for k, v in ENGINE_SHARES[split].items() if any(p.id.startswith(k) for p in pool)}
    keys = list(shares)
    weights = np.array([shares[k] for k in keys]) / sum(shares.values())
    chosen = keys[int(rng.choice(len(keys), p=weights))]
    group = [p for p in pool if p.id.startswith(chosen)]
    return group[int(rng.integers(len(group)))]


@functools.lru_cache(maxsize=None)
def _sentence_pool(language: str, split: str, max_words: int) -> tuple[text.TextSentence, ...]:
    return tuple(s for s in text.by_split(text.real_sentences(language))[split] if len(s.words) <= max_words)


def pick_sentence(rng: np.random.Generator, language: str, split: str, max_words: int = text.MAX_WORDS) -> text.TextSentence:
    pool = _sentence_pool(language, split, max_words)
    if not pool:
        raise RuntimeError(f"no {language} sentence of the {split} split: is the text package installed?")
    return pool[int(rng.integers(len(pool)))]


@dataclass
class _Plan:
    index: int
    spoken: str
    transcript: str
    words: list[str]
    voice: voices.EngineVoice
    settings: voices.Settings
    augmentation: augment.Augmentation
    rng: np.random.Generator
    fields: dict


def _speak(plans: list[_Plan], want_times: bool = False) -> dict[int, voices.Spoken]:
    """Synthesise every plan, grouped by voice (one festival process per voice)."""
    groups: dict[voices.EngineVoice, list[_Plan]] = defaultdict(list)
    for plan in plans:
        groups[plan.voice].append(plan)
    out = {}
    for voice, group in groups.items():
        spoken = voices.synthesize_many([p.spoken for p in group], voice, [p.settings for p in group],
                                        [p.words for p in group] if want_times else None)
        out |= {p.index: s for p, s in zip(group, spoken)}
    return out


def _pad(rng: np.random.Generator, audio: np.ndarray) -> tuple[np.ndarray, float]:
    """0.10–0.40 s of silence before and after, in whole 10 ms steps; returns audio and the lead."""
    lead, tail = (int(rng.integers(10, 41)) * speech.TIME_STEP for _ in range(2))
    return np.concatenate([speech.silence(lead), audio, speech.silence(tail)]), round(lead, 2)


def _speech_fields(plan: _Plan, spoken: voices.Spoken) -> dict:
    return {"voice": plan.voice.id, "engine": plan.voice.engine, "voice_split": plan.voice.split,
            "speaker": plan.voice.speaker, "settings": spoken.settings.describe(),
            "augmentation": plan.augmentation.describe()} | plan.fields


def _english_plans(rngs: list[np.random.Generator], split: str, max_words: int = text.MAX_WORDS) -> list[_Plan]:
    plans = []
    for i, rng in enumerate(rngs):
        sentence = pick_sentence(rng, "en", split, max_words)
        plans.append(_Plan(i, sentence.spoken, sentence.transcript, sentence.words, pick_voice(rng, "en", split),
                           voices.random_settings(rng), augment.random_augmentation(rng), rng,
                           {"language": "en", "source": sentence.source, "written": sentence.written,
                            "content_key": sentence.key}))
    return plans


def asr_en(rngs: list[np.random.Generator], split: str) -> list[Item]:
    plans = _english_plans(rngs, split)
    spoken = _speak(plans)
    items = []
    for p in plans:
        audio, _ = _pad(p.rng, spoken[p.index].audio)
        items.append(Item("asr", (augment.apply(audio, p.augmentation, p.rng),), p.transcript, (p.fields["content_key"],),
                          task_prompt("asr", lang="en"), fields=_speech_fields(p, spoken[p.index])))
    return items


def asr_other(rngs: list[np.random.Generator], split: str) -> list[Item]:
    plans = []
    for i, rng in enumerate(rngs):
        language = ("de", "fr", "es", "zh")[int(rng.integers(4))]
        real = text.real_sentences(language)
        if real and rng.random() < 0.5:
            s = pick_sentence(rng, language, split)
            said, reference, key, source = s.spoken, s.transcript, s.key, s.source
        else:
            g = draw(rng, split, grammar.sample_sentence, lambda x: x.key)
            said, reference, key, source = g.speech_text(language), g.transcript(language), g.key, "grammar"
        plans.append(_Plan(i, said, reference, reference.split(), pick_voice(rng, language, split),
                           voices.random_settings(rng), augment.random_augmentation(rng), rng,
                           {"language": language, "source": source, "content_key": key}))
    spoken = _speak(plans)
    items = []
    for p in plans:
        audio, _ = _pad(p.rng, spoken[p.index].audio)
        items.append(Item("asr", (augment.apply(audio, p.augmentation, p.rng),), p.transcript, (p.fields["content_key"],),
                          task_prompt("asr", lang=p.fields["language"]), fields=_speech_fields(p, spoken[p.index])))
    return items


def noise(rngs: list[np.random.Generator], split: str) -> list[Item]:
    """No speech under the English ASR prompt: the answer is the empty transcript (just the stop token)."""
    items = []
    for rng in rngs:
        seconds = float(rng.uniform(1.0, 8.0))
        if rng.random() < 0.7:
            audio, what = augment.noise_only(seconds, rng)
            key = f"noise:{what}:{seconds:.2f}"
        else:
            scene = scenes.SCENES[int(rng.integers(len(scenes.SCENES)))]
            layout = draw(rng, split, lambda r: int(r.integers(scenes.N_LAYOUTS)), lambda n, scene=scene: f"{scene}:{n}")
            audio, what, key = scenes.render_scene(scene, layout, rng, seconds), f"{scene} scene", f"{scene}:{layout}"
        items.append(Item("asr", (audio,), "", (key,), task_prompt("asr", lang="en"),
                          fields={"language": "en", "noise_only": True, "augmentation": what}))
    return items


def srwt_en(rngs: list[np.random.Generator], split: str) -> list[Item]:
    """Festival voices give natural sentences with word times; the rest go word by word (v1)."""
    plans = _english_plans(rngs, split, SRWT_MAX_WORDS)
    for p in plans:
        if p.voice.engine != "festival" and p.rng.random() < 0.5:
            festival = [v for v in voices.voices_for("en", split, ("festival",))]
            if festival:
                p.voice = festival[int(p.rng.integers(len(festival)))]
    natural = [p for p in plans if p.voice.engine == "festival"]
    spoken = _speak(natural, want_times=True)
    items = []
    for p in plans:
        timed = None
        if p.index in spoken and spoken[p.index].words:
            audio, lead = _pad(p.rng, spoken[p.index].audio)
            words = tuple(speech.TimedWord(w.word, round(w.start + lead, 2), round(w.end + lead, 2))
                          for w in spoken[p.index].words)
            timed, fields = speech.TimedSpeech(audio, words), _speech_fields(p, spoken[p.index])
        if timed is None:  # espeak-ng word by word (also when festival's words differ from ours)
            variants = variants_for(split)
            voice = speech.Voice("en", variants[int(p.rng.integers(len(variants)))], int(p.rng.integers(135, 196)),
                                 int(p.rng.integers(30, 71)))
            timed = speech.speak_words([(w, w, True) for w in p.words], voice, p.rng)
            fields = {"voice": f"espeak-ng:{voice.espeak_name()}", "engine": "espeak-ng-words",
                      "voice_split": split if split == "test" else "train", "speaker": f"espeak-{voice.variant}",
                      "settings": f"s{voice.speed} p{voice.pitch}", "augmentation": p.augmentation.describe()} | p.fields
        audio = augment.apply(timed.audio, p.augmentation, p.rng)
        words = [{"word": w.word, "start": w.start, "end": w.end} for w in timed.words]
        items.append(Item("srwt", (audio,), srwt_reference(timed, "en"), (p.fields["content_key"],),
                          task_prompt("srwt", lang="en"), fields=fields | {"transcript": p.transcript, "words": words}))
    return items


def srwt_zh(rngs: list[np.random.Generator], split: str) -> list[Item]:
    items = []
    for rng in rngs:
        g = draw(rng, split, grammar.sample_sentence, lambda x: x.key)
        variants = variants_for(split)
        voice = speech.Voice("zh", variants[int(rng.integers(len(variants)))], int(rng.integers(135, 196)),
                             int(rng.integers(30, 71)))
        timed = speech.speak_words(g.words("zh"), voice, rng)
        audio = speech.to_peak(timed.audio, float(rng.uniform(0.3, 0.9)))
        words = [{"word": w.word, "start": w.start, "end": w.end} for w in timed.words]
        items.append(Item("srwt", (audio,), srwt_reference(timed, "zh"), (g.key,), task_prompt("srwt", lang="zh"),
                          fields={"language": "zh", "transcript": g.transcript("zh"), "words": words,
                                  "voice": f"espeak-ng:{voice.espeak_name()}", "engine": "espeak-ng-words"}))
    return items


def chat_real(rngs: list[np.random.Generator], split: str) -> list[Item]:
    plans = _english_plans(rngs, split)
    spoken = _speak(plans)
    items = []
    for p in plans:
        audio, _ = _pad(p.rng, spoken[p.index].audio)
        turn = ChatTurn((0,), _QUESTIONS[int(p.rng.integers(len(_QUESTIONS)))],
                        f'The person says: "{p.fields["written"]}"')
        items.append(Item("chat", (augment.apply(audio, p.augmentation, p.rng),), turn.answer, (p.fields["content_key"],),
                          turns=(turn,), fields={"chat_type": "transcript_real"} | _speech_fields(p, spoken[p.index])))
    return items


BUILDERS = {"asr_en": asr_en, "asr_other": asr_other, "noise": noise, "srwt_en": srwt_en, "srwt_zh": srwt_zh,
            "chat_real": chat_real}
