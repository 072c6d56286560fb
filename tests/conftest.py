import os

import pytest
from django.conf import settings
from django.db import connection
from django.utils import translation

from loyalty import ledger
from loyalty.ledger import Cause
from loyalty.rules import loader as rules_loader

# CI sets this so that a PostgreSQL or browser test that would skip fails instead:
# a green run must mean those tests really ran.
STRICT = os.environ.get("TALLY_STRICT_SKIPS") == "1"


def skip_or_fail(reason: str) -> None:
    if STRICT:
        pytest.fail(f"{reason} (TALLY_STRICT_SKIPS=1: this test must run here)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def _fresh_caches():
    """Tests empty the database between them; per-process and cache-held copies of
    program rows must not outlive it."""
    ledger.caches_clear()
    rules_loader.forget()
    yield
    ledger.caches_clear()
    rules_loader.forget()


@pytest.fixture(scope="session", autouse=True)
def _run_cache_keys_removed():
    """The run's own keys in a shared Redis (config/settings/test.py) go when it ends."""
    yield
    prefix = settings.CACHES["default"].get("KEY_PREFIX")
    if prefix and rules_loader.shared_cache():
        from django.core.cache import cache

        client = cache._cache.get_client(write=True)
        keys = list(client.scan_iter(f"{prefix}:*"))
        if keys:
            client.delete(*keys)


@pytest.fixture(autouse=True)
def _default_language():
    """A request in Turkish leaves Turkish active in the thread (LocaleMiddleware sets it
    per request and nothing resets it): the next test must start in the default again."""
    yield
    translation.activate(settings.LANGUAGE_CODE)


@pytest.fixture
def shared_cache():
    """Tests of the tills' steady state: program rows and rules come from the cache only
    when every process shares it (Redis), as production is set up (README)."""
    if not rules_loader.shared_cache():
        skip_or_fail("needs a shared cache (set REDIS_URL), as production has")
    yield
    rules_loader.rules_changed()  # what a transactional test committed is about to go


@pytest.fixture
def postgres_only(db):
    if connection.vendor != "postgresql":
        skip_or_fail("needs PostgreSQL (set DATABASE_URL); SQLite has no row locks")


@pytest.fixture
def api_cause():
    return Cause(source="api", client="test-till")


@pytest.fixture
def member(db):
    from tests.factories import MemberFactory

    return MemberFactory()


@pytest.fixture
def store(db):
    from tests.factories import StoreFactory

    return StoreFactory()


@pytest.fixture
def terminal(store):
    from tests.factories import TerminalFactory

    return TerminalFactory(store=store)


@pytest.fixture
def api_key(terminal):
    """(ApiKey, full_key) with all scopes, issued to a till of `store`."""
    from partners.services import api_key_create

    return api_key_create(terminal=terminal, name="Test till key")


@pytest.fixture
def api_client(api_key):
    """An APIClient authenticated with `api_key` (all scopes)."""
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {api_key[1]}")
    return client
