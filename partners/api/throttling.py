from time import time as _now  # the clock (tests move it)

from django.core.cache import cache
from rest_framework.throttling import SimpleRateThrottle

from loyalty import request_memo


class ApiKeyRateThrottle(SimpleRateThrottle):
    """Requests per API key (per till), counted in the cache: Redis when REDIS_URL is set.

    A fixed-window counter: one atomic increment a request. DRF's default keeps a list of
    every request's time and rewrites it whole each time, which at a busy till costs more
    than the purchase it guards. With Redis the count rides in the round trip that reads
    the key (authentication.ApiKeyAuthentication): it is kept per key *and* secret
    presented, so a wrong secret counts apart and can never use up a till's limit."""

    scope = "api_key"

    def get_cache_key(self, request, view):
        """DRF's hook (abstract in its base); allow_request below counts by `counter`."""
        api_key = getattr(request, "auth", None)
        if getattr(api_key, "prefix", None) is None:
            return None
        return self.counter(api_key.prefix, api_key.hashed_secret, _now())[0]

    def counter(self, prefix: str, hashed_secret: str, now: float) -> tuple[str, int]:
        """The cache key of the count of `now`'s window for this key and secret (its
        hash), and how many seconds the count must live."""
        ident = f"{prefix}:{hashed_secret[:16]}:{int(now // self.duration)}"
        return self.cache_format % {"scope": self.scope, "ident": ident}, self.duration + 1

    def allow_request(self, request, view):
        if self.rate is None:
            return True
        api_key = getattr(request, "auth", None)
        if getattr(api_key, "prefix", None) is None:
            return True
        self.now = _now()
        self.window_ends = (int(self.now // self.duration) + 1) * self.duration
        key, timeout = self.counter(api_key.prefix, api_key.hashed_secret, self.now)
        count = request_memo.counted(key)  # None in another window, or without Redis
        if count is None:
            count = _count(key, timeout=timeout)
        return count <= self.num_requests

    def wait(self):
        return max(1.0, self.window_ends - self.now)


def rate_counter(prefix: str, hashed_secret: str) -> tuple[str, int] | None:
    """The (key, timeout) of the counter a request with this key and secret adds one to,
    or None when API requests are not limited."""
    throttle = ApiKeyRateThrottle()
    return None if throttle.rate is None else throttle.counter(prefix, hashed_secret, _now())


def _count(key: str, *, timeout: int) -> int:
    """The window's count after this request: one Redis round trip (config.cache)."""
    if hasattr(cache, "count"):  # config.cache.ReusingRedisCache
        return cache.count(key, timeout)
    try:
        return cache.incr(key)
    except ValueError:  # the window's first request (or a race for it)
        return 1 if cache.add(key, 1, timeout=timeout) else cache.incr(key)
