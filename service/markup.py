"""HTML translation: parse as a browser does, translate the text, keep every tag.

The parser is Lexbor (selectolax), an HTML5 parser: broken markup is repaired the way a
browser repairs it (unclosed elements closed, stray end tags dropped). The text of
`<script>`, `<style>`, `<code>`, `<pre>` and the like is never sent to the model. Entities
are decoded by the parser and the characters HTML needs escaped (`&amp;`, `&lt;`, `&gt;`,
`&nbsp;`) are escaped again.

A sentence often runs across inline elements ("A man <b>rides</b> a bike"). Translating
each text node alone gives the model fragments it was never trained on (the Multi30k
models turn "rides" into a whole rambling caption), so the text nodes of one run (the text
between two block boundaries: a block element, a `<br>`) are translated together, as one
text, and the translation's words are dealt back to the run's nodes in proportion to their
words in the source. Every tag, attribute and comment stays where it was; which translated
words land inside an inline element is an estimate by position.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from selectolax.lexbor import LexborDocumentOptions, LexborHTMLParser, LexborNode

from service.errors import InvalidMarkup

# Elements whose text is code, data or not shown: never translated.
SKIPPED = frozenset(
    {"script", "style", "code", "pre", "kbd", "samp", "var", "noscript", "template", "textarea"}
)
# Elements that sit inside a line of text; any other element ends a run of text.
INLINE = frozenset(
    {
        "a", "abbr", "b", "bdi", "bdo", "cite", "code", "data", "dfn", "em", "font", "i",
        "kbd", "label", "mark", "q", "s", "samp", "small", "span", "strong", "sub", "sup",
        "time", "u", "var", "del", "ins",
    }
)  # fmt: skip


@dataclass(frozen=True)
class MarkupLimits:
    max_chars: int
    max_depth: int


@dataclass
class Run:
    """Text nodes read as one line of text: "A man ", "rides", " a bike"."""

    nodes: list[LexborNode] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(n.text_content or "" for n in self.nodes)


def deal(translation: str, sources: list[str]) -> list[str]:
    """Deal translation's words to slots in proportion to each source's words, keeping
    each source's own leading and trailing whitespace."""
    if len(sources) == 1:
        return [translation]
    words = translation.split()
    counts = [len(s.split()) for s in sources]
    total, n = sum(counts), len(sources)
    # Cumulative cut points, rounded; each slot keeps a word while there are enough.
    cuts: list[int] = []
    seen = 0
    for k, count in enumerate(counts[:-1]):
        seen += count
        cut = round(seen * len(words) / total) if total else 0
        if len(words) >= n:
            cut = max(cut, (cuts[-1] if cuts else 0) + 1)
            cut = min(cut, len(words) - (n - 1 - k))
        cuts.append(max(cut, cuts[-1] if cuts else 0))
    bounds = [0, *cuts, len(words)]
    out: list[str] = []
    for k, source in enumerate(sources):
        lead = source[: len(source) - len(source.lstrip())]
        trail = source[len(source.rstrip()) :]
        body = " ".join(words[bounds[k] : bounds[k + 1]])
        # Slots glued in the source ("bike" + "." in "<a>bike</a>.") hold separate words now.
        written = "".join(out)
        if body and not lead and written and not written[-1].isspace():
            lead = " "
        out.append(f"{lead}{body}{trail}" if body else lead or trail)
    return out


@dataclass
class Document:
    """A parsed HTML input and its runs of translatable text, in document order."""

    parser: LexborHTMLParser
    whole: bool
    runs: list[Run]

    @property
    def texts(self) -> list[str]:
        return [run.text for run in self.runs]

    def render(self, translations: list[str]) -> str:
        """The HTML with each run's text replaced by its translation."""
        for run, translation in zip(self.runs, translations, strict=True):
            sources = [n.text_content or "" for n in run.nodes]
            for node, source, text in zip(
                run.nodes, sources, deal(translation, sources), strict=True
            ):
                if text != source:
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


def _skipped(node: LexborNode | None) -> bool:
    while node is not None:
        if node.tag in SKIPPED:
            return True
        node = node.parent
    return False


def _block_of(node: LexborNode) -> LexborNode | None:
    parent = node.parent
    while parent is not None and parent.tag in INLINE:
        parent = parent.parent
    return parent


def parse(html: str, limits: MarkupLimits) -> Document:
    """Parse html (a whole document or a fragment); InvalidMarkup over the limits."""
    if len(html) > limits.max_chars:
        raise InvalidMarkup(f"the HTML has {len(html)} characters; at most {limits.max_chars}")
    whole = _is_document(html)
    parser = LexborHTMLParser(html, is_fragment=not whole, options=LexborDocumentOptions.WO_EVENTS)
    runs: list[Run] = []
    root = parser.root
    if root is None:
        return Document(parser, whole, runs)
    current = Run()
    block: int | None = None  # mem_id of the current run's block element

    def close() -> None:
        nonlocal current
        if any((n.text_content or "").strip() for n in current.nodes):
            # Leading and trailing blank nodes of a run stay as they are.
            nodes = current.nodes
            while not (nodes[0].text_content or "").strip():
                nodes = nodes[1:]
            while not (nodes[-1].text_content or "").strip():
                nodes = nodes[:-1]
            runs.append(Run(nodes))
        current = Run()

    for node in root.traverse(include_text=True):
        if node.is_element_node:
            if _depth(node, limits.max_depth) > limits.max_depth:
                raise InvalidMarkup(f"the HTML is nested deeper than {limits.max_depth} elements")
            if node.tag not in INLINE:
                close()
            continue
        if not node.is_text_node or _skipped(node.parent):
            continue
        owner = _block_of(node)
        owner_id = owner.mem_id if owner is not None else None
        if current.nodes and owner_id != block:
            close()
        block = owner_id
        current.nodes.append(node)
    close()
    return Document(parser, whole, runs)
