"""Generate the small German demo tasks: the two the default training run learns, and one
each of the multi-label and tagging kinds.

Run ``python -m mtl.data.demo [--out DIR] [--seed N]`` (defaults: ``data/demo``, seed 0). It
writes, with 2000 train and 300 validation rows per task and the same bytes for the same seed:

``DIR/complexity/{train,val}.csv``, columns ``sentence,complexity``
    Sentences built from templates: a main clause in one of three styles (active, passive,
    nominal: "Die Prüfung des Vertrags erfolgt durch den Mann."), 0-2 adverbials, and 0-3
    subordinate clauses appended with commas ("weil", "obwohl", "da", "während", "bevor",
    "sobald", "nachdem" and relative clauses "der/die/das ..."). A lexical level
    p in {0, 0.25, 0.5, 0.75, 1} is the chance that each noun, verb and adverbial comes from the
    list of long compounds and officialese ("Bezirksverwaltungsbehörde") instead of the list of
    short common words ("Mann", "Buch"). Sentences longer than 280 characters are redrawn, so
    every sentence fits in about 105 tokens of MiniLM's English WordPiece vocabulary. The score
    is measured on the finished sentence::

        raw = 1 + 0.08 * (W - 5) + 0.5 * S + 4.5 * L + 0.4 * P
        complexity = clip(raw + N(0, 0.3), 1, 7), written with 3 decimals

    where W is the number of words (whitespace-separated), S the number of subordinate clauses,
    L the share of words with at least 12 letters and P the style (active 0, passive 1,
    nominal 2). Scores have mean about 3.8 and sd about 1.3. Length, clause count and long
    words each carry signal of their own (the lexical level is drawn independently of length):
    a linear fit on W alone leaves an RMSE of about 0.75, the noise floor is 0.3.

``DIR/sentiment/{train,val}.csv``, columns ``sentence,label`` (``negative`` or ``positive``)
    Reviews of products, films and restaurants. Each split has exactly half of each true label
    before noise. Three patterns:

    - plain (60%): "Der Film war wirklich großartig." The label is the adjective's polarity;
      an intensifier ("sehr", "echt", ...) may stand before it and does not change it.
    - negated (25%): "Das Essen war überhaupt nicht gut." A negation ("nicht", "gar nicht",
      "keineswegs", "nicht besonders", ...) flips the adjective's polarity, so "nicht
      schlecht" is positive. Negations occur equally often with both labels: the model has to
      combine negation and adjective, a bag of words is not enough.
    - contrast (15%): "Die Musik war toll, aber die Handlung war langweilig." Two clauses of
      opposite polarity joined by "aber"; the clause after "aber" decides.

    Label noise: each row's label is flipped with probability 0.05, so about 95% accuracy is
    the ceiling. Reading only the adjectives' polarity gets about 60-65% right.

``DIR/aspects/{train,val}.csv``, columns ``sentence,aspects``
    Restaurant reviews naming 0-3 aspects (food, service, price, ambience) by their nouns; the
    label is exactly the ";"-joined set of aspects named, in that order ("" for none).

``DIR/entities/{train,val}.conll``, a word and its BIO tag a line, a blank line after each
    sentence: news-like sentences with persons, places and organisations (PER, LOC, ORG).

No sentence occurs twice within a task (train and validation are disjoint). Randomness comes
from ``random.Random`` objects seeded from the seed and the task name, never the global RNG.
"""

from __future__ import annotations

import argparse
import csv
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import NamedTuple, TypeVar

T = TypeVar("T")

TRAIN_ROWS = 2000
VAL_ROWS = 300
DEFAULT_OUT = Path("data/demo")

NOISE_SD = 0.3
LABEL_NOISE = 0.05
LONG_WORD_LETTERS = 12
MAX_CHARS = 280  # keeps every sentence within about 105 tokens of MiniLM's English WordPiece
PER_WORD, PER_CLAUSE, PER_LONG_SHARE, PER_STYLE = 0.08, 0.5, 4.5, 0.4  # score weights
SCORE_MIN, SCORE_MAX = 1.0, 7.0
STYLES = ("active", "passive", "nominal")
LEXICAL_LEVELS = (0.0, 0.25, 0.5, 0.75, 1.0)

