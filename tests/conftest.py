import os

import pytest
from django.db import connection

from loyalty.ledger import Cause

# CI sets this so that a PostgreSQL or browser test that would skip fails instead:
# a green run must mean those tests really ran.
STRICT = os.environ.get("TALLY_STRICT_SKIPS") == "1"


def skip_or_fail(reason: str) -> None:
    if STRICT:
        pytest.fail(f"{reason} (TALLY_STRICT_SKIPS=1: this test must run here)", pytrace=False)
    pytest.skip(reason)


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
