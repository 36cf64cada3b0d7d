"""A sentence longer than its model takes: the same 422 under both schedulers and wherever
the sentences are tokenized (NMT_TOKENIZE), for a direct pair and for a pivot's second pass."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from service.sentences import split_sentences
from tests.service_helpers import in_process, tiny_settings

pytestmark = pytest.mark.slow  # the app with its lifespan, in process

LONG = "Q " + "q " * 90  # a sentence over the tiny models' 63 source tokens


@pytest.mark.parametrize("tokenize", ["engine", "loop"])
@pytest.mark.parametrize("scheduler", ["static", "continuous"])
def test_too_long_sentences_get_the_same_422(
    tiny_pivot_models_dir: Path, scheduler: str, tokenize: str
) -> None:
    settings = tiny_settings(
        tiny_pivot_models_dir, backend="torch", scheduler=scheduler, tokenize=tokenize
    )

    async def scenario() -> None:
        async with in_process(settings) as (app, client):
            translator = app.state.translator
            en_de = translator.runners["en-de"].active
            # a direct pair: the second text's second sentence is too long
            texts = ["A man.", "A dog. " + LONG]
            sentence = split_sentences(texts[1]).sentences[1]
            n = len(en_de.tokenizer.encode([sentence])[0])
            limit = en_de.max_positions - 1
            body = {"text": texts, "source_lang": "en", "target_lang": "de"}
            r = await client.post("/v1/translate", json=body)
            assert r.status_code == 422
            assert r.json() == {
                "error": {
                    "type": "input_too_long",
                    "message": f"text 1 has a sentence of {n} tokens; the model takes at "
                    f"most {limit} per sentence",
                }
            }
            # a pivot (fr-en, then en-de): the first pass's output is too long for en-de
            text = "Une femme lit un livre."  # (the tiny fr-en model says something here)
            english = translator.runners["fr-en"].active.translate([text], beam_size=1)[0].text
            n = len(en_de.tokenizer.encode([english])[0])
            assert n >= 2
            en_de.max_positions = n  # an en-de model with a shorter positional table
            body = {"text": ["Un homme.", text], "source_lang": "fr", "target_lang": "de"}
            r = await client.post("/v1/translate", json=body)
            assert r.status_code == 422
            assert r.json()["error"] == {
                "type": "input_too_long",
                "message": f"text 1 has a sentence whose fr-en translation has {n} tokens; "
                f"en-de takes at most {n - 1} per sentence",
            }
            # the service keeps serving
            ok = await client.post(
                "/v1/translate", json={"text": "A cat.", "source_lang": "en", "target_lang": "fr"}
            )
            assert ok.status_code == 200

    asyncio.run(scenario())
