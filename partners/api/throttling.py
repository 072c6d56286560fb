import time

from django.core.cache import cache
from rest_framework.throttling import SimpleRateThrottle


class ApiKeyRateThrottle(SimpleRateThrottle):
    """Requests per API key (per till), counted in the cache: Redis when REDIS_URL is set.

    A fixed-window counter: one atomic increment a request. DRF's default keeps a list of
    every request's time and rewrites it whole each time, which at a busy till costs more
    than the purchase it guards."""

    scope = "api_key"

    def get_cache_key(self, request, view):
        api_key = getattr(request, "auth", None)
        prefix = getattr(api_key, "prefix", None)
        if prefix is None:
            return None
        return self.cache_format % {"scope": self.scope, "ident": prefix}

    def allow_request(self, request, view):
        if self.rate is None:
            return True
        ident = self.get_cache_key(request, view)
        if ident is None:
            return True
        now = time.time()
        window = int(now // self.duration)
        self.window_ends = (window + 1) * self.duration
        self.now = now
        key = f"{ident}:{window}"
        return _count(key, timeout=self.duration + 1) <= self.num_requests

    def wait(self):
        return max(1.0, self.window_ends - self.now)


def _count(key: str, *, timeout: int) -> int:
    """The window's count after this request: one Redis round trip (config.cache)."""
    if hasattr(cache, "count"):  # config.cache.ReusingRedisCache
        return cache.count(key, timeout)
    try:
        return cache.incr(key)
    except ValueError:  # the window's first request (or a race for it)
        return 1 if cache.add(key, 1, timeout=timeout) else cache.incr(key)
