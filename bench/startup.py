"""`python -m bench.startup`: start-up time and memory of the service with every pair loaded.

Starts `python -m service` in a subprocess on a models directory and times it from spawn to
the first 200 of /health/ready: a cold start (an empty graph cache: every pair is exported
first) and then a warm one (the same cache: graphs are only loaded), at each NMT_LOAD_WORKERS
asked for. Once ready, one sentence is translated in every direction /languages lists (direct
and pivoted), and the process's resident memory is read from /proc: VmRSS now and VmHWM, its
peak since spawn.

--stand-ins fills the directions en-fr, fr-en, en-cs and cs-en that the models directory
lacks with copies of en-de and de-en relabelled (same size and architecture as the configs
of the missing ones; their translations are German, only their cost is real).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.toolkit import ServiceProcess
from model.checkpoint import CONFIG_FILE, read_model_config

STAND_INS = {"en-fr": "en-de", "fr-en": "de-en", "en-cs": "en-de", "cs-en": "de-en"}


@dataclass
class Start:
    cache: str  # cold | warm
    workers: int
    pairs: int
    directions: int
    ready_s: float
    rss_mib: float
    peak_mib: float


def build_models_dir(models: Path, out: Path, stand_ins: bool) -> Path:
    """Links to every model directory, plus relabelled copies where --stand-ins asks."""
    out.mkdir(parents=True)
    served = {}
    for config in sorted(models.glob(f"*/{CONFIG_FILE}")):
        _, meta = read_model_config(config.parent)
        served[f"{meta['source_lang']}-{meta['target_lang']}"] = config.parent.resolve()
    for pair, directory in served.items():
        (out / pair).symlink_to(directory)
    if stand_ins:
        for pair, like in STAND_INS.items():
            if pair in served or like not in served:
                continue
            shutil.copytree(served[like], out / pair)
            raw = json.loads((out / pair / CONFIG_FILE).read_text())
            raw["source_lang"], raw["target_lang"] = pair.split("-")
            (out / pair / CONFIG_FILE).write_text(json.dumps(raw, indent=2))
    return out


def measure(models: Path, artifacts: Path, workers: int, cache: str, timeout_s: float) -> Start:
    env = {
        "NMT_MODELS_DIR": str(models),
        "NMT_ARTIFACTS_DIR": str(artifacts),
        "NMT_LOAD_WORKERS": str(workers),
        "NMT_LOG_LEVEL": "warning",
    }
    with (
        ServiceProcess(env) as server,
        httpx.Client(base_url=server.url, timeout=60, trust_env=False) as client,
    ):
        ready_s = server.wait_ready(timeout_s, poll_s=0.05)
        health = client.get("/health/ready").json()
        failed = [p for p, m in health["models"].items() if m.get("state") != "ready"]
        if failed:
            raise RuntimeError(f"pairs not ready: {failed}")
        directions = 0
        for language in client.get("/languages").json():
            for target in language["targets"]:
                r = client.post(
                    "/v1/translate",
                    json={
                        "text": "Two dogs play in the snow.",
                        "source_lang": language["code"],
                        "target_lang": target,
                    },
                )
                r.raise_for_status()
                directions += 1
        rss, peak = server.memory_mib()
        return Start(cache, workers, len(health["models"]), directions, ready_s, rss, peak)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--stand-ins", action="store_true", help="see the module docstring")
    parser.add_argument(
        "--workers", default="1,0", help="NMT_LOAD_WORKERS values, comma-separated (0: auto)"
    )
    parser.add_argument("--warm-runs", type=int, default=2, help="warm starts per setting")
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        models = build_models_dir(args.models, Path(tmp) / "models", args.stand_ins)
        rows = []
        for i, workers in enumerate(int(w) for w in args.workers.split(",")):
            artifacts = Path(tmp) / f"artifacts-{i}"  # a fresh cache: the cold start exports
            rows.append(measure(models, artifacts, workers, "cold", args.timeout))
            print(rows[-1], flush=True)
            for _ in range(args.warm_runs):
                rows.append(measure(models, artifacts, workers, "warm", args.timeout))
                print(rows[-1], flush=True)
    backend = os.environ.get("NMT_BACKEND", "auto")
    cpus, load = len(os.sched_getaffinity(0)), os.getloadavg()[0]
    print(f"\nNMT_BACKEND={backend}; {cpus} CPUs; load average {load:.1f} at the end\n")
    print("| cache | NMT_LOAD_WORKERS | pairs | directions | ready (s) | RSS (MiB) | peak (MiB) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r.cache} | {r.workers} | {r.pairs} | {r.directions} | {r.ready_s:.1f} "
            f"| {r.rss_mib:.0f} | {r.peak_mib:.0f} |"
        )


if __name__ == "__main__":
    main()
