"""Layered fixtures: real corpus files -> tiny tokenizer -> tiny random model directories."""

from __future__ import annotations

import os
from collections.abc import Callable, Generator
from pathlib import Path

import pytest
import torch

from model.config import ModelConfig
from model.data import default_data_dir, read_lines
from model.tokenizer import Tokenizer, train_tokenizer
from service.settings import Settings
from tests import service_helpers, tiny_models
from tests.tiny_models import write_tiny_model

REPO = Path(__file__).resolve().parents[1]

# Values of CI that mean "not CI"; anything else (true, 1, yes, True...) means CI.
NOT_CI = {"", "0", "false", "no", "off", "n", "f"}
# The service's own variables: a shell that sets one (an API key, a backend) must not change
# what the tests see, in this process or in the services they start.
SETTING_VARIABLES = {f"NMT_{name.upper()}" for name in Settings.model_fields}
LOOPBACK = "localhost,127.0.0.1,::1"


def in_ci() -> bool:
    """Whether this run is CI: CI set to any true value (CI systems spell it true, 1, yes...).

    In CI a test that needs a tool must not skip quietly: see pytest_runtest_makereport."""
    return os.environ.get("CI", "").strip().lower() not in NOT_CI


def pytest_configure(config: pytest.Config) -> None:
    # Tiny models gain nothing from intra-op threads, and a second thread on a busy 2-core
    # machine can make torch ops orders of magnitude slower.
    torch.set_num_threads(1)
    # pydantic-settings matches variable names case-insensitively.
    for name in [n for n in os.environ if n.upper() in SETTING_VARIABLES]:
        del os.environ[name]
    # Clients in this process (httpx, requests, selenium) talk to loopback servers directly,
    # whatever proxy the shell configures; the services started get no proxy at all
    # (tests/service_helpers.clean_env).
    for name in ("NO_PROXY", "no_proxy"):
        current = os.environ.get(name)
        os.environ[name] = f"{current},{LOOPBACK}" if current else LOOPBACK


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    # Before the test's fixtures: the server-starting helpers check its slow marker.
    service_helpers.CURRENT["item"] = item


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, None]:
    """In CI, a test marked requires_tool that skipped (its tool missing) fails instead: .ci/run
    installs every tool, so a skip there means a tool test silently stopped running."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    marker = item.get_closest_marker("requires_tool")
    expected = hasattr(report, "wasxfail")  # an xfail is reported as a skip too
    if report.skipped and not expected and marker is not None and in_ci():
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = (
            f"skipped in CI, but it requires {', '.join(marker.args)}: .ci/run must install "
            f"it ({reason})"
        )


@pytest.fixture(scope="session")
def tiny_config() -> Callable[..., ModelConfig]:
    """The tiny model config, as a factory: tiny_config(tokenizer=None, **overrides)."""
    return tiny_models.tiny_config


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
