"""Locust users for the translation service: `locust -f loadtest/locustfile.py --host URL`.

The same request mix as `python -m loadtest` (single texts, and batches at
--batch-fraction), for people who prefer Locust's web UI or its distributed workers.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import gevent
from locust import HttpUser, between, events, task

from loadtest.sentences import default_sentences_path, load_sentences
from loadtest.workload import Workload, WorkloadConfig


@events.init.add_listener
def _fresh_clock(**_: Any) -> None:
    # gevent's loop caches its clock; on a loaded machine the imports before this point can
    # take longer than --run-time, and the run-time timer, set from the stale clock, fires at
    # once and ends the run before a request is sent.
    gevent.get_hub().loop.update_now()


@events.init_command_line_parser.add_listener
def _arguments(parser: Any) -> None:
    parser.add_argument("--sentences", default="", help="one sentence per line, .gz allowed")
    parser.add_argument("--source-lang", default="en")
    parser.add_argument("--target-lang", default="de")
    parser.add_argument("--batch-fraction", type=float, default=0.2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--api-key", default="", help="when the service has NMT_API_KEYS set")


class TranslateUser(HttpUser):
    """A client that translates, and now and then asks which languages exist."""

    wait_time = between(0.0, 0.5)

    def on_start(self) -> None:
        options = self.environment.parsed_options
        source = options.source_lang if options else "en"
        path = Path(options.sentences) if options and options.sentences else None
        config = WorkloadConfig(
            source_lang=source,
            target_lang=options.target_lang if options else "de",
            batch_fraction=options.batch_fraction if options else 0.2,
            batch_size=options.batch_size if options else 8,
            api_key=(options.api_key or None) if options else None,
        )
        # A seed per user: with one shared seed every user would send the same sequence.
        self.workload = Workload(
            load_sentences(path or default_sentences_path(source)),
            config,
            seed=random.randrange(2**32),
        )
        self.client.headers.update(self.workload.headers())

    @task(10)
    def translate(self) -> None:
        planned = self.workload.next_request()
        # One name per kind, so Locust's table separates single texts from batches.
        name = f"{planned.path} [{'batch' if planned.batched else 'single'}]"
        with self.client.post(
            planned.path, json=planned.payload, name=name, catch_response=True
        ) as response:
            if response.status_code == 200 and not planned.accepts(response.json()):
                response.failure("translation count does not match the request")

    @task(1)
    def languages(self) -> None:
        self.client.get("/languages")