# --------------------------------------------------------------------------------------------
# Complexity: word lists
# --------------------------------------------------------------------------------------------


class Noun(NamedTuple):
    gender: str  # "m", "f" or "n" ("p" for plural reviewed things)
    word: str
    genitive: str  # the noun's genitive singular form ("Vertrags")


class Verb(NamedTuple):
    present: str  # 3rd person singular ("prüft")
    participle: str  # ("geprüft")
    noun: str  # nominalization with article, nominative ("die Prüfung")


ARTICLES = {  # nominative, accusative, dative, genitive
    "m": ("der", "den", "dem", "des"),
    "f": ("die", "die", "der", "der"),
    "n": ("das", "das", "dem", "des"),
}
CASES = ("nom", "acc", "dat", "gen")


def _nouns(spec: str) -> tuple[Noun, ...]:
    """Parse "g:Word:Genitive" entries separated by whitespace (genitive defaults to word)."""
    nouns = []
    for entry in spec.split():
        gender, word, *genitive = entry.split(":")
        nouns.append(Noun(gender, word, genitive[0] if genitive else word))
    return tuple(nouns)


SIMPLE_AGENTS = _nouns(
    "m:Mann:Mannes f:Frau n:Kind:Kindes m:Lehrer:Lehrers f:Ärztin m:Koch:Kochs f:Mutter "
    "m:Vater:Vaters m:Chef:Chefs f:Firma m:Freund:Freundes f:Stadt f:Oma"
)
COMPLEX_AGENTS = _nouns(
    "f:Bezirksverwaltungsbehörde n:Bundesverfassungsgericht:Bundesverfassungsgerichts "
    "f:Verbraucherschutzorganisation m:Wirtschaftsprüfer:Wirtschaftsprüfers "
    "f:Staatsanwaltschaft n:Forschungsinstitut:Forschungsinstituts f:Oberbürgermeisterin "
    "m:Verwaltungsgerichtshof:Verwaltungsgerichtshofs f:Gesundheitsministerin "
    "f:Rechnungsprüfungskommission m:Landesrechnungshof:Landesrechnungshofs "
    "n:Wirtschaftsministerium:Wirtschaftsministeriums"
)
SIMPLE_THINGS = _nouns(
    "m:Brief:Briefs n:Buch:Buches n:Auto:Autos f:Rechnung m:Plan:Plans n:Haus:Hauses "
    "m:Vertrag:Vertrags f:Liste m:Text:Textes n:Bild:Bildes f:Karte m:Tisch:Tisches "
    "n:Rad:Rades f:Tür"
)
COMPLEX_THINGS = _nouns(
    "m:Haushaltsentwurf:Haushaltsentwurfs n:Sanierungskonzept:Sanierungskonzepts "
    "f:Kostenrückerstattungsvereinbarung m:Abschlussprüfungsbericht:Abschlussprüfungsberichts "
    "f:Umweltverträglichkeitsstudie n:Infrastrukturprogramm:Infrastrukturprogramms "
    "m:Rahmentarifvertrag:Rahmentarifvertrags f:Finanzierungsbürgschaft "
    "n:Gesetzgebungsverfahren:Gesetzgebungsverfahrens f:Datenschutzgrundverordnung "
    "m:Bebauungsplanentwurf:Bebauungsplanentwurfs f:Jahresabschlussbilanz"
)


def _verbs(spec: str) -> tuple[Verb, ...]:
    """Parse "present/participle/article_nominalization" entries separated by whitespace."""
    verbs = []
    for entry in spec.split():
        present, participle, noun = entry.split("/")
        verbs.append(Verb(present, participle, noun.replace("_", " ")))
    return tuple(verbs)


