"""`python -m service [--host H] [--port P]`: serve the API with uvicorn."""

from __future__ import annotations

import argparse
import logging

import uvicorn

from service.app import create_app
from service.settings import Settings


def main(argv: list[str] | None = None) -> None:
    """Read NMT_* settings, let --host/--port override them, and serve until SIGTERM/SIGINT."""
    settings = Settings()
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
    # On SIGTERM uvicorn stops accepting, lets in-flight requests finish, then the lifespan
    # drains the batchers.
    uvicorn.run(
        create_app(settings),
        host=args.host,
        port=args.port,
        log_level=settings.log_level,
        access_log=False,
    )


if __name__ == "__main__":
    main()
