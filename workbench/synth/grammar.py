"""A small parallel grammar: one sentence, exact in English, German, French, Spanish and Mandarin.

Each sentence is built from a template and slot fillers that carry their own translations and
agreement features (German gender and case, French and Spanish gender, the Mandarin word and its
pinyin), so every translation is exact by construction and a tiny model can learn the mapping.
The vocabulary is deliberately small (about 70 English words, sentences of 3–8 words).

Written forms (`Sentence.written`) are the `<|itn|>` style of the translation targets: sentence
case and final punctuation. `transcript()` gives the `<|wo_itn|>` style of the ASR targets:
lowercase, no punctuation, Mandarin without spaces. Mandarin text is hanzi; espeak-ng reads the
pinyin with tone digits (`Sentence.pinyin`) through its `cmn-latn-pinyin` voice, because the plain
`cmn` voice reads tone digits as English numbers.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

LANGUAGES = ("en", "de", "fr", "es", "zh")

# (en, de, de gender, fr with article, fr gender, es with article, es gender, hanzi, pinyin)
# French and Spanish carry their article because French elides it ("l'oiseau").
SUBJECTS = (
    ("dog", "Hund", "m", "le chien", "m", "el perro", "m", "狗", "gou3"),
    ("cat", "Katze", "f", "le chat", "m", "el gato", "m", "猫", "mao1"),
    ("horse", "Pferd", "n", "le cheval", "m", "el caballo", "m", "马", "ma3"),
    ("cow", "Kuh", "f", "la vache", "f", "la vaca", "f", "牛", "niu2"),
    ("mouse", "Maus", "f", "la souris", "f", "el ratón", "m", "老鼠", "lao3 shu3"),
    ("pig", "Schwein", "n", "le cochon", "m", "el cerdo", "m", "猪", "zhu1"),
    ("duck", "Ente", "f", "le canard", "m", "el pato", "m", "鸭子", "ya1 zi5"),
    ("fox", "Fuchs", "m", "le renard", "m", "el zorro", "m", "狐狸", "hu2 li5"),
    ("rabbit", "Hase", "m", "le lapin", "m", "el conejo", "m", "兔子", "tu4 zi5"),
    ("sheep", "Schaf", "n", "le mouton", "m", "la oveja", "f", "羊", "yang2"),
    ("goat", "Ziege", "f", "la chèvre", "f", "la cabra", "f", "山羊", "shan1 yang2"),
    ("bird", "Vogel", "m", "l'oiseau", "m", "el pájaro", "m", "鸟", "niao3"),
    ("bear", "Bär", "m", "l'ours", "m", "el oso", "m", "熊", "xiong2"),
)
OBJECTS = (
    ("car", "Auto", "n", "la voiture", "f", "el coche", "m", "车", "che1"),
    ("house", "Haus", "n", "la maison", "f", "la casa", "f", "房子", "fang2 zi5"),
    ("ball", "Ball", "m", "le ballon", "m", "la pelota", "f", "球", "qiu2"),
    ("book", "Buch", "n", "le livre", "m", "el libro", "m", "书", "shu1"),
    ("door", "Tür", "f", "la porte", "f", "la puerta", "f", "门", "men2"),
    ("table", "Tisch", "m", "la table", "f", "la mesa", "f", "桌子", "zhuo1 zi5"),
    ("flower", "Blume", "f", "la fleur", "f", "la flor", "f", "花", "hua1"),
    ("hat", "Hut", "m", "le chapeau", "m", "el sombrero", "m", "帽子", "mao4 zi5"),
    ("bag", "Tasche", "f", "le sac", "m", "la bolsa", "f", "包", "bao1"),
    ("cup", "Tasse", "f", "la tasse", "f", "la taza", "f", "杯子", "bei1 zi5"),
    ("box", "Kiste", "f", "la boîte", "f", "la caja", "f", "盒子", "he2 zi5"),
    ("apple", "Apfel", "m", "la pomme", "f", "la manzana", "f", "苹果", "ping2 guo3"),
    ("key", "Schlüssel", "m", "la clé", "f", "la llave", "f", "钥匙", "yao4 shi5"),
    ("chair", "Stuhl", "m", "la chaise", "f", "la silla", "f", "椅子", "yi3 zi5"),
)
# (en, de stem, fr m, fr f, es m, es f, es copula, zh attributive, pinyin, zh predicate, pinyin)
# All French and Spanish adjectives here follow the noun; states take "estar", colours "ser".
ADJECTIVES = (
    ("red", "rot", "rouge", "rouge", "rojo", "roja", "es", "红色的", "hong2 se4 de5", "是红色的", "shi4 hong2 se4 de5"),
    ("black", "schwarz", "noir", "noire", "negro", "negra", "es", "黑色的", "hei1 se4 de5", "是黑色的", "shi4 hei1 se4 de5"),
    ("white", "weiß", "blanc", "blanche", "blanco", "blanca", "es", "白色的", "bai2 se4 de5", "是白色的", "shi4 bai2 se4 de5"),
    ("green", "grün", "vert", "verte", "verde", "verde", "es", "绿色的", "lv4 se4 de5", "是绿色的", "shi4 lv4 se4 de5"),
    ("blue", "blau", "bleu", "bleue", "azul", "azul", "es", "蓝色的", "lan2 se4 de5", "是蓝色的", "shi4 lan2 se4 de5"),
    ("brown", "braun", "brun", "brune", "marrón", "marrón", "es", "棕色的", "zong1 se4 de5", "是棕色的", "shi4 zong1 se4 de5"),
    ("happy", "glücklich", "heureux", "heureuse", "feliz", "feliz", "está", "快乐的", "kuai4 le4 de5", "很快乐", "hen3 kuai4 le4"),
    ("quiet", "ruhig", "calme", "calme", "tranquilo", "tranquila", "está", "安静的", "an1 jing4 de5", "很安静", "hen3 an1 jing4"),
    ("tired", "müde", "fatigué", "fatiguée", "cansado", "cansada", "está", "疲倦的", "pi2 juan4 de5", "很累", "hen3 lei4"),
    ("hungry", "hungrig", "affamé", "affamée", "hambriento", "hambrienta", "está", "饥饿的", "ji1 e4 de5", "很饿", "hen3 e4"),
)
# (en, de, fr, es, zh, pinyin) in the third person singular; Mandarin uses the progressive 在.
INTRANSITIVE = (
    ("sleeps", "schläft", "dort", "duerme", "在睡觉", "zai4 shui4 jiao4"),
    ("runs", "läuft", "court", "corre", "在跑步", "zai4 pao3 bu4"),
    ("sings", "singt", "chante", "canta", "在唱歌", "zai4 chang4 ge1"),
    ("eats", "isst", "mange", "come", "在吃东西", "zai4 chi1 dong1 xi5"),
    ("waits", "wartet", "attend", "espera", "在等待", "zai4 deng3 dai4"),
    ("plays", "spielt", "joue", "juega", "在玩", "zai4 wan2"),
    ("laughs", "lacht", "rit", "ríe", "在笑", "zai4 xiao4"),
    ("swims", "schwimmt", "nage", "nada", "在游泳", "zai4 you2 yong3"),
    ("dances", "tanzt", "danse", "baila", "在跳舞", "zai4 tiao4 wu3"),
)
TRANSITIVE = (
    ("sees", "sieht", "voit", "ve", "看见", "kan4 jian4"),
    ("wants", "will", "veut", "quiere", "想要", "xiang3 yao4"),
    ("has", "hat", "a", "tiene", "有", "you3"),
    ("finds", "findet", "trouve", "encuentra", "找到", "zhao3 dao4"),
    ("carries", "trägt", "porte", "lleva", "拿着", "na2 zhe5"),
    ("buys", "kauft", "achète", "compra", "买", "mai3"),
    ("pushes", "schiebt", "pousse", "empuja", "推", "tui1"),
)
# (en, de, fr, es, zh, pinyin); Mandarin puts the time word before the verb.
TIMES = (
    ("today", "heute", "aujourd'hui", "hoy", "今天", "jin1 tian1"),
    ("now", "jetzt", "maintenant", "ahora", "现在", "xian4 zai4"),
    ("again", "wieder", "encore", "otra vez", "又", "you4"),
    ("every day", "jeden Tag", "chaque jour", "cada día", "每天", "mei3 tian1"),
)
_AND = {"en": "and", "de": "und", "fr": "et", "es": "y"}
_GERMAN_ARTICLE = {("nom", "m"): "der", ("nom", "f"): "die", ("nom", "n"): "das",
                   ("acc", "m"): "den", ("acc", "f"): "die", ("acc", "n"): "das"}

# A template is a list of clauses; a clause is (kind, with subject adjective, with object adjective
# or time). Kinds: "vi" (intransitive), "vit" (intransitive + time), "cop" (subject is adjective),
# "vt" (transitive).
TEMPLATES = (
    (("vi", False, False),),
    (("vi", True, False),),
    (("vit", False, False),),
    (("cop", False, False),),
    (("vit", True, False),),
    (("vt", False, False),),
    (("vt", True, False),),
    (("vt", False, True),),
    (("vt", True, True),),
    (("vi", False, False), ("vi", False, False)),
    (("vi", True, False), ("vi", False, False)),
)


@dataclass(frozen=True)
class Sentence:
    """One sentence in every language. `key` (the English written form) decides its split."""
    written: tuple[tuple[str, str], ...]  # (language, text in the itn style), LANGUAGES order
    zh_words: tuple[tuple[str, str], ...]  # Mandarin (hanzi word, pinyin) in order, punctuation as-is

    @property
    def key(self) -> str:
        return self.text("en")

    def text(self, language: str) -> str:
        """The written form (sentence case, final punctuation): the `<|itn|>` target."""
        return dict(self.written)[_checked(language)]

    def transcript(self, language: str) -> str:
        """The `<|wo_itn|>` form: lowercase, no punctuation; Mandarin hanzi without spaces."""
        if _checked(language) == "zh":
            return "".join(h for h, _ in self.zh_words if h not in _ZH_PUNCTUATION)
        return " ".join(re.sub(r"[.,!?]", "", self.text(language)).lower().split())

    def words(self, language: str) -> list[tuple[str, str, bool]]:
        """(word as written in the transcript, text for espeak-ng, whether it begins a word) for
        word-by-word synthesis. English gives words; Mandarin gives single characters with their
        syllable (the unit of the official Mandarin word-timestamp data), and only the first
        character of a word begins one."""
        if _checked(language) == "zh":
            chars: list[tuple[str, str, bool]] = []
            for hanzi, pinyin in self.zh_words:
                if hanzi in _ZH_PUNCTUATION:
                    continue
                syllables = pinyin.split()
                if len(syllables) != len(hanzi):
                    raise AssertionError(f"{hanzi!r} has {len(hanzi)} characters but pinyin {pinyin!r}")
                chars += [(char, syllable, i == 0) for i, (char, syllable) in enumerate(zip(hanzi, syllables))]
            return chars
        return [(w, w, True) for w in self.transcript(language).split()]

    def speech_text(self, language: str) -> str:
        """What espeak-ng reads: the written form, or pinyin with tone digits for Mandarin."""
        if _checked(language) == "zh":
            return " ".join(p for _, p in self.zh_words)
        return self.text(language)


_ZH_PUNCTUATION = {"，": ",", "。": "."}  # hanzi punctuation → what espeak-ng reads as a pause


def _checked(language: str) -> str:
    if language not in LANGUAGES:
        raise ValueError(f"language {language!r} is not in the grammar; use one of {', '.join(LANGUAGES)}")
    return language


def _adjective(adj: tuple, language: str, gender: str, case: str = "nom") -> str:
    if language == "de":  # weak declension after the definite article
        return adj[1] + ("en" if (case, gender) == ("acc", "m") else "e")
    if language == "fr":
        return adj[2] if gender == "m" else adj[3]
    return adj[4] if gender == "m" else adj[5]


def _noun_phrase(noun: tuple, adj: tuple | None, language: str, case: str) -> str:
    if language == "en":
        return " ".join(["the", *([adj[0]] if adj else []), noun[0]])
    if language == "de":
        article = _GERMAN_ARTICLE[(case, noun[2])]
        return " ".join([article, *([_adjective(adj, "de", noun[2], case)] if adj else []), noun[1]])
    with_article, gender = (noun[3], noun[4]) if language == "fr" else (noun[5], noun[6])
    return with_article + (" " + _adjective(adj, language, gender) if adj else "")


def _clause(language: str, kind: str, subject: tuple, s_adj: tuple | None, extra: tuple | None,
            verb: tuple | None, obj: tuple | None) -> str:
    column = {"en": 0, "de": 1, "fr": 2, "es": 3}[language]
    s = _noun_phrase(subject, s_adj, language, "nom")
    if kind == "cop":  # extra is the predicate adjective
        if language == "en":
            return f"{s} is {extra[0]}"
        if language == "de":
            return f"{s} ist {extra[1]}"
        if language == "fr":
            return f"{s} est {_adjective(extra, 'fr', subject[4])}"
        return f"{s} {extra[6]} {_adjective(extra, 'es', subject[6])}"
    if kind == "vi":
        return f"{s} {verb[column]}"
    if kind == "vit":  # extra is the time adverb
        return f"{s} {verb[column]} {extra[column]}"
    return f"{s} {verb[column]} {_noun_phrase(obj, extra, language, 'acc')}"


def _zh_clause(kind: str, subject: tuple, s_adj: tuple | None, extra: tuple | None,
               verb: tuple | None, obj: tuple | None) -> list[tuple[str, str]]:
    words = ([(s_adj[7], s_adj[8])] if s_adj else []) + [(subject[7], subject[8])]
    if kind == "cop":
        return words + [(extra[9], extra[10])]
    if kind == "vi":
        return words + [(verb[4], verb[5])]
    if kind == "vit":
        return words + [(extra[4], extra[5]), (verb[4], verb[5])]
    return words + [(verb[4], verb[5])] + ([(extra[7], extra[8])] if extra else []) + [(obj[7], obj[8])]


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def sample_sentence(rng: np.random.Generator) -> Sentence:
    """One sentence of a random template with random fillers (3–8 English words)."""
    template = TEMPLATES[rng.integers(len(TEMPLATES))]
    clauses = []
    used_subjects: set[int] = set()
    for kind, with_s_adj, with_extra in template:
        subject_index = int(rng.choice([i for i in range(len(SUBJECTS)) if i not in used_subjects]))
        used_subjects.add(subject_index)
        subject = SUBJECTS[subject_index]
        s_adj = ADJECTIVES[rng.integers(len(ADJECTIVES))] if with_s_adj else None
        verb = obj = extra = None
        if kind == "cop":
            extra = ADJECTIVES[rng.integers(len(ADJECTIVES))]
        elif kind in ("vi", "vit"):
            verb = INTRANSITIVE[rng.integers(len(INTRANSITIVE))]
            extra = TIMES[rng.integers(len(TIMES))] if kind == "vit" else None
        else:
            verb = TRANSITIVE[rng.integers(len(TRANSITIVE))]
            obj = OBJECTS[rng.integers(len(OBJECTS))]
            extra = ADJECTIVES[rng.integers(len(ADJECTIVES))] if with_extra else None
        clauses.append((kind, subject, s_adj, extra, verb, obj))
    written = []
    for language in ("en", "de", "fr", "es"):
        text = f" {_AND[language]} ".join(_clause(language, *c) for c in clauses)
        written.append((language, _capitalise(text) + "."))
    zh_words: list[tuple[str, str]] = []
    for i, clause in enumerate(clauses):
        zh_words += ([("，", ",")] if i else []) + _zh_clause(*clause)
    zh_words.append(("。", "."))
    written.append(("zh", "".join(h for h, _ in zh_words)))
    return Sentence(tuple(written), tuple(zh_words))


def vocabulary(language: str = "en") -> list[str]:
    """Every word a transcript in `language` can contain (characters for Mandarin)."""
    _checked(language)
    if language == "zh":
        hanzi = [row[7] for row in SUBJECTS + OBJECTS] + [row[4] for row in INTRANSITIVE + TRANSITIVE + TIMES]
        hanzi += [row[i] for row in ADJECTIVES for i in (7, 9)]
        return sorted(set("".join(hanzi)))
    noun_column = {"en": 0, "de": 1, "fr": 3, "es": 5}[language]
    column = LANGUAGES.index(language)
    words = {"en": ["the", "is"], "de": ["der", "die", "das", "den", "ist"], "fr": ["est"],
             "es": ["es"]}[language] + _AND[language].split()
    words += [w for noun in SUBJECTS + OBJECTS for w in noun[noun_column].split()]
    words += [w for row in INTRANSITIVE + TRANSITIVE + TIMES for w in row[column].split()]
    if language == "de":
        words += [adj[1] + ending for adj in ADJECTIVES for ending in ("", "e", "en")]
    else:
        forms = {"en": (0,), "fr": (2, 3), "es": (4, 5, 6)}[language]
        words += [adj[i] for adj in ADJECTIVES for i in forms]
    return sorted({w.lower() for w in words})