SIMPLE_VERBS = _verbs(
    "prüft/geprüft/die_Prüfung kauft/gekauft/der_Kauf bezahlt/bezahlt/die_Bezahlung "
    "repariert/repariert/die_Reparatur verkauft/verkauft/der_Verkauf "
    "bestellt/bestellt/die_Bestellung sucht/gesucht/die_Suche öffnet/geöffnet/die_Öffnung "
    "zeigt/gezeigt/das_Zeigen malt/gemalt/das_Malen"
)
COMPLEX_VERBS = _verbs(
    "veröffentlicht/veröffentlicht/die_Veröffentlichung "
    "überarbeitet/überarbeitet/die_Überarbeitung unterzeichnet/unterzeichnet/die_Unterzeichnung "
    "beanstandet/beanstandet/die_Beanstandung evaluiert/evaluiert/die_Evaluierung "
    "modernisiert/modernisiert/die_Modernisierung konsolidiert/konsolidiert/die_Konsolidierung "
    "beschlagnahmt/beschlagnahmt/die_Beschlagnahmung"
)
SIMPLE_ADVERBIALS = (
    "heute", "sofort", "schnell", "gern", "am Morgen", "am Abend", "im Büro", "zu Hause",
    "noch einmal", "genau", "jetzt", "bald", "oft", "leise",
)  # fmt: skip
COMPLEX_ADVERBIALS = (
    "nach eingehender Begutachtung",
    "im Rahmen der Haushaltskonsolidierung",
    "unter Berücksichtigung sämtlicher Einwendungen",
    "aufgrund erheblicher Lieferverzögerungen",
    "gemäß den einschlägigen Verwaltungsvorschriften",
    "im Anschluss an die Ausschusssitzung",
    "ungeachtet der Wirtschaftlichkeitsbedenken",
    "vorbehaltlich der Zustimmung des Finanzausschusses",
    "infolge der Digitalisierungsoffensive",
    "zwecks nachhaltiger Qualitätssicherung",
)
CONJUNCTIONS = ("weil", "obwohl", "da", "während", "bevor", "sobald", "nachdem")


# --------------------------------------------------------------------------------------------
# Complexity: building sentences and scoring them
# --------------------------------------------------------------------------------------------


def noun_phrase(noun: Noun, case: str) -> str:
    """Article plus noun in the given case ("nom", "acc", "dat", "gen"), singular."""
    article = ARTICLES[noun.gender][CASES.index(case)]
    word = noun.genitive if case == "gen" else noun.word
    return f"{article} {word}"


def relative_pronoun(noun: Noun, case: str) -> str:
    """The relative pronoun for an antecedent noun in the nominative or accusative."""
    return ARTICLES[noun.gender][CASES.index(case)]


@dataclass
class Lexicon:
    """Picks words, each from the complex list with probability ``level``."""

    rng: random.Random
    level: float

    def pick(self, simple: Sequence[T], complex_: Sequence[T]) -> T:
        pool = complex_ if self.rng.random() < self.level else simple
        return self.rng.choice(pool)

    def agent(self) -> Noun:
        return self.pick(SIMPLE_AGENTS, COMPLEX_AGENTS)

    def thing(self) -> Noun:
        return self.pick(SIMPLE_THINGS, COMPLEX_THINGS)

    def verb(self) -> Verb:
        return self.pick(SIMPLE_VERBS, COMPLEX_VERBS)

    def adverbials(self, count: int) -> list[str]:
        """``count`` different adverbials."""
        chosen: list[str] = []
        while len(chosen) < count:
            adverbial = self.pick(SIMPLE_ADVERBIALS, COMPLEX_ADVERBIALS)
            if adverbial not in chosen:
                chosen.append(adverbial)
        return chosen


def join_words(*parts: str | list[str]) -> str:
    """Join words and lists of words with single spaces, skipping empty parts."""
    words: list[str] = []
    for part in parts:
        words.extend(part if isinstance(part, list) else [part])
    return " ".join(word for word in words if word)


class Clause(NamedTuple):
    text: str
    last_noun: Noun  # the antecedent a following relative clause refers to
    last_is_agent: bool


