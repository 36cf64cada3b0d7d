"""Translation composed over Translator: auto-detected sources, and inputs of any size.

`translate_texts` is what the routes call for plain texts: with source "auto" each text is
detected, the texts are grouped by language and each group is translated (a text already in
the target language comes back unchanged). `translate_pieces` translates the pieces of a
document (HTML text nodes, lines of a file): pieces without letters stay as they are, long
ones are cut at sentence ends, and the rest go to the translator in requests it accepts.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from service.detect import LANGUAGE_NAMES, Detection, detect_texts
from service.errors import (
    BeamSizeOutOfRange,
    LanguageNotDetected,
    UnsupportedLanguagePair,
)
from service.markup import MarkupLimits, parse
from service.sentences import split_sentences
from service.translator import TranslateResult, Translator

AUTO = "auto"


@dataclass
class Composed:
    """Translations in input order, the models that made them, and each text's detection."""

    texts: list[str]
    alternatives: list[list[str]]
    models: list[str] = field(default_factory=list)
    backends: list[str] = field(default_factory=list)
    detections: list[Detection] | None = None

    @property
    def route(self) -> list[str] | None:
        """The model pairs that translated (each once), None when none did."""
        pairs = [m.split("@", 1)[0] for model in self.models for m in model.split("+")]
        return list(dict.fromkeys(pairs)) or None

    @property
    def model(self) -> str:
        return "+".join(self.models) or "none"

    @property
    def backend(self) -> str:
        return "+".join(self.backends) or "none"


def check_alternatives(translator: Translator, alternatives: int) -> None:
    """The translator's bound on alternatives (n alternatives take a beam of n + 1)."""
    limit = translator.settings.max_beam_size
    if not 0 <= alternatives < limit:
        raise BeamSizeOutOfRange(f"alternatives must be 0..{limit - 1}, not {alternatives}")


def detected_language(detection: Detection, what: str) -> str:
    """The detected language, or a 400 when there was nothing to go by."""
    if detection.language is None:
        raise LanguageNotDetected(
            f"could not detect the language of {what}; name the source language"
        )
    return detection.language


async def translate_detected(
    translator: Translator,
    texts: list[str],
    detection: Detection,
    target: str,
    what: str,
    **options: Any,
) -> TranslateResult:
    """Translate texts from their detected language; a 400 naming it when it is not served."""
    language = detected_language(detection, what)
    try:
        return await translator.translate(texts, language, target, **options)
    except UnsupportedLanguagePair as exc:
        name = LANGUAGE_NAMES.get(language, language)
        raise UnsupportedLanguagePair(
            f"{what} was detected as {name} ({language}, {detection.confidence:g}% sure); "
            f"{exc.message}"
        ) from None


async def translate_texts(
    translator: Translator,
    texts: list[str],
    source: str,
    target: str,
    *,
    beam_size: int | None = None,
    max_length: int | None = None,
    alternatives: int = 0,
) -> Composed:
    """Translate texts from source, or from each one's detected language when source is auto."""
    options: dict[str, Any] = {
        "beam_size": beam_size,
        "max_length": max_length,
        "alternatives": alternatives,
    }
    if source != AUTO:
        result = await translator.translate(texts, source, target, **options)
        return Composed(result.texts, result.alternatives, [result.model], [result.backend])

    translator.check_texts(texts)
    translator.serving()  # NotReady before any detection work while loading
    detections = await detect_texts(texts)
    groups: dict[str, list[int]] = {}
    for i, detection in enumerate(detections):
        groups.setdefault(detected_language(detection, f"text {i}"), []).append(i)

    out_texts = list(texts)
    out_alts: list[list[str]] = [[] for _ in texts]
    translated = {lang: idx for lang, idx in groups.items() if lang != target}
    results = await asyncio.gather(
        *(
            translate_detected(
                translator,
                [texts[i] for i in idx],
                detections[idx[0]],
                target,
                f"text {idx[0]}",
                **options,
            )
            for idx in translated.values()
        )
    )
    for idx, result in zip(translated.values(), results, strict=True):
        for i, text, alts in zip(idx, result.texts, result.alternatives, strict=True):
            out_texts[i], out_alts[i] = text, alts
    return Composed(
        out_texts,
        out_alts,
        sorted({r.model for r in results}),
        sorted({b for r in results for b in r.backend.split("+")}),
        detections,
    )


