"""service.markup: runs of text across inline elements, and dealing a translation back."""

from __future__ import annotations

import pytest

from service.errors import InvalidMarkup
from service.markup import MarkupLimits, deal, parse

LIMITS = MarkupLimits(max_chars=10_000, max_depth=20)


def runs(html: str) -> list[list[str]]:
    return [[n.text_content or "" for n in run.nodes] for run in parse(html, LIMITS).runs]


def test_runs_cross_inline_elements_and_stop_at_blocks() -> None:
    html = (
        "<p>A man <b>rides</b> a <a href='/b'>bike</a>.</p><div>Text <p>para</p> more<br>"
        "next <code>x = 1</code> line</div><script>var a;</script><ul><li>one<li>two</ul>"
    )
    assert runs(html) == [
        ["A man ", "rides", " a ", "bike", "."],
        ["Text "],
        ["para"],
        [" more"],
        ["next ", " line"],
        ["one"],
        ["two"],
    ]


def test_deal_keeps_order_whitespace_and_a_word_per_slot() -> None:
    sources = ["A man ", "rides", " a bike & ", "a dog", " runs."]
    assert deal("Ein Mann fährt ein Fahrrad und ein Hund rennt.", sources) == [
        "Ein Mann ",
        "fährt",
        " ein Fahrrad und ",
        "ein Hund",
        " rennt.",
    ]
    # Fewer words than slots: a slot goes empty (its element stays).
    assert deal("Zwei Wörter", ["a ", "b", " c"]) == ["Zwei ", "", " Wörter"]
    assert deal("Eins", ["alone"]) == ["Eins"]
    # Glued in the source ("<a>bike</a>."), separate words in the translation.
    assert deal("auf einem Fahrrad.", ["on ", "bike", "."]) == ["auf ", "einem", " Fahrrad."]


def test_render_replaces_only_the_text() -> None:
    html = '<p title="A dog">A <i>big</i> dog &amp; a cat&nbsp;play.</p><!-- A dog -->'
    document = parse(html, LIMITS)
    assert document.texts == ["A big dog & a cat\xa0play."]
    out = document.render(["Ein großer Hund & eine Katze spielen."])
    assert out == (
        '<p title="A dog">Ein <i>großer</i> Hund &amp; eine Katze spielen.</p><!-- A dog -->'
    )


def test_whole_documents_stay_whole() -> None:
    html = "<!doctype html><html><head><title>A dog</title></head><body><p>A cat</p></body></html>"
    document = parse(html, LIMITS)
    assert document.texts == ["A dog", "A cat"]
    assert document.render(["Ein Hund", "Eine Katze"]) == (
        "<!DOCTYPE html><html><head><title>Ein Hund</title></head>"
        "<body><p>Eine Katze</p></body></html>"
    )


@pytest.mark.parametrize(
    ("html", "message"),
    [("<b>" * 25 + "deep", "nested deeper than 20"), ("x" * 10_001, "at most 10000")],
)
def test_limits(html: str, message: str) -> None:
    with pytest.raises(InvalidMarkup, match=message):
        parse(html, LIMITS)