def main_clause(lex: Lexicon, style: str) -> Clause:
    """An active, passive or nominal-style main clause with 0-2 adverbials, no final stop."""
    agent, thing, verb = lex.agent(), lex.thing(), lex.verb()
    advs = lex.adverbials(lex.rng.randint(0, 2))
    if style == "active":
        text = join_words(noun_phrase(agent, "nom"), verb.present, advs, noun_phrase(thing, "acc"))
        return Clause(text, thing, False)
    if style == "passive":
        text = join_words(
            noun_phrase(thing, "nom"), "wird", advs, "von", noun_phrase(agent, "dat"),
            verb.participle,
        )  # fmt: skip
        return Clause(text, agent, True)
    text = join_words(
        verb.noun, noun_phrase(thing, "gen"), "erfolgt", advs, "durch", noun_phrase(agent, "acc")
    )
    return Clause(text, agent, True)


def adverbial_clause(lex: Lexicon, passive: bool) -> Clause:
    """A subordinate clause with a conjunction and the verb at the end."""
    conjunction = lex.rng.choice(CONJUNCTIONS)
    agent, thing, verb = lex.agent(), lex.thing(), lex.verb()
    advs = lex.adverbials(lex.rng.randint(0, 1))
    perfect = conjunction == "nachdem"
    if passive:
        ending = [verb.participle, "worden ist"] if perfect else [verb.participle, "wird"]
        text = join_words(
            conjunction, noun_phrase(thing, "nom"), advs, "von", noun_phrase(agent, "dat"), ending
        )
        return Clause(text, agent, True)
    ending = [verb.participle, "hat"] if perfect else [verb.present]
    text = join_words(
        conjunction, noun_phrase(agent, "nom"), advs, noun_phrase(thing, "acc"), ending
    )
    return Clause(text, thing, False)


def relative_clause(lex: Lexicon, antecedent: Clause, passive: bool) -> Clause:
    """A relative clause on the previous clause's last noun ("..., den die Frau kauft")."""
    verb = lex.verb()
    advs = lex.adverbials(lex.rng.randint(0, 1))
    noun = antecedent.last_noun
    if antecedent.last_is_agent:  # the agent does something: "der den Brief prüft"
        thing = lex.thing()
        text = join_words(
            relative_pronoun(noun, "nom"), advs, noun_phrase(thing, "acc"), verb.present
        )
        return Clause(text, thing, False)
    agent = lex.agent()
    if passive:  # the thing undergoes something: "das von dem Mann geprüft wird"
        text = join_words(
            relative_pronoun(noun, "nom"), advs, "von", noun_phrase(agent, "dat"),
            verb.participle, "wird",
        )  # fmt: skip
        return Clause(text, agent, True)
    text = join_words(relative_pronoun(noun, "acc"), noun_phrase(agent, "nom"), advs, verb.present)
    return Clause(text, agent, True)


def subordinate_clause(lex: Lexicon, previous: Clause, passive: bool) -> Clause:
    """A relative clause (one time in three) or an adverbial clause."""
    if lex.rng.random() < 1 / 3:
        return relative_clause(lex, previous, passive)
    return adverbial_clause(lex, passive)


def capitalize_first(text: str) -> str:
    return text[:1].upper() + text[1:]


def complexity_sentence(lex: Lexicon, style: str, clauses: int) -> str:
    """A main clause in ``style`` followed by ``clauses`` subordinate clauses, with a stop."""
    clause = main_clause(lex, style)
    parts = [clause.text]
    for _ in range(clauses):
        clause = subordinate_clause(lex, clause, passive=style != "active")
        parts.append(clause.text)
    return capitalize_first(", ".join(parts)) + "."


def count_words(sentence: str) -> int:
    return len(sentence.split())


def long_word_share(sentence: str) -> float:
    """Share of words with at least LONG_WORD_LETTERS letters."""
    words = sentence.split()
    long_words = [w for w in words if sum(ch.isalpha() for ch in w) >= LONG_WORD_LETTERS]
    return len(long_words) / len(words)


def complexity_raw(sentence: str, clauses: int, style: str) -> float:
    """The noise-free score 1 + a (W - 5) + b S + c L + d P (see module doc)."""
    return (
        1.0
        + PER_WORD * (count_words(sentence) - 5)
        + PER_CLAUSE * clauses
        + PER_LONG_SHARE * long_word_share(sentence)
        + PER_STYLE * STYLES.index(style)
    )


