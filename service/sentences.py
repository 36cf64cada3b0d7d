"""Sentence splitting that keeps every character between sentences, so output reassembles."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

# Words whose trailing period rarely ends a sentence (English and German; compared lowercased).
ABBREVIATIONS = frozenset(
    {
        "mr",
        "mrs",
        "ms",
        "dr",
        "prof",
        "st",
        "sr",
        "jr",
        "vs",
        "etc",
        "e.g",
        "i.e",
        "cf",
        "no",
        "approx",
        "z.b",
        "d.h",
        "u.a",
        "usw",
        "bzw",
        "ca",
        "nr",
        "hr",
        "fr",
        "vgl",
        "str",
        "inkl",
        "evtl",
        "ggf",
        "s",
        "u",
    }
)
# A sentence ends at . ! ? … (and closing quotes/brackets after them).
_END = re.compile(r"[.!?…]+[\"'”’»)\]]*$")
_SPACE = re.compile(r"\s+")


@dataclass
class Segments:
    """A text cut into sentences: text == lead + sentences[0] + gaps[0] + sentences[1] + ...."""

    lead: str
    sentences: list[str]
    gaps: list[str]

    def join(self, sentences: Sequence[str]) -> str:
        """Put translated sentences back between the original whitespace."""
        if len(sentences) != len(self.sentences):
            raise ValueError(f"{len(sentences)} sentences for {len(self.sentences)} slots")
        return self.lead + "".join(s + g for s, g in zip(sentences, self.gaps, strict=True))


def split_sentences(text: str) -> Segments:
    """Cut at sentence ends and line breaks; all whitespace around sentences is kept verbatim."""
    body = text.strip()
    if not body:
        return Segments(text, [], [])
    lead = text[: text.index(body[0])]
    trail = text[len(lead) + len(body) :]
    sentences: list[str] = []
    gaps: list[str] = []
    start = 0
    for space in _SPACE.finditer(body):
        chunk = body[start : space.start()]
        if "\n" in space.group() or _ends_sentence(chunk, body[space.end()]):
            sentences.append(chunk)
            gaps.append(space.group())
            start = space.end()
    sentences.append(body[start:])
    gaps.append(trail)
    return Segments(lead, sentences, gaps)


def _ends_sentence(chunk: str, next_char: str) -> bool:
    match = _END.search(chunk)
    if match is None:
        return False
    before = chunk[: match.start()].split()
    word = before[-1].lstrip("(\"'„“«") if before else ""
    if chunk[match.start()] == ".":
        if word.lower() in ABBREVIATIONS:
            return False
        # "am 3. Mai": a German ordinal, not a sentence end.
        if word.isdigit() and len(word) <= 2:
            return False
        # "J. Smith": an initial, not a sentence end.
        if len(word) == 1 and word.isalpha() and word.isupper():
            return False
    # The next sentence starts with a capital, a digit or an opening quote/bracket.
    return next_char.isupper() or next_char.isdigit() or next_char in "\"'„“«(¿¡"
