"""The web page at / and /docs, /redoc in a real headless Chromium (Debian's, via
chromium-driver) against a real service process, with every host but loopback unreachable."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.ui import WebDriverWait

from tests.service_helpers import clean_env, free_port, service_process

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
EN = "Two young men are playing soccer in a park."
DE = "Zwei junge Männer spielen Fußball in einem Park."
FR = "Deux jeunes hommes jouent au football dans un parc."

pytestmark = [
    pytest.mark.slow,
    # Without the browser: skipped, except in CI, where that is a failure (tests/conftest.py).
    pytest.mark.requires_tool("chromium", "chromedriver"),
    pytest.mark.skipif(
        not (Path(CHROMIUM).exists() and Path(DRIVER).exists()),
        reason="needs Debian's chromium and chromium-driver (.ci/run installs them)",
    ),
]


@contextmanager
def service(tiny_models_dir: Path, log: Path, **env: str) -> Iterator[str]:
    port = free_port()
    values = (
        clean_env(
            models_dir=str(tiny_models_dir),
            artifacts_dir=str(tiny_models_dir.parent / "onnx-artifacts"),
            device="cpu",
            precision="fp32",
            threads="1",
            default_beam_size="1",
            max_chars="200",
            log_level="warning",
            files_dir=str(log.parent / "files"),
        )
        | env
    )
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port)]
    with service_process(command, url, cwd=REPO, env=values, log=log, timeout=120):
        yield url


@pytest.fixture(scope="module")
def url(tiny_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with service(tiny_models_dir, tmp_path_factory.mktemp("web") / "service.log") as u:
        yield u


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1200,900",
        # Offline: every name but loopback fails to resolve, so a CDN asset could not load.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(DRIVER))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def by_id(driver: WebDriver, test_id: str):  # type: ignore[no-untyped-def]
    return driver.find_element(By.CSS_SELECTOR, f'[data-testid="{test_id}"]')


def wait(driver: WebDriver, condition, timeout: float = 60):  # type: ignore[no-untyped-def]
    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(lambda d: condition(d))


def api(url: str, text: str, source: str, target: str) -> str:
    # As the page asks: with two alternatives (so a beam of three).
    body = {"q": text, "source": source, "target": target, "alternatives": 2}
    return str(httpx.post(f"{url}/translate", json=body, timeout=30).json()["translatedText"])


def type_text(driver: WebDriver, text: str) -> None:
    box = by_id(driver, "source-text")
    box.clear()
    box.send_keys(text)


def resources_loaded(driver: WebDriver) -> list[str]:
    return list(
        driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)"
            ".concat([location.href])"
        )
    )


def test_translate_swap_detect_and_errors(url: str, browser: WebDriver, tmp_path: Path) -> None:
    browser.get(url + "/")
    wait(browser, lambda d: len(Select(by_id(d, "source-lang")).options) >= 3)
    source, target = Select(by_id(browser, "source-lang")), Select(by_id(browser, "target-lang"))
    assert [o.get_attribute("value") for o in source.options] == ["auto", "de", "en"]
    # Every control has a label.
    for test_id in ("source-lang", "target-lang", "source-text", "target-text"):
        element_id = by_id(browser, test_id).get_attribute("id")
        assert browser.find_elements(By.CSS_SELECTOR, f'label[for="{element_id}"]'), test_id
    assert not by_id(browser, "api-key").is_displayed()  # no keys on this server

    # English to German, as you type (debounced).
    source.select_by_value("en")
    target.select_by_value("de")
    type_text(browser, EN)
    german = api(url, EN, "en", "de")
    wait(browser, lambda d: by_id(d, "target-text").get_attribute("value") == german)
    assert by_id(browser, "char-count").text == f"{len(EN)} / 200"
    assert by_id(browser, "alternatives").tag_name == "ul"
    assert not by_id(browser, "error").is_displayed()

    # Swap: German to English, the translation becomes the source text.
    by_id(browser, "swap").click()
    assert (source.first_selected_option.get_attribute("value"), "en") == (
        "de",
        target.first_selected_option.get_attribute("value"),
    )
    assert by_id(browser, "source-text").get_attribute("value") == german
    back = api(url, german, "de", "en")
    wait(browser, lambda d: by_id(d, "target-text").get_attribute("value") == back)

    # Auto-detect, with the button this time.
    by_id(browser, "live").click()
    source.select_by_value("auto")
    target.select_by_value("en")
    type_text(browser, DE)
    by_id(browser, "translate").click()
    wait(browser, lambda d: "German" in by_id(d, "detected").text)
    assert by_id(browser, "target-text").get_attribute("value") == api(url, DE, "de", "en")

    # A language without a model: the server's 400, in words.
    type_text(browser, FR)
    by_id(browser, "translate").click()
    wait(browser, lambda d: by_id(d, "error").is_displayed())
    assert "French" in by_id(browser, "error").text

    # Over the limit: said on the page, the count marked.
    type_text(browser, "A dog runs. " * 17)
    by_id(browser, "translate").click()
    wait(browser, lambda d: "limit is 200" in by_id(d, "error").text)
    assert "over" in (by_id(browser, "char-count").get_attribute("class") or "")

    # ReDoc's "powered by" footer asks its CDN for a logo; offline it is only not shown.
    loaded = [
        r for r in resources_loaded(browser) if r != "https://cdn.redoc.ly/redoc/logo-mini.svg"
    ]
    assert all(r.startswith(url) for r in loaded), loaded
    shots = Path(os.environ.get("NMT_SCREENSHOT_DIR", tmp_path))
    type_text(browser, EN)
    source.select_by_value("en")
    target.select_by_value("de")
    by_id(browser, "translate").click()
    wait(browser, lambda d: by_id(d, "target-text").get_attribute("value") == german)
    assert browser.save_screenshot(str(shots / "web-page.png"))


def test_phone_sized_screen(url: str, browser: WebDriver, tmp_path: Path) -> None:
    browser.set_window_size(390, 844)
    try:
        browser.get(url + "/")
        wait(browser, lambda d: len(Select(by_id(d, "source-lang")).options) >= 3)
        width = browser.execute_script("return document.documentElement.scrollWidth")
        assert width <= browser.execute_script("return window.innerWidth")
        source_box = by_id(browser, "source-text").rect
        target_box = by_id(browser, "target-text").rect
        assert target_box["y"] > source_box["y"]  # stacked, not side by side
        shots = Path(os.environ.get("NMT_SCREENSHOT_DIR", tmp_path))
        assert browser.save_screenshot(str(shots / "web-page-phone.png"))
    finally:
        browser.set_window_size(1200, 900)


@pytest.mark.parametrize(
    ("path", "selector"), [("/docs", ".opblock"), ("/redoc", "[data-section-id]")]
)
def test_docs_offline(url: str, browser: WebDriver, path: str, selector: str) -> None:
    browser.get(url + path)
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, selector)) >= 10, timeout=60)
    text = browser.find_element(By.TAG_NAME, "body").text
    for operation in ("/translate", "/detect", "/translate_file", "/frontend/settings"):
        assert operation in text, operation
    # ReDoc's "powered by" footer asks its CDN for a logo; offline it is only not shown.
    loaded = [
        r for r in resources_loaded(browser) if r != "https://cdn.redoc.ly/redoc/logo-mini.svg"
    ]
    assert all(r.startswith(url) for r in loaded), loaded


def test_api_key_field_when_keys_are_required(
    tiny_models_dir: Path, browser: WebDriver, tmp_path: Path
) -> None:
    with service(tiny_models_dir, tmp_path / "service.log", NMT_API_KEYS="sesame") as keyed:
        browser.get(keyed + "/")
        wait(browser, lambda d: by_id(d, "api-key").is_displayed())
        Select(by_id(browser, "source-lang")).select_by_value("en")
        type_text(browser, EN)
        by_id(browser, "translate").click()
        wait(browser, lambda d: "API key" in by_id(d, "error").text)
        by_id(browser, "api-key").send_keys("sesame")
        by_id(browser, "translate").click()
        wait(browser, lambda d: by_id(d, "target-text").get_attribute("value") != "")
        assert not by_id(browser, "error").is_displayed()
