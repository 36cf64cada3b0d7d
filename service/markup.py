"""HTML translation: parse as a browser does, translate the text nodes, keep every tag.

The parser is Lexbor (selectolax), an HTML5 parser: broken markup is repaired the way a
browser repairs it (unclosed elements closed, stray end tags dropped). Text nodes are
translated in place, so tags, attributes, comments and inline elements inside a sentence
(`<b>`, `<a href>`) stay where they were; the text of `<script>`, `<style>`, `<code>`,
`<pre>` and the like is never sent to the model. Entities are decoded by the parser and the
characters HTML needs escaped (`&amp;`, `&lt;`, `&gt;`, `&nbsp;`) are escaped again.

A sentence cut by an inline element ("A <b>big</b> dog") is translated piece by piece: the
model cannot carry markup through a translation, and keeping the markup exactly is the
promise here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from selectolax.lexbor import LexborDocumentOptions, LexborHTMLParser, LexborNode

from service.errors import InvalidMarkup

# Elements whose text is code, data or not shown: never translated.
SKIPPED = frozenset(
    {"script", "style", "code", "pre", "kbd", "samp", "var", "noscript", "template", "textarea"}
)


@dataclass(frozen=True)
class MarkupLimits:
    max_chars: int
    max_depth: int


@dataclass
class Document:
    """A parsed HTML input and its translatable text nodes, in document order."""

    parser: LexborHTMLParser
    whole: bool
    nodes: list[LexborNode]

    @property
    def texts(self) -> list[str]:
        return [n.text_content or "" for n in self.nodes]

    def render(self, translations: list[str]) -> str:
        """The HTML with each text node replaced by its translation."""
        for node, text in zip(self.nodes, translations, strict=True):
            if text != node.text_content:
                node.replace_with(text)
        return self.parser.html or ""


def _is_document(html: str) -> bool:
    head = html.lstrip()[:15].lower()
    return head.startswith("<!doctype") or head.startswith("<html")


def _depth(node: LexborNode, limit: int) -> int:
    depth = 0
    parent = node.parent
    while parent is not None and depth <= limit:
        depth += 1
        parent = parent.parent
    return depth


def parse(html: str, limits: MarkupLimits) -> Document:
    """Parse html (a whole document or a fragment); InvalidMarkup over the limits."""
    if len(html) > limits.max_chars:
        raise InvalidMarkup(f"the HTML has {len(html)} characters; at most {limits.max_chars}")
    whole = _is_document(html)
    parser = LexborHTMLParser(html, is_fragment=not whole, options=LexborDocumentOptions.WO_EVENTS)
    root = parser.root
    nodes: list[LexborNode] = []
    if root is None:
        return Document(parser, whole, nodes)
    for node in root.traverse(include_text=True):
        if node.is_text_node:
            parent = node.parent
            if parent is not None and _skipped(parent):
                continue
            if (node.text_content or "").strip():
                nodes.append(node)
        elif node.is_element_node and _depth(node, limits.max_depth) > limits.max_depth:
            raise InvalidMarkup(f"the HTML is nested deeper than {limits.max_depth} elements")
    return Document(parser, whole, nodes)


def _skipped(node: LexborNode | None) -> bool:
    while node is not None:
        if node.tag in SKIPPED:
            return True
        node = node.parent
    return False


async def translate_html(
    html: str,
    limits: MarkupLimits,
    translate: Callable[[list[str]], Awaitable[list[str]]],
) -> str:
    """Parse, translate the text nodes with translate(texts) -> texts, and serialize."""
    # Parsing and the depth check are CPU work: off the event loop (one parser per call).
    document = await asyncio.to_thread(parse, html, limits)
    if not document.nodes:
        return document.parser.html or ""
    return document.render(await translate(document.texts))


def text_of(html: str, limits: MarkupLimits) -> str:
    """The translatable text of html, for language detection."""
    return " ".join(t.strip() for t in parse(html, limits).texts)
