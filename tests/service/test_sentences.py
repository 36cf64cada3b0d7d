"""Sentence splitting: where texts are cut, and that every character survives reassembly."""

from __future__ import annotations

import random

import pytest

from service.sentences import split_sentences


@pytest.mark.parametrize(
    ("text", "sentences"),
    [
        ("A man rides a bike.", ["A man rides a bike."]),
        ("Two dogs play. A child watches!", ["Two dogs play.", "A child watches!"]),
        ("Is it raining? Yes.", ["Is it raining?", "Yes."]),
        ("line one\nline two", ["line one", "line two"]),
        (
            "Dr. Smith and Mr. Jones arrive. They sit.",
            ["Dr. Smith and Mr. Jones arrive.", "They sit."],
        ),
        ("Er kam am 3. Mai. Dann ging er.", ["Er kam am 3. Mai.", "Dann ging er."]),
        ("Das ist z.B. gut. Ja.", ["Das ist z.B. gut.", "Ja."]),
        ("J. Smith left. Bye.", ["J. Smith left.", "Bye."]),
        ('He said "Stop." Then he left.', ['He said "Stop."', "Then he left."]),
        ("It costs 3.50 euros. Cheap.", ["It costs 3.50 euros.", "Cheap."]),
        ("lower case. continues here", ["lower case. continues here"]),
        ("Wait... What?", ["Wait...", "What?"]),
        ("In 1999. Then", ["In 1999.", "Then"]),
    ],
)
def test_split_points(text: str, sentences: list[str]) -> None:
    assert split_sentences(text).sentences == sentences


@pytest.mark.parametrize(
    "text",
    [
        "  Leading and trailing.  ",
        "A.\n\nB.\r\n\tC!  ",
        "\n\nOnly newlines around.\n",
        "One.   Two.\u00a0Three.",
        "",
        "   ",
    ],
)
def test_whitespace_is_kept_verbatim(text: str) -> None:
    segments = split_sentences(text)
    assert segments.join(segments.sentences) == text
    assert all(s == s.strip() and s for s in segments.sentences)


def test_translated_sentences_go_back_between_the_original_gaps() -> None:
    segments = split_sentences(" Hello there.  How are you?\n\nFine. ")
    assert segments.join(["Hallo.", "Wie geht's?", "Gut."]) == " Hallo.  Wie geht's?\n\nGut. "
    with pytest.raises(ValueError):
        segments.join(["too few"])


def test_random_texts_round_trip() -> None:
    rng = random.Random(0)
    alphabet = [
        "a",
        "B",
        "7",
        ".",
        "!",
        "?",
        " ",
        "  ",
        "\n",
        "\n\n",
        "\t",
        '"',
        "Dr.",
        "z.B.",
        "3.",
        "…",
        "ß",
        "\r\n",
    ]
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        segments = split_sentences(text)
        assert segments.join(segments.sentences) == text
        assert all(s and s == s.strip() for s in segments.sentences)
        assert len(segments.gaps) == len(segments.sentences)
