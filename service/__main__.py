"""`python -m service [--host H] [--port P]`: serve the API with uvicorn."""

from __future__ import annotations

import argparse
import logging
import sys

import uvicorn
from pydantic import ValidationError

from service.app import create_app
from service.settings import Settings
from service.shutdown import GracefulServer


def main(argv: list[str] | None = None) -> None:
    """Read NMT_* settings, let --host/--port override them, and serve until SIGTERM/SIGINT."""
    try:
        settings = Settings()
    except ValidationError as exc:
        # One line per bad setting, no traceback: this is a configuration error.
        problems = "; ".join(
            (f"NMT_{'_'.join(str(p) for p in e['loc']).upper()}: " if e["loc"] else "")
            + e["msg"].removeprefix("Value error, ")
            for e in exc.errors(include_url=False, include_input=False)
        )
        sys.exit(f"invalid configuration: {problems}")
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
    try:
        app = create_app(settings)
        app.state.rate_limiter.check_storage()
    except ValueError as exc:  # a rate limits file or a storage that cannot be used
        sys.exit(f"invalid configuration: {exc}")
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level=settings.log_level,
        access_log=False,
        # Requests in flight when the grace window ends have their own deadline; past it
        # (and a little more) uvicorn stops waiting for them.
        timeout_graceful_shutdown=int(settings.request_timeout_s) + 5,
    )
    # SIGTERM: not ready and Connection: close for shutdown_grace_s, then uvicorn stops
    # accepting, lets in-flight requests finish, and the lifespan drains the batchers.
    GracefulServer(config, app.state.draining, settings.shutdown_grace_s).run()


if __name__ == "__main__":
    main()