def clip(value: float, low: float = SCORE_MIN, high: float = SCORE_MAX) -> float:
    return min(high, max(low, value))


def complexity_example(rng: random.Random) -> tuple[str, float]:
    """One (sentence, noisy score in [1, 7]) pair with randomly drawn properties.

    Sentences longer than MAX_CHARS are redrawn (with new properties).
    """
    while True:
        style = rng.choice(STYLES)
        clauses = rng.choices((0, 1, 2, 3), weights=(3, 3, 2, 2))[0]
        lex = Lexicon(rng, rng.choice(LEXICAL_LEVELS))
        sentence = complexity_sentence(lex, style, clauses)
        if len(sentence) <= MAX_CHARS:
            break
    score = clip(complexity_raw(sentence, clauses, style) + rng.gauss(0.0, NOISE_SD))
    return sentence, score


# --------------------------------------------------------------------------------------------
# Sentiment
# --------------------------------------------------------------------------------------------

POSITIVE_ADJECTIVES = (
    "gut", "toll", "hervorragend", "großartig", "super", "wunderbar", "ausgezeichnet",
    "gelungen", "überzeugend", "fantastisch", "angenehm", "prima", "empfehlenswert",
    "spitze", "erstklassig",
)  # fmt: skip
NEGATIVE_ADJECTIVES = (
    "schlecht", "schrecklich", "furchtbar", "enttäuschend", "miserabel", "langweilig",
    "mies", "ärgerlich", "katastrophal", "mangelhaft", "grauenhaft", "schwach",
    "unzumutbar", "öde", "dürftig",
)  # fmt: skip
INTENSIFIERS = (
    "sehr", "wirklich", "echt", "ziemlich", "total", "richtig", "äußerst", "extrem",
    "absolut", "recht",
)  # fmt: skip
NEGATIONS = (
    "nicht", "gar nicht", "überhaupt nicht", "keineswegs", "nicht sehr", "nicht besonders",
    "nicht wirklich", "wirklich nicht", "echt nicht", "absolut nicht",
)  # fmt: skip
NEGATION_WORDS = ("nicht", "keineswegs")  # every entry of NEGATIONS contains one of these
OPENERS = (
    "Insgesamt", "Ehrlich gesagt", "Meiner Meinung nach", "Für den Preis", "Diesmal",
    "Im Großen und Ganzen", "Auf den ersten Blick", "Am Ende",
)  # fmt: skip
# Reviewed things per domain, as "gender:Noun" (gender p: plural).
DOMAINS = {
    "product": _nouns(
        "n:Handy m:Akku f:Lieferung f:Kamera n:Gerät f:Verarbeitung m:Staubsauger "
        "f:Qualität m:Kundendienst n:Display f:Bedienungsanleitung m:Drucker p:Kopfhörer"
    ),
    "film": _nouns(
        "m:Film f:Handlung n:Drehbuch f:Musik n:Ende f:Serie f:Kameraführung m:Anfang "
        "f:Fortsetzung m:Hauptdarsteller f:Synchronisation p:Schauspieler p:Dialoge"
    ),
    "restaurant": _nouns(
        "n:Essen m:Service f:Pizza n:Restaurant f:Bedienung m:Wein f:Atmosphäre "
        "n:Frühstück f:Suppe m:Nachtisch n:Steak p:Portionen p:Preise"
    ),
}
PATTERNS = ("plain", "negated", "contrast")
PATTERN_WEIGHTS = (0.60, 0.25, 0.15)


class SentimentRow(NamedTuple):
    sentence: str
    label: str  # the rule's label, before label noise
    pattern: str  # "plain", "negated" or "contrast"


def polarity_label(positive: bool) -> str:
    return "positive" if positive else "negative"


def rule_label(adjective_positive: bool, negated: bool) -> str:
    """The sentiment rule for one evaluative phrase: a negation flips the adjective."""
    return polarity_label(adjective_positive != negated)


def reviewed_np(noun: Noun, case: str) -> str:
    """Nominative or accusative noun phrase for a reviewed thing (plural: "die")."""
    if noun.gender == "p":
        return f"die {noun.word}"
    return noun_phrase(noun, case)


