import copy
import hmac
from datetime import timedelta

from django.core.cache import cache
from django.utils import timezone
from django.utils.translation import gettext as _
from rest_framework import authentication, exceptions, permissions

from loyalty import request_memo
from partners.api.throttling import rate_counter
from partners.keys import key_hash, key_split
from partners.models import ApiKey
from partners.services import API_KEY_CACHE_SECONDS, api_key_cache_key

# Recording every use would write on every request; once a minute is plenty to audit.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class ApiClient:
    """The `request.user` of an API request: a terminal of a store, acting by its key."""

    is_authenticated = True
    is_anonymous = False

    def __init__(self, api_key: ApiKey):
        self.api_key = api_key
        self.terminal = api_key.terminal
        self.store = api_key.terminal.store

    def __str__(self) -> str:
        return f"{self.store.code}/{self.terminal.name} ({self.api_key.prefix})"


class ApiKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Api-Key"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        keyword, _sep, full_key = header.partition(" ")
        if keyword != self.keyword:
            return None
        parts = key_split(full_key)
        if parts is None:
            raise exceptions.AuthenticationFailed(_("Malformed API key."))
        prefix, secret = parts
        hashed = key_hash(secret)
        # In the round trip that brings the program's settings and rules token along, and
        # counts the request for the rate limit (under this secret: a wrong one counts
        # apart). Decoded once per process while unchanged: never changed in place.
        api_key = request_memo.remembered(
            api_key_cache_key(prefix), lambda: _api_key_read(prefix), together=True,
            shared=True, counting=rate_counter(prefix, hashed),
        )  # fmt: skip
        # compare_digest: in constant time, so timing tells nothing about the stored hash
        if api_key is None or not hmac.compare_digest(hashed, api_key.hashed_secret):
            raise exceptions.AuthenticationFailed(_("Unknown API key."))
        now = timezone.now()
        if api_key.revoked_at is not None:
            raise exceptions.AuthenticationFailed(_("This API key was revoked."))
        if api_key.expires_at is not None and api_key.expires_at <= now:
            raise exceptions.AuthenticationFailed(_("This API key has expired."))
        if api_key.last_used_at is None or api_key.last_used_at < now - LAST_USED_RESOLUTION:
            ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
            api_key = copy.copy(api_key)  # other requests may hold this one
            api_key.last_used_at = now
            cache.set(api_key_cache_key(prefix), api_key, timeout=API_KEY_CACHE_SECONDS)
        return ApiClient(api_key), api_key

    def authenticate_header(self, request):
        return self.keyword


def _api_key_read(prefix: str) -> ApiKey | None:
    api_key = cache.get(api_key_cache_key(prefix))
    if api_key is None:
        api_key = (
            ApiKey.objects.select_related("terminal__store__partner").filter(prefix=prefix).first()
        )
        if api_key is not None:
            cache.set(api_key_cache_key(prefix), api_key, timeout=API_KEY_CACHE_SECONDS)
    return api_key


class HasScope(permissions.BasePermission):
    """The view names the scope it needs in `required_scope`."""

    message = "This API key lacks the scope this endpoint needs."

    def has_permission(self, request, view):
        needed = getattr(view, "required_scope", None)
        if needed is None:
            return False
        api_key = request.auth
        if not isinstance(api_key, ApiKey):
            return False
        if needed not in api_key.scopes:
            self.message = _("This API key lacks the scope %(scope)s.") % {"scope": needed}
            return False
        return True
