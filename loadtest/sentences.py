"""Sentences to translate: one per line from a text file, gzip-compressed or not."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

# The split every benchmark and load test sends (bench.toolkit takes it from here: this
# module stays importable without torch).
SPLIT = "test_2016_flickr"


def default_data_dir() -> Path:
    """MULTI30K_DIR, else ../shared/data/multi30k beside the repository (as model.data does)."""
    env = os.environ.get("MULTI30K_DIR")
    if env:
        return Path(env)
    # Duplicated from model.data rather than imported: importing `model` pulls in torch,
    # and the load client must stay light enough to run on a separate machine.
    return Path(__file__).resolve().parents[2] / "shared" / "data" / "multi30k"


def default_sentences_path(source_lang: str) -> Path:
    """The Multi30k 2016 Flickr test set in the source language."""
    return default_data_dir() / f"{SPLIT}.{source_lang}.gz"


def load_sentences(path: Path) -> list[str]:
    """Non-empty stripped lines of a UTF-8 file; `.gz` files are decompressed."""
    path = Path(path)
    if path.suffix == ".gz":
        with gzip.open(path, "rt", encoding="utf-8") as f:
            lines = f.read().splitlines()
    else:
        lines = path.read_text(encoding="utf-8").splitlines()
    sentences = [line.strip() for line in lines if line.strip()]
    if not sentences:
        raise ValueError(f"{path}: no sentences")
    return sentences