def copula(rng: random.Random, noun: Noun) -> str:
    present = rng.random() < 0.5
    if noun.gender == "p":
        return "sind" if present else "waren"
    return "ist" if present else "war"


def evaluation(rng: random.Random, adjective_positive: bool, negated: bool) -> str:
    """Modifier and adjective, e.g. "überhaupt nicht gut" or "echt toll"."""
    adjective = rng.choice(POSITIVE_ADJECTIVES if adjective_positive else NEGATIVE_ADJECTIVES)
    if negated:
        modifier = rng.choice(NEGATIONS)
    else:
        modifier = rng.choice(INTENSIFIERS) if rng.random() < 0.5 else ""
    return join_words(modifier, adjective)


def evaluative_sentence(rng: random.Random, adjective_positive: bool, negated: bool) -> str:
    """A one-clause review in one of three word orders, with a final stop."""
    noun = rng.choice(DOMAINS[rng.choice(tuple(DOMAINS))])
    phrase = evaluation(rng, adjective_positive, negated)
    frame = rng.randrange(3)
    if frame == 0:
        text = join_words(reviewed_np(noun, "nom"), copula(rng, noun), phrase)
    elif frame == 1:
        text = join_words(rng.choice(OPENERS), copula(rng, noun), reviewed_np(noun, "nom"), phrase)
    else:
        text = join_words("ich fand", reviewed_np(noun, "acc"), phrase)
    return capitalize_first(text) + "."


def contrast_sentence(rng: random.Random, positive: bool) -> str:
    """Two clauses of opposite polarity joined by "aber"; the second one decides."""
    first, second = rng.sample(DOMAINS[rng.choice(tuple(DOMAINS))], 2)
    opening = join_words(
        reviewed_np(first, "nom"), copula(rng, first), evaluation(rng, not positive, False)
    )
    if rng.random() < 0.5:  # "Zwar war der Film ..., aber ..."
        opening = join_words("zwar", copula(rng, first), reviewed_np(first, "nom"),
                             evaluation(rng, not positive, False))  # fmt: skip
    closing = join_words(
        reviewed_np(second, "nom"), copula(rng, second), evaluation(rng, positive, False)
    )
    return capitalize_first(f"{opening}, aber {closing}") + "."


def sentiment_example(rng: random.Random, positive: bool, pattern: str) -> SentimentRow:
    """One review whose rule label is ``positive``, built with ``pattern`` (no label noise)."""
    if pattern == "plain":
        sentence = evaluative_sentence(rng, adjective_positive=positive, negated=False)
    elif pattern == "negated":
        sentence = evaluative_sentence(rng, adjective_positive=not positive, negated=True)
    elif pattern == "contrast":
        sentence = contrast_sentence(rng, positive)
    else:
        raise ValueError(f"unknown sentiment pattern {pattern!r}; expected one of {PATTERNS}")
    return SentimentRow(sentence, polarity_label(positive), pattern)


def noisy_label(rng: random.Random, label: str, noise: float = LABEL_NOISE) -> str:
    """The label, flipped with probability ``noise``."""
    if rng.random() < noise:
        return "negative" if label == "positive" else "positive"
    return label


# --------------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------------


def unique_row(make_row: Callable[[], tuple[str, str]], seen: set[str]) -> tuple[str, str]:
    """Call ``make_row`` until its sentence is not in ``seen``; add it there and return the row."""
    for _ in range(1000):
        row = make_row()
        if row[0] not in seen:
            seen.add(row[0])
            return row
    raise RuntimeError("the templates cannot produce enough distinct sentences")


def complexity_row(rng: random.Random) -> tuple[str, str]:
    """(sentence, score with 3 decimals)."""
    sentence, score = complexity_example(rng)
    return sentence, f"{score:.3f}"


def sentiment_row(rng: random.Random, positive: bool) -> tuple[str, str]:
    """(sentence, rule label) in a randomly drawn pattern, before label noise."""
    pattern = rng.choices(PATTERNS, weights=PATTERN_WEIGHTS)[0]
    example = sentiment_example(rng, positive, pattern)
    return example.sentence, example.label


