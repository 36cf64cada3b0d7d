"""Language detection: which of the service's languages a text is written in.

Two well-kept detectors whose models ship inside their wheels, both restricted to the same
candidate languages: lingua (the service's choice; bench/detect_accuracy.py measures both,
docs/api.md has the table) and langdetect (seeded, so its answers repeat). Detection is
synchronous CPU work: routes call it through `detect_texts`, off the event loop.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Protocol

# Every language a model is trained for (en-de, de-en now; fr and cs are being trained).
# Detecting among all four, not only the loaded pairs, lets a French text be named as
# French (and refused with that name) rather than be forced into English or German.
CANDIDATES = ("en", "de", "fr", "cs")
LANGUAGE_NAMES = {"en": "English", "de": "German", "fr": "French", "cs": "Czech"}


@dataclass(frozen=True)
class Detection:
    """A detected language (None: no letters to go by) and its confidence, 0-100."""

    language: str | None
    confidence: float


class Detector(Protocol):
    name: str

    def detect(self, text: str) -> Detection: ...


class LinguaDetector:
    """lingua-language-detector, its models restricted to the candidate languages."""

    name = "lingua"

    def __init__(self, languages: tuple[str, ...] = CANDIDATES) -> None:
        from lingua import IsoCode639_1, Language, LanguageDetectorBuilder

        self._languages = [
            Language.from_iso_code_639_1(getattr(IsoCode639_1, code.upper())) for code in languages
        ]
        self._detector = (
            LanguageDetectorBuilder.from_languages(*self._languages)
            .with_preloaded_language_models()
            .build()
        )

    def detect(self, text: str) -> Detection:
        values = self._detector.compute_language_confidence_values(text)
        # lingua answers all zeros when the text has no letters of any candidate.
        if not values or values[0].value <= 0:
            return Detection(None, 0.0)
        best = values[0]
        return Detection(best.language.iso_code_639_1.name.lower(), round(best.value * 100, 1))


class LangdetectDetector:
    """langdetect (Google's language-detection), only the candidates' profiles, seeded."""

    name = "langdetect"

    def __init__(self, languages: tuple[str, ...] = CANDIDATES, seed: int = 0) -> None:
        from langdetect.detector_factory import DetectorFactory

        profiles = resources.files("langdetect") / "profiles"
        self._factory = DetectorFactory()
        self._factory.load_json_profile(
            [(profiles / code).read_text("utf-8") for code in languages]
        )
        self._factory.set_seed(seed)

    def detect(self, text: str) -> Detection:
        from langdetect.lang_detect_exception import LangDetectException

        detector = self._factory.create()
        detector.append(text)
        try:
            best = detector.get_probabilities()
        except LangDetectException:
            return Detection(None, 0.0)
        if not best:
            return Detection(None, 0.0)
        return Detection(best[0].lang, round(best[0].prob * 100, 1))


DETECTORS: dict[str, type[LinguaDetector] | type[LangdetectDetector]] = {
    "lingua": LinguaDetector,
    "langdetect": LangdetectDetector,
}


@cache
def get_detector(name: str = "lingua") -> Detector:
    """One detector per kind per process (lingua's models take a while to load)."""
    return DETECTORS[name]()


async def detect_texts(texts: list[str], name: str = "lingua") -> list[Detection]:
    """Detect each text in a worker thread, so the event loop keeps serving."""

    def work() -> list[Detection]:
        detector = get_detector(name)
        return [detector.detect(t) for t in texts]

    return await asyncio.to_thread(work)
