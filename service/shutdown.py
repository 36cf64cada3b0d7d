"""Graceful shutdown: on SIGTERM keep serving for a grace window, then let uvicorn stop.

uvicorn, told to exit, stops accepting and closes every idle keep-alive connection at once; a
request a client sent on such a connection just then is lost. So the first SIGTERM only starts
draining: /health/ready turns 503 (load balancers and Kubernetes stop sending), every response
says `Connection: close` (clients and proxies open a new connection for their next request,
to another replica once the balancer knows), and only after NMT_SHUTDOWN_GRACE_S does uvicorn
begin its own shutdown, when no idle connection is left to close under a client. That
shutdown waits for the requests in flight, and the lifespan then drains the batchers.
"""

from __future__ import annotations

import logging
import signal
import time
from types import FrameType

import uvicorn

log = logging.getLogger(__name__)


class Draining:
    """Whether the service is in its shutdown grace window (set once, by SIGTERM)."""

    def __init__(self) -> None:
        self.since: float | None = None

    @property
    def active(self) -> bool:
        return self.since is not None

    def begin(self) -> None:
        if self.since is None:
            self.since = time.monotonic()

    def elapsed(self) -> float:
        return 0.0 if self.since is None else time.monotonic() - self.since


class GracefulServer(uvicorn.Server):
    """uvicorn.Server whose first SIGTERM starts a grace window instead of the shutdown."""

    def __init__(self, config: uvicorn.Config, draining: Draining, grace_s: float) -> None:
        super().__init__(config)
        self.draining = draining
        self.grace_s = grace_s

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Runs in the signal handler: only flags here; on_tick (in the loop) does the rest.
        if sig == signal.SIGTERM and self.grace_s > 0 and not self.draining.active:
            self.draining.begin()
            log.info("SIGTERM: not ready, serving %g s more before shutting down", self.grace_s)
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if (
            self.draining.active
            and not self.should_exit
            and self.draining.elapsed() >= self.grace_s
        ):
            log.info("grace window over: stop accepting, finish requests in flight, drain")
            # As if the signal came now: uvicorn re-raises it once it has shut down.
            super().handle_exit(signal.SIGTERM, None)
        return await super().on_tick(counter)