def sentiment_split(rng: random.Random, count: int, seen: set[str]) -> list[tuple[str, str]]:
    """``count`` rows (sentence, noisy label), half of them positive before noise."""
    targets = [True] * (count // 2) + [False] * (count - count // 2)
    rng.shuffle(targets)
    rows = [unique_row(partial(sentiment_row, rng, positive), seen) for positive in targets]
    return [(sentence, noisy_label(rng, label)) for sentence, label in rows]


# --------------------------------------------------------------------------------------------
# Aspects (multi-label) and entities (tagging)
# --------------------------------------------------------------------------------------------

ASPECTS = {  # the restaurant aspects a review mentions, with the nouns that mention them
    "food": _nouns("n:Essen f:Suppe f:Pizza m:Nachtisch n:Steak p:Portionen m:Salat"),
    "service": _nouns("f:Bedienung m:Service m:Kellner n:Personal f:Kellnerin"),
    "price": _nouns("p:Preise f:Rechnung m:Preis n:Trinkgeld m:Aufschlag"),
    "ambience": _nouns("f:Atmosphäre f:Musik f:Einrichtung f:Terrasse n:Ambiente"),
}
ASPECT_COUNT_WEIGHTS = (0.05, 0.5, 0.3, 0.15)  # 0, 1, 2 or 3 aspects per review
VISITORS = ("Wir waren", "Ich war", "Meine Familie war")
WHEN = ("gestern", "am Samstag", "letzte Woche", "zum ersten Mal", "an Ostern", "mittags")
COMPANY = ("", "mit Freunden", "mit der Familie", "mit Kollegen", "mit meiner Frau", "allein")
WHERE = ("dort", "in diesem Lokal", "in dem Restaurant", "am Marktplatz", "im Zentrum")


def aspects_row(rng: random.Random) -> tuple[str, str]:
    """(review, its aspects joined by ";" in ASPECTS order; "" for none)."""
    chosen = rng.sample(tuple(ASPECTS), rng.choices((0, 1, 2, 3), ASPECT_COUNT_WEIGHTS)[0])
    visit = join_words(rng.choice(VISITORS), rng.choice(WHEN), rng.choice(COMPANY),
                       rng.choice(WHERE))  # fmt: skip
    clauses = []
    for aspect in chosen:
        noun = rng.choice(ASPECTS[aspect])
        phrase = evaluation(rng, rng.random() < 0.5, rng.random() < 0.2)
        clauses.append(join_words(reviewed_np(noun, "nom"), copula(rng, noun), phrase))
    if len(clauses) > 1:
        text = ", ".join(clauses[:-1]) + rng.choice((" und ", ", aber ")) + clauses[-1]
    else:
        text = clauses[0] if clauses else visit
    return capitalize_first(text) + ".", ";".join(a for a in ASPECTS if a in chosen)


FIRST_NAMES = ("Anna", "Jonas", "Lena", "Paul", "Marie", "Felix", "Sophie", "Lukas", "Emma",
               "Leon", "Hannah", "Elias", "Mia", "Noah")  # fmt: skip
LAST_NAMES = ("Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner",
              "Becker", "Schulz", "Hoffmann", "Koch", "Richter", "Klein", "Wolf")  # fmt: skip
CITIES = ("Berlin", "München", "Hamburg", "Köln", "Leipzig", "Dresden", "Stuttgart",
          "Frankfurt am Main", "Bad Homburg", "Freiburg im Breisgau")  # fmt: skip
COMPANIES = ("Siemens", "Deutsche Bahn", "Lufthansa", "Volkswagen", "Allianz", "Zalando",
             "Deutsche Telekom", "Bayer")  # fmt: skip
CITY_COMPANIES = ("Stadtwerke", "Verkehrsbetriebe", "Sparkasse")  # + a city: an ORG, not a LOC
ENTITY_TEMPLATES = (
    "{PER} arbeitet seit {YEAR} bei {ORG} in {LOC} .",
    "{ORG} eröffnet im Frühjahr eine neue Filiale in {LOC} .",
    "{PER} ist von {LOC} nach {LOC} gezogen .",
    "Laut {PER} plant {ORG} keine weiteren Stellen in {LOC} .",
    "In {LOC} traf {PER} gestern {PER} .",
    "{PER} und {PER} gründeten {YEAR} in {LOC} eine Firma .",
    "Der Vorstand von {ORG} kommt am Montag nach {LOC} .",
    "Die Zeitung berichtet , dass {PER} {ORG} verlässt .",
)


def entity(rng: random.Random, kind: str) -> list[tuple[str, str]]:
    """One entity of `kind` (PER, ORG, LOC) as (word, BIO tag) pairs; "Frau" or "Dr." before a
    surname is not part of the name, and "Stadtwerke München" is an organisation."""
    if kind == "PER" and rng.random() < 0.3:
        return [(rng.choice(("Frau", "Dr.")), "O"), (rng.choice(LAST_NAMES), "B-PER")]
    if kind == "PER":
        words = [rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)]
    elif kind == "ORG" and rng.random() < 0.3:
        words = [rng.choice(CITY_COMPANIES), *rng.choice(CITIES).split()]
    else:
        words = rng.choice(COMPANIES if kind == "ORG" else CITIES).split()
    return [(w, ("B-" if i == 0 else "I-") + kind) for i, w in enumerate(words)]


