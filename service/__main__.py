"""`python -m service [--host H] [--port P]`: serve the API with uvicorn."""

from __future__ import annotations

import argparse
import logging
import socket
import sys
from typing import Any

import uvicorn
from fastapi import FastAPI
from pydantic import ValidationError

from service.metrics import Metrics
from service.ratelimit import RateLimiter
from service.settings import Settings
from service.shutdown import GracefulServer
from service.workers import supervise, worker_count


def configured() -> Settings:
    """The NMT_* settings, or exit with one line per bad setting (no traceback)."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            (f"NMT_{'_'.join(str(p) for p in e['loc']).upper()}: " if e["loc"] else "")
            + e["msg"].removeprefix("Value error, ")
            for e in exc.errors(include_url=False, include_input=False)
        )
        sys.exit(f"invalid configuration: {problems}")


def uvicorn_config(settings: Settings, host: str, port: int, app: Any = None) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=settings.log_level,
        access_log=False,
        # Requests in flight when the grace window ends have their own deadline; past it
        # (and a little more) uvicorn stops waiting for them.
        timeout_graceful_shutdown=int(settings.request_timeout_s) + 5,
    )


def checked_app(settings: Settings) -> FastAPI:
    """The app, or exit when its rate limits file or storage cannot be used."""
    from service.app import create_app  # (not in a supervisor, which serves no app)

    try:
        app = create_app(settings)
        app.state.rate_limiter.check_storage()
    except ValueError as exc:
        sys.exit(f"invalid configuration: {exc}")
    return app


def check_rate_limits(settings: Settings) -> None:
    """What checked_app checks of the rate limits, without the app (the supervisor's)."""
    try:
        RateLimiter(settings, Metrics()).check_storage()
    except ValueError as exc:
        sys.exit(f"invalid configuration: {exc}")


def serve(
    settings: Settings, host: str, port: int, sockets: list[socket.socket] | None = None
) -> None:
    """Serve one process until SIGTERM/SIGINT: on its own port, or on sockets (a worker's)."""
    app = checked_app(settings)
    # SIGTERM: not ready and Connection: close for shutdown_grace_s, then uvicorn stops
    # accepting, lets in-flight requests finish, and the lifespan drains the batchers.
    server = GracefulServer(
        uvicorn_config(settings, host, port, app), app.state.draining, settings.shutdown_grace_s
    )
    server.run(sockets)


def main(argv: list[str] | None = None) -> None:
    """Read NMT_* settings, let --host/--port override them, and serve until SIGTERM/SIGINT."""
    settings = configured()
    parser = argparse.ArgumentParser(
        prog="python -m service",
        description="Machine translation API. Configured by NMT_* environment variables.",
    )
    parser.add_argument("--host", default=settings.host, help=f"default {settings.host}")
    parser.add_argument("--port", type=int, default=settings.port, help=f"default {settings.port}")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if worker_count(settings.workers) == 1:
        serve(settings, args.host, args.port)
        return
    check_rate_limits(settings)  # fail here, once, rather than in every worker
    sys.exit(supervise(settings, args.host, args.port))


if __name__ == "__main__":
    main()
