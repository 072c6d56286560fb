from rest_framework.throttling import SimpleRateThrottle


class ApiKeyRateThrottle(SimpleRateThrottle):
    """Requests per API key (per till), counted in the cache: Redis when REDIS_URL is set."""

    scope = "api_key"

    def get_cache_key(self, request, view):
        api_key = getattr(request, "auth", None)
        prefix = getattr(api_key, "prefix", None)
        if prefix is None:
            return None
        return self.cache_format % {"scope": self.scope, "ident": prefix}