def entities_row(rng: random.Random) -> tuple[str, str]:
    """(the sentence's words, their BIO tags), each joined by single spaces."""
    tagged: list[tuple[str, str]] = []
    for word in rng.choice(ENTITY_TEMPLATES).split():
        if word in ("{PER}", "{ORG}", "{LOC}"):
            tagged += entity(rng, word[1:-1])
        else:
            tagged.append((str(rng.randrange(1990, 2025)) if word == "{YEAR}" else word, "O"))
    return " ".join(w for w, _ in tagged), " ".join(t for _, t in tagged)


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def rows_split(make_row: Callable, rng: random.Random, count: int, seen: set[str]) -> list:
    """``count`` rows of ``make_row(rng)`` with texts not in ``seen``."""
    return [unique_row(partial(make_row, rng), seen) for _ in range(count)]


def write_csv(path: Path, rows: Sequence[Sequence[str]], header: Sequence[str]) -> None:
    """UTF-8, header row, LF line endings, csv.writer's default quoting."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def write_conll(path: Path, rows: Sequence[tuple[str, str]]) -> None:
    """A word and its tag a line, a blank line after each sentence (UTF-8, LF)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for words, tags in rows:
        lines += [f"{w} {t}\n" for w, t in zip(words.split(" "), tags.split(" "), strict=True)]
        lines.append("\n")
    path.write_text("".join(lines), encoding="utf-8", newline="")


TASKS: dict[str, tuple[str, Callable, Callable]] = {  # name: (suffix, write, make split)
    "complexity": (".csv", partial(write_csv, header=("sentence", "complexity")),
                   partial(rows_split, complexity_row)),
    "sentiment": (".csv", partial(write_csv, header=("sentence", "label")), sentiment_split),
    "aspects": (".csv", partial(write_csv, header=("sentence", "aspects")),
                partial(rows_split, aspects_row)),
    "entities": (".conll", write_conll, partial(rows_split, entities_row)),
}  # fmt: skip


def task_rng(task: str, seed: int) -> random.Random:
    """An independent, reproducible random stream per task."""
    return random.Random(f"mtl-demo/{task}/{seed}")


def generate(out: Path, seed: int = 0) -> dict[Path, int]:
    """Write both tasks' train.csv and val.csv under ``out``; return {path: row count}."""
    written: dict[Path, int] = {}
    for task, (suffix, write, make_split) in TASKS.items():
        rng = task_rng(task, seed)
        seen: set[str] = set()
        for split, count in (("train", TRAIN_ROWS), ("val", VAL_ROWS)):
            path = out / task / f"{split}{suffix}"
            write(path, make_split(rng, count, seen))
            written[path] = count
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m mtl.data.demo",
        description="Write the German demo tasks (complexity regression, sentiment).",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    args = parser.parse_args(argv)
    for path, count in generate(args.out, args.seed).items():
        print(f"wrote {path} ({count} rows)")


if __name__ == "__main__":
    main()
