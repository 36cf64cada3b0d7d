"""service.detect: both detectors on real sentences, and detection off the event loop."""

from __future__ import annotations

import asyncio
import threading

import pytest

from model.data import read_lines
from service import detect
from service.detect import Detection, detect_texts, get_detector


@pytest.mark.parametrize("name", ["lingua", "langdetect"])
def test_detectors_name_the_language(name: str, data_dir) -> None:  # type: ignore[no-untyped-def]
    detector = get_detector(name)
    for lang in ("en", "de", "fr", "cs"):
        sentences = read_lines(data_dir, "test_2016_flickr", lang)[:50]
        right = sum(detector.detect(s).language == lang for s in sentences)
        assert right >= 49, (name, lang, right)
    assert detector.detect("1234 !!") == Detection(None, 0.0)
    found = detector.detect("Zwei Hunde spielen im Schnee.")
    assert found.language == "de" and 50 < found.confidence <= 100


def test_detection_runs_in_a_worker_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[threading.Thread] = []
    real = detect.get_detector("lingua")

    class Recording:
        name = "recording"

        def detect(self, text: str) -> Detection:
            threads.append(threading.current_thread())
            return real.detect(text)

    monkeypatch.setattr(detect, "get_detector", lambda name="lingua": Recording())
    found = asyncio.run(detect_texts(["A dog runs in the snow.", "Ein Hund rennt im Schnee."]))
    assert [f.language for f in found] == ["en", "de"]
    assert threads and all(t is not threading.main_thread() for t in threads)
