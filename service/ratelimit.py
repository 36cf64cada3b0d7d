"""Per-key request and character limits (the `limits` library), in memory or in Redis.

A client is its API key when the service has keys and the request carries a valid one, else
its address. Counters are kept under a hash of the key, so neither Redis nor the metrics ever
hold a key. Windows are fixed, each starting at a client's first request; a request is tested
before it is counted, so one refused for its size does not use up the window.

Redis going away while serving fails open: requests are served unlimited (and counted in
nmt_rate_limit_errors) until it answers again, because an outage of a fairness measure should
not become an outage of translation. At start-up an unreachable Redis is an error.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from limits import RateLimitItem, parse_many
from limits.aio.strategies import FixedWindowRateLimiter
from limits.errors import ConfigurationError, StorageError
from limits.storage import storage_from_string

from service.metrics import Metrics
from service.settings import Settings

log = logging.getLogger(__name__)

# Seconds a Redis call may take before the request is let through (fail open).
REDIS_TIMEOUT_S = 0.5


def key_label(key: str) -> str:
    """What metrics, logs and the overrides file call a key: a short hash, never the key."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()[:12]


def parse_limits(value: object, what: str) -> list[RateLimitItem]:
    """`120/minute`, or several separated by `;`; empty or None means no limit."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return []
    if not isinstance(value, str):
        raise ValueError(f"{what}: {value!r} is not a rate limit like 120/minute")
    try:
        return list(parse_many(value))
    except ValueError as exc:
        raise ValueError(f"{what}: {value!r} is not a rate limit like 120/minute ({exc})") from None


@dataclass(frozen=True)
class KeyLimits:
    """The request and character limits of one client."""

    requests: list[RateLimitItem] = field(default_factory=list)
    chars: list[RateLimitItem] = field(default_factory=list)


@dataclass(frozen=True)
class Decision:
    """Whether a request may go on, and the X-RateLimit-* / Retry-After headers to send."""

    allowed: bool
    headers: dict[str, str]
    limit: str = ""  # which limit refused it: requests | chars
    message: str = ""


def read_overrides(path: Path, defaults: KeyLimits) -> dict[str, KeyLimits]:
    """Per-key limits from a JSON file, keyed by the key itself or by its key_label:

        {"sha256:0123456789ab": {"rate_limit": "600/minute", "char_rate_limit": null}}

    A field left out keeps the default; null lifts that limit for the key.
    """
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"rate limits file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"rate limits file {path}: expected a JSON object of keys")
    out: dict[str, KeyLimits] = {}
    for n, (key, entry) in enumerate(data.items()):
        where = f"rate limits file {path}, entry {n}"  # never the key: it may be a secret
        if not isinstance(entry, dict) or set(entry) - {"rate_limit", "char_rate_limit"}:
            raise ValueError(f"{where}: expected an object with rate_limit and/or char_rate_limit")
        requests, chars = defaults.requests, defaults.chars
        if "rate_limit" in entry:
            requests = parse_limits(entry["rate_limit"], where)
        if "char_rate_limit" in entry:
            chars = parse_limits(entry["char_rate_limit"], where)
        out[key if key.startswith("sha256:") else key_label(key)] = KeyLimits(requests, chars)
    return out


class RateLimiter:
    """The limits of every client and their shared counters."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.metrics = metrics
        self.defaults = KeyLimits(
            parse_limits(settings.rate_limit, "NMT_RATE_LIMIT"),
            parse_limits(settings.char_rate_limit, "NMT_CHAR_RATE_LIMIT"),
        )
        self.overrides = (
            read_overrides(settings.rate_limits_file, self.defaults)
            if settings.rate_limits_file
            else {}
        )
        self.enabled = bool(
            self.defaults.requests
            or self.defaults.chars
            or any(o.requests or o.chars for o in self.overrides.values())
        )
        self.storage_uri = settings.rate_limit_storage
        uri = (
            self.storage_uri
            if self.storage_uri.startswith("async+")
            else "async+" + self.storage_uri
        )
        options: dict[str, float | str | bool] = {"wrap_exceptions": True}
        if "redis" in uri:
            options |= {
                "implementation": "redispy",
                "socket_timeout": REDIS_TIMEOUT_S,
                "socket_connect_timeout": REDIS_TIMEOUT_S,
            }
        try:
            self.storage = storage_from_string(uri, **options)
        except ConfigurationError as exc:
            raise ValueError(f"NMT_RATE_LIMIT_STORAGE: {self.storage_uri!r}: {exc}") from None
        self.limiter = FixedWindowRateLimiter(self.storage)
        self._storage_down = False

    def check_storage(self) -> None:
        """Fail when limits are on and the storage does not answer: a blocking check for
        `python -m service`, before the server starts, so the error comes without a traceback."""
        if not self.enabled:
            return
        uri = self.storage_uri.removeprefix("async+")
        options = {"socket_connect_timeout": REDIS_TIMEOUT_S} if "redis" in uri else {}
        if not storage_from_string(uri, **options).check():
            raise ValueError(
                f"rate limit storage {self._shown_uri()} is unreachable (NMT_RATE_LIMIT_STORAGE)"
            )

    async def start(self) -> None:
        """Fail start-up when the storage does not answer (only when limits are on)."""
        if not self.enabled:
            return
        if not await self.storage.check():  # type: ignore[misc]
            raise RuntimeError(
                f"rate limit storage {self._shown_uri()} is unreachable (NMT_RATE_LIMIT_STORAGE)"
            )
        log.info("rate limits on, counters in %s", self._shown_uri())

    def limits_for(self, identity: str) -> KeyLimits:
        return self.overrides.get(identity, self.defaults)

    async def check(self, identity: str, chars: int) -> Decision:
        """Count one request of `chars` characters for a client (its key_label or address)."""
        limits = self.limits_for(identity)
        if not (limits.requests or limits.chars):
            return Decision(True, {})
        ident = identity.removeprefix("sha256:")
        try:
            decision = await self._check(limits, ident, chars)
        except StorageError as exc:
            self.metrics.rate_limit_errors.inc()
            if not self._storage_down:
                log.warning(
                    "rate limit storage failed, serving without limits: %s", exc.storage_error
                )
            self._storage_down = True
            return Decision(True, {})
        if self._storage_down:
            log.warning("rate limit storage answers again; limits apply")
            self._storage_down = False
        if not decision.allowed:
            label = identity if identity.startswith("sha256:") else "address"
            self.metrics.rate_limited.labels(key=label, limit=decision.limit).inc()
        return decision

    async def _check(self, limits: KeyLimits, ident: str, chars: int) -> Decision:
        # Tested before counted, so that a refused request consumes nothing.
        checks = [("requests", item, 1) for item in limits.requests]
        checks += [("chars", item, chars) for item in limits.chars if chars]
        for what, item, cost in checks:
            if cost > item.amount:
                return await self._refuse(
                    what,
                    item,
                    ident,
                    f"this request's {cost} characters are over the limit of {item}",
                )
            if not await self.limiter.test(item, what, ident, cost=cost):
                return await self._refuse(what, item, ident, f"rate limit {item} ({what}) reached")
        for what, item, cost in checks:
            await self.limiter.hit(item, what, ident, cost=cost)
        # The headers describe the first request limit (or the first character limit).
        what, item, _ = checks[0]
        return Decision(True, await self._headers(what, item, ident))

    async def _refuse(self, what: str, item: RateLimitItem, ident: str, message: str) -> Decision:
        headers = await self._headers(what, item, ident)
        retry = max(1, math.ceil(float(headers["X-RateLimit-Reset"]) - time.time()))
        if what == "chars" and message.startswith("this request"):
            retry = item.get_expiry()
        headers["Retry-After"] = str(retry)
        return Decision(False, headers, what, message)

    async def _headers(self, what: str, item: RateLimitItem, ident: str) -> dict[str, str]:
        stats = await self.limiter.get_window_stats(item, what, ident)
        reset = (
            stats.reset_time if stats.reset_time > time.time() else time.time() + item.get_expiry()
        )
        return {
            "X-RateLimit-Limit": str(item.amount),
            "X-RateLimit-Remaining": str(max(0, stats.remaining)),
            "X-RateLimit-Reset": str(math.ceil(reset)),
        }

    def _shown_uri(self) -> str:
        """The storage address without a password."""
        scheme, sep, rest = self.storage_uri.partition("://")
        return f"{scheme}{sep}{rest.rpartition('@')[2]}"
