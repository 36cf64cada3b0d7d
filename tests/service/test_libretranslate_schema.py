"""The OpenAPI schema against the running server: the limits it states, and a bounded
schemathesis run with every check (schemathesis.toml at the repository root)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.openapi import NOT_BLANK
from tests.service_helpers import Served, serve, tiny_settings

pytestmark = pytest.mark.slow  # a served app, and schemathesis against it

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def served(tiny_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    files = tmp_path_factory.mktemp("files")
    with serve(tiny_settings(tiny_models_dir, max_chars=300, max_texts=6, files_dir=files)) as s:
        yield s


def test_schema_states_the_limits(served: Served) -> None:
    schemas = served.client.get("/openapi.json").json()["components"]["schemas"]
    for name, field in (("TranslateRequest", "text"), ("LibreTranslateRequest", "q")):
        one, many = schemas[name]["properties"][field]["anyOf"]
        assert (one["minLength"], one["maxLength"], one["pattern"]) == (1, 300, NOT_BLANK)
        assert (many["minItems"], many["maxItems"], many["items"]["maxLength"]) == (1, 6, 300)
    v1 = schemas["TranslateRequest"]["properties"]
    assert v1["beam_size"]["anyOf"][0] | {"description": ""} == {
        "type": "integer",
        "minimum": 1,
        "maximum": 8,
        "description": "",
    }
    assert (v1["max_length"]["anyOf"][0]["minimum"], v1["max_length"]["anyOf"][0]["maximum"]) == (
        1,
        1024,
    )
    assert v1["alternatives"]["maximum"] == 7
    assert schemas["DetectRequest"]["properties"]["q"]["maxLength"] == 300
    paths = served.client.get("/openapi.json").json()["paths"]
    body = paths["/translate"]["post"]["requestBody"]["content"]
    assert {"application/json", "application/x-www-form-urlencoded"} <= set(body)
    assert "multipart/form-data" in paths["/translate_file"]["post"]["requestBody"]["content"]


def test_schemathesis_finds_no_failure(served: Served, tmp_path: Path) -> None:
    # A bounded run (about 250 cases); docs/api.md has a longer one's figures.
    run = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
            "run",
            f"{served.url}/openapi.json",
            "--checks",
            "all",
            "--max-examples",
            "25",
            "--seed",
            "1",
            "--request-timeout",
            "30",
            "--generation-database",
            "none",  # nothing written into the repository
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-6000:]
    assert " passed" in out and "failed" not in out.split("SUMMARY")[-1], out[-3000:]
    # The server kept serving throughout.
    assert served.client.get("/health/ready").status_code == 200