def _has_letters(text: str) -> bool:
    return any(c.isalpha() for c in text)


def _cut(text: str, limit: int) -> list[str]:
    """Cut text into parts of at most limit characters, at sentence ends where it can."""
    if len(text) <= limit:
        return [text]
    segments = split_sentences(text)
    units = [segments.lead] if segments.lead else []
    units += [s + g for s, g in zip(segments.sentences, segments.gaps, strict=True)]
    parts: list[str] = []
    current = ""
    for unit in units:
        while len(unit) > limit:  # one sentence over the limit: cut at its last space
            at = unit.rfind(" ", 0, limit)
            at = at + 1 if at > 0 else limit
            if current:
                parts.append(current)
                current = ""
            parts.append(unit[:at])
            unit = unit[at:]
        if len(current) + len(unit) > limit:
            parts.append(current)
            current = ""
        current += unit
    if current:
        parts.append(current)
    return parts


async def translate_pieces(
    translator: Translator, pieces: list[str], source: str, target: str
) -> tuple[list[str], Composed]:
    """Translate a document's pieces, any number of any length; returns them in order.

    source must be resolved (not auto); pieces without letters (whitespace, numbers,
    punctuation) are kept as they are, and a piece equal to the target language is copied.
    """
    limits = translator.settings
    out = list(pieces)
    if source == target:
        return out, Composed(out, [[] for _ in out])
    translator.route(source, target)  # the pair is served, even when nothing has letters
    # Each piece's parts; (piece, part) indices of the parts that need translating.
    parts = [_cut(p, limits.max_chars) if _has_letters(p) else [p] for p in pieces]
    jobs = [(i, k) for i, ps in enumerate(parts) for k, part in enumerate(ps) if _has_letters(part)]
    models: set[str] = set()
    backends: set[str] = set()
    for start in range(0, len(jobs), limits.max_texts):
        batch = jobs[start : start + limits.max_texts]
        result = await translator.translate([parts[i][k] for i, k in batch], source, target)
        models.add(result.model)
        backends.update(result.backend.split("+"))
        for (i, k), text in zip(batch, result.texts, strict=True):
            parts[i][k] = text
    out = ["".join(ps) for ps in parts]
    return out, Composed(out, [[] for _ in out], sorted(models), sorted(backends))


async def translate_documents(
    translator: Translator,
    htmls: list[str],
    source: str,
    target: str,
    limits: MarkupLimits,
    *,
    alternatives: int = 0,
) -> Composed:
    """Translate HTML inputs, keeping their markup; with source auto, each one is detected
    (from its text) and translated as a whole from that language. Alternatives are not
    offered for HTML (their lists come back empty), but their number is checked."""
    check_alternatives(translator, alternatives)
    if source != AUTO:
        translator.route(source, target)  # as for text: de-de is no pair either
    out: list[str] = []
    detections: list[Detection] = []
    models: set[str] = set()
    backends: set[str] = set()
    for i, html in enumerate(htmls):
        document = await asyncio.to_thread(parse, html, limits)
        language = source
        what = f"text {i}"
        if source == AUTO:
            detection = (await detect_texts([" ".join(t.strip() for t in document.texts)]))[0]
            detections.append(detection)
            language = detected_language(detection, what)
        try:
            texts, composed = await translate_pieces(translator, document.texts, language, target)
        except UnsupportedLanguagePair as exc:
            if source != AUTO:
                raise
            name = LANGUAGE_NAMES.get(language, language)
            raise UnsupportedLanguagePair(
                f"{what} was detected as {name} ({language}); {exc.message}"
            ) from None
        out.append(document.render(texts))
        models.update(composed.models)
        backends.update(composed.backends)
    return Composed(
        out,
        [[] for _ in out],
        sorted(models),
        sorted(backends),
        detections if source == AUTO else None,
    )
