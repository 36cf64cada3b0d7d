"""`python -m bench.detect_accuracy`: language detection accuracy, lingua against langdetect.

Both detectors are restricted to the service's candidate languages (service.detect). For
every Multi30k split and language present, each sentence is detected and counted right when
the answer is its language; then 1, 2 and 3 word snippets (a seeded random run of words of
each test and validation sentence) the same way. Prints a Markdown table per part.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from model.data import SPLITS, default_data_dir, read_lines
from service.detect import CANDIDATES, DETECTORS, Detector

SNIPPET_SPLITS = tuple(split for split in SPLITS if split != "train")


def accuracy(detector: Detector, texts: list[str], language: str) -> float:
    right = sum(detector.detect(t).language == language for t in texts)
    return 100 * right / len(texts)


def snippets(sentences: list[str], n_words: int, rng: random.Random) -> list[str]:
    out = []
    for sentence in sentences:
        words = sentence.split()
        if len(words) < n_words:
            continue
        start = rng.randrange(len(words) - n_words + 1)
        out.append(" ".join(words[start : start + n_words]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    parser.add_argument("--train-limit", type=int, default=0, help="0: every train sentence")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    detectors = {name: cls() for name, cls in DETECTORS.items()}
    names = list(detectors)

    print("Whole sentences, % detected right\n")
    print("| split | language | sentences | " + " | ".join(names) + " |")
    print("|---|---|---|" + "---|" * len(names))
    for split in SPLITS:
        for lang in CANDIDATES:
            path = args.data_dir / f"{split}.{lang}.gz"
            if not path.exists():
                continue
            texts = [t for t in read_lines(args.data_dir, split, lang) if t.strip()]
            if split == "train" and args.train_limit:
                texts = texts[: args.train_limit]
            cells = [f"{accuracy(detectors[n], texts, lang):.2f}" for n in names]
            print(f"| {split} | {lang} | {len(texts)} | " + " | ".join(cells) + " |", flush=True)

    print("\nSnippets of 1-3 words from the test and validation sentences, % detected right\n")
    print("| words | language | snippets | " + " | ".join(names) + " |")
    print("|---|---|---|" + "---|" * len(names))
    for n_words in (1, 2, 3):
        for lang in CANDIDATES:
            rng = random.Random(args.seed)
            sentences = [
                t
                for split in SNIPPET_SPLITS
                if (args.data_dir / f"{split}.{lang}.gz").exists()
                for t in read_lines(args.data_dir, split, lang)
            ]
            texts = snippets(sentences, n_words, rng)
            cells = [f"{accuracy(detectors[n], texts, lang):.2f}" for n in names]
            print(f"| {n_words} | {lang} | {len(texts)} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
