"""The intake rate limit: a sliding-window counter per API client in Redis."""

from __future__ import annotations

import logging

from redis.exceptions import RedisError
from rest_framework.throttling import ScopedRateThrottle

logger = logging.getLogger(__name__)


class IntakeThrottle(ScopedRateThrottle):
    """Rate limit on creates, per API client (INTAKE_RATE_LIMIT, e.g. "6000/minute").

    A sliding-window counter in Redis: one INCR on this window's key and one GET of the previous
    window's, in one round trip. DRF's own throttle keeps every request's timestamp in a cached list
    (read, rewritten and re-pickled on each request: 18,000 floats at 300 requests/s) and loses
    counts when two web processes read the list at once; INCR is atomic and O(1). The previous
    window counts in proportion to how much of it the sliding window still covers."""

    scope_attr = "throttle_scope"

    def get_cache_key(self, request, view):
        if request.method != "POST":
            return None
        ident = f"token:{request.user.pk}" if getattr(request.user, "pk", None) else self.get_ident(request)
        return self.cache_format % {"scope": self.scope, "ident": ident}

    def allow_request(self, request, view):
        self.scope = getattr(view, self.scope_attr, None)
        if not self.scope:
            return True
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        if self.rate is None:
            return True
        key = self.get_cache_key(request, view)
        if key is None:
            return True
        window = self.duration
        now = self.timer()
        current = int(now // window)
        elapsed = (now - current * window) / window
        client = rate_counter_client()
        this_key, previous_key = f"{key}:{current}", f"{key}:{current - 1}"
        try:
            with client.pipeline(transaction=False) as pipe:
                pipe.incr(this_key)
                pipe.expire(this_key, int(2 * window) + 1)
                pipe.get(previous_key)
                count, _, previous = pipe.execute()
        except RedisError as exc:
            # The limit protects the service; an erasure request is a legal right. With the counter
            # store down the request is let through (the database is the record), not refused.
            logger.warning("intake rate limit not applied: the counter store is unavailable (%s)", exc)
            return True
        previous = int(previous or 0)
        if previous * (1 - elapsed) + count <= self.num_requests:
            return True
        client.decr(this_key)  # a refused request does not count against the client
        self._wait = _seconds_until_allowed(previous, count - 1, elapsed, window, self.num_requests)
        return False

    def wait(self):
        return getattr(self, "_wait", None)


def _seconds_until_allowed(previous: int, count: int, elapsed: float, window: float, limit: int) -> float:
    """When one more request fits: the estimate previous*(1 - t) + count (t the fraction of this
    window gone) falls as t grows; when this window alone is full, wait for the next window, where
    this window's count becomes the decaying previous one."""
    if count + 1 <= limit and previous:
        return max(0.0, (1 - (limit - 1 - count) / previous) - elapsed) * window
    return (1 - elapsed) * window + max(0.0, 1 - (limit - 1) / max(count, 1)) * window


_rate_counter_client = None


def rate_counter_client():
    """A Redis client on the shared cache's server and database (one pool per process)."""
    global _rate_counter_client
    if _rate_counter_client is None:
        from django.conf import settings

        _rate_counter_client = counter_client_for(settings.CACHES["default"]["LOCATION"])
    return _rate_counter_client


def counter_client_for(url: str):
    """Short timeouts and one retry: with the store down a create must not wait seconds for
    retries (it goes ahead without the limit)."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1, retry=Retry(NoBackoff(), 1))
