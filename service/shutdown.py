"""Graceful shutdown: on SIGTERM keep serving for a grace window, then let uvicorn stop.

uvicorn, told to exit, stops accepting and closes every idle keep-alive connection at once; a
request a client sent on such a connection just then is lost. So the first SIGTERM only starts
draining: /health/ready turns 503 (load balancers and Kubernetes stop sending), every response
says `Connection: close` (clients and proxies open a new connection for their next request,
to another replica once the balancer knows), and only after NMT_SHUTDOWN_GRACE_S does uvicorn
begin its own shutdown, when no idle connection is left to close under a client. Just
before that, new requests are answered 503 with Retry-After for a moment, so that clients
that kept coming are not connecting when the listener closes. The shutdown waits for the
requests in flight, and the lifespan then drains the batchers.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import time
from types import FrameType

import uvicorn

log = logging.getLogger(__name__)

# After the grace window, new requests get 503 with Retry-After for REFUSE_S before the
# listener closes. A client still connecting when a listener closes gets its connection
# reset (the kernel's accept queue is dropped), so clients are first told to stay away for
# longer than that window lasts.
REFUSE_S = 1.0
RETRY_AFTER_S = 3
# Then: how long connections that are open but idle (accepted just before the listener
# closed, their request still on its way) may take to send it.
FRESH_CONNECTION_WAIT_S = 1.0


class Draining:
    """Whether the service is in its shutdown grace window (set once, by SIGTERM)."""

    def __init__(self) -> None:
        self.since: float | None = None
        # Past the grace window: new requests are refused (503, Retry-After).
        self.refusing = False

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

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.draining.active:
            # Stop accepting first, then give connections accepted a moment ago the time to
            # send their request: uvicorn's shutdown closes every connection without one in
            # progress, and a request on its way on such a connection would be lost.
            for server in self.servers:
                server.close()
            for sock in sockets or []:
                sock.close()
            deadline = time.monotonic() + FRESH_CONNECTION_WAIT_S
            while self._idle_connections() and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
        await super().shutdown(sockets)

    def _idle_connections(self) -> bool:
        """Whether some open connection has no request in progress."""
        for connection in self.server_state.connections:
            cycle = getattr(connection, "cycle", None)
            if cycle is None or cycle.response_complete:
                return True
        return False

    async def on_tick(self, counter: int) -> bool:
        elapsed = self.draining.elapsed()
        if self.draining.active and not self.should_exit:
            if not self.draining.refusing and elapsed >= self.grace_s:
                log.info("grace window over: new requests get 503 for %g s", REFUSE_S)
                self.draining.refusing = True
            elif self.draining.refusing and elapsed >= self.grace_s + REFUSE_S:
                log.info("stop accepting, finish requests in flight, drain")
                # As if the signal came now: uvicorn re-raises it once it has shut down.
                super().handle_exit(signal.SIGTERM, None)
        return await super().on_tick(counter)
