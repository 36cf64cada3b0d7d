"""Layered fixtures: real corpus files -> tiny tokenizer -> tiny random model directories."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from model.data import default_data_dir, read_lines
from model.tokenizer import Tokenizer, train_tokenizer
from tests.tiny_models import write_tiny_model

REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    # Tiny models gain nothing from intra-op threads, and a second thread on a busy 2-core
    # machine can make torch ops orders of magnitude slower.
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = default_data_dir()
    if not (path / "train.en.gz").exists():
        pytest.fail(f"Multi30k not found at {path}: set MULTI30K_DIR")
    return path


@pytest.fixture(scope="session")
def tiny_tokenizer(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    """A 600-piece SentencePiece model trained on the first 3,000 train pairs."""
    sentences = (
        read_lines(data_dir, "train", "en")[:3000] + read_lines(data_dir, "train", "de")[:3000]
    )
    out = tmp_path_factory.mktemp("tokenizer") / "tokenizer.model"
    return train_tokenizer(sentences, out, vocab_size=600)


@pytest.fixture(scope="session")
def tiny_models_dir(tiny_tokenizer: Tokenizer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models directory holding tiny random en-de and de-en models."""
    root = tmp_path_factory.mktemp("models")
    write_tiny_model(root / "en-de", tiny_tokenizer, "en", "de", seed=1)
    write_tiny_model(root / "de-en", tiny_tokenizer, "de", "en", seed=2)
    return root


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_models_dir: Path) -> Path:
    return tiny_models_dir / "en-de"


@pytest.fixture(scope="session")
def tiny_pivot_models_dir(
    tiny_tokenizer: Tokenizer, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A third language: tiny random en-de, de-en, en-fr, fr-en and a direct de-fr, so that
    fr-de is served only through English."""
    root = tmp_path_factory.mktemp("pivot-models")
    for seed, pair in enumerate(["en-de", "de-en", "en-fr", "fr-en", "de-fr"], start=11):
        source, target = pair.split("-")
        write_tiny_model(root / pair, tiny_tokenizer, source, target, seed=seed)
    return root


@pytest.fixture(scope="session")
def tiny_moe_model_dir(tiny_tokenizer: Tokenizer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("moe")
    return write_tiny_model(
        root / "en-de",
        tiny_tokenizer,
        "en",
        "de",
        seed=3,
        moe_experts=4,
        moe_top_k=2,
        moe_shared_experts=1,
    )


@pytest.fixture(scope="session")
def shipped_models_dir() -> Path:
    return Path(os.environ.get("NMT_TEST_MODELS_DIR", REPO / "models"))
