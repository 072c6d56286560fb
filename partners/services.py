from collections.abc import Iterable
from datetime import datetime

from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from partners.keys import key_generate
from partners.models import ApiKey, Scope, Terminal

# Authentication reads keys through the cache (shared by every process when REDIS_URL is
# set). Revoking or editing a key forgets it at once; a renamed store or till shows its
# new name in audit lines within this many seconds.
API_KEY_CACHE_SECONDS = 60


def api_key_cache_key(prefix: str) -> str:
    return f"partners:api-key:{prefix}"


def api_key_forget(prefix: str) -> None:
    """Drop the cached key now and again at commit (a request in between may re-cache
    the row as it was before this transaction)."""
    cache.delete(api_key_cache_key(prefix))
    transaction.on_commit(lambda: cache.delete(api_key_cache_key(prefix)))


class InvalidScopes(ValueError):
    pass


def scopes_clean(scopes: Iterable[str] | None) -> list[str]:
    """All scopes when none are named (None); an empty list or unknown names are refused."""
    if scopes is None:
        return list(Scope.values)
    if not scopes:
        raise InvalidScopes("Name at least one scope.")
    scopes = list(dict.fromkeys(scopes))
    unknown = sorted(set(scopes) - set(Scope.values))
    if unknown:
        raise InvalidScopes(
            f"Unknown scope(s): {', '.join(unknown)}. Known: {', '.join(Scope.values)}"
        )
    return scopes


@transaction.atomic
def api_key_create(
    *,
    terminal: Terminal,
    name: str,
    scopes: Iterable[str] | None = None,
    expires_at: datetime | None = None,
    created_by=None,
) -> tuple[ApiKey, str]:
    """Issue a key; returns the row and the full key, which is never shown again."""
    full_key, prefix, hashed = key_generate()
    api_key = ApiKey.objects.create(
        terminal=terminal, name=name, prefix=prefix, hashed_secret=hashed,
        scopes=scopes_clean(scopes), expires_at=expires_at, created_by=created_by,
    )  # fmt: skip
    return api_key, full_key


def api_key_revoke(*, api_key: ApiKey) -> None:
    ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    api_key_forget(api_key.prefix)
