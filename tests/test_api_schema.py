"""Fuzz the POS API against the OpenAPI schema it serves (/api/schema/), in process
through the WSGI app: no server, no network.

Every operation the schema lists gets ~25 generated requests (valid and invalid ones),
sent with a real API key of a real store and a fresh Idempotency-Key. Each answer must
not be a 5xx, must match the schema the app itself publishes, and, if it is an error,
must be the RFC 9457 problem document shared/API.md promises."""

import uuid
from datetime import timedelta

import pytest
import schemathesis
from django.core.cache import cache
from django.core.wsgi import get_wsgi_application
from django.utils import timezone
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)

from loyalty import services
from loyalty.ledger import Cause
from partners.api.problems import TITLES
from partners.services import api_key_create
from tests.factories import MemberFactory, TerminalFactory

MAX_EXAMPLES = 25

# Loaded once at collection, through the app itself. The schema view is public, so
# this needs no database.
schema = schemathesis.openapi.from_wsgi("/api/schema/", get_wsgi_application())
schema.config.generation.update(
    modes=list(GenerationMode),  # valid and invalid requests
    max_examples=MAX_EXAMPLES,
    # The Authorization header comes from a real key below; generated ones would only
    # ever test the 401 path, which tests/partners/test_api_keys.py covers.
    with_security_parameters=False,
    database="none",  # no .hypothesis/ directory in the work tree
)

FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,  # the first request of a run pays for imports and caches
    # fuzz_headers is meant to live across all inputs of one operation: one store, one
    # key, rows piling up as they would at a real till.
    suppress_health_check=[
        HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much,
    ],
)  # fmt: skip


@schemathesis.check
def errors_are_problem_documents(ctx, response, case):
    """shared/API.md: every error is application/problem+json (RFC 9457) with a known code.

    Stricter than the schema's Problem component: the code must be one API.md knows."""
    if response.status_code < 400:
        return None
    content_type = (response.headers.get("content-type") or [""])[0]
    assert content_type.startswith("application/problem+json"), (
        f"{response.status_code} answered with Content-Type {content_type!r}"
    )
    body = response.json()
    assert isinstance(body, dict), body
    missing = {"type", "title", "status", "detail", "code"} - body.keys()
    assert not missing, f"problem document lacks {sorted(missing)}: {body}"
    assert body["status"] == response.status_code, body
    assert body["code"] in TITLES, f"unknown problem code {body['code']!r}"
    assert body["type"] == f"/api/v1/problems/{body['code']}", body
    if "errors" in body:
        assert isinstance(body["errors"], dict), body
        for field, messages in body["errors"].items():
            assert isinstance(field, str) and field, body
            assert isinstance(messages, list) and messages, body
            assert all(isinstance(m, str) and m for m in messages), body
    return None


@pytest.fixture
def fuzz_headers(transactional_db):
    """A usable key of a real store, with all scopes, and a member to find.

    transactional_db, not db: every request then commits for real, so the durable
    transaction around idempotent POSTs behaves as in production (and, on PostgreSQL,
    so does its advisory lock)."""
    cache.clear()  # throttle counters (Redis when REDIS_URL is set)
    terminal = TerminalFactory()
    _, full_key = api_key_create(terminal=terminal, name="Fuzzer")
    MemberFactory(phone="+905551234567")
    yield {"Authorization": f"Api-Key {full_key}"}
    cache.clear()


def request_headers(base: dict) -> dict:
    # A fresh Idempotency-Key per call: a reused key would replay or refuse (422)
    # instead of exercising the endpoint.
    return {**base, "Idempotency-Key": str(uuid.uuid4())}


@schema.parametrize()
@FUZZ_SETTINGS
def test_api_never_errors_and_answers_as_documented(case, fuzz_headers):
    case.call_and_validate(
        headers=request_headers(fuzz_headers),
        checks=[
            not_a_server_error,
            status_code_conformance,
            response_schema_conformance,
            errors_are_problem_documents,
        ],
    )


def test_found_members_answer_as_documented(fuzz_headers):
    """Random input rarely hits a real member; these requests do, so the 200/201 member
    summary (money, expiring lots, pending points) is checked against the schema too."""
    member = MemberFactory(phone="+905559876543")
    cause = Cause(source="api", client="schema-test")
    services.points_credit(
        member=member, points=300, description="Spendable", cause=cause, pending_days=0,
        expires_at=timezone.now() + timedelta(days=60),
    )  # fmt: skip
    services.points_credit(
        member=member, points=150, description="Pending", cause=cause, pending_days=14
    )
    lookup = schema["/api/v1/members/lookup"]["GET"]
    cases = [
        lookup.Case(query={"card": member.card_number}),
        lookup.Case(query={"phone": "+905559876543"}),
        lookup.Case(query={"email": member.user.email.upper()}),
        schema["/api/v1/members/{card_number}"]["GET"].Case(
            path_parameters={"card_number": member.card_number}
        ),
        schema["/api/v1/members"]["POST"].Case(
            body={"email": "walk-in@example.com", "first_name": "Walk", "last_name": "In"},
            media_type="application/json",
        ),
    ]
    checks = [not_a_server_error, response_schema_conformance, status_code_conformance]
    for case in cases:
        response = case.call_and_validate(headers=request_headers(fuzz_headers), checks=checks)
        assert response.status_code in (200, 201), response.text
    summary = cases[0].call(headers=request_headers(fuzz_headers)).json()
    assert summary["card_number"] == member.card_number
    assert summary["points_balance"] == 300
    assert summary["points_pending"] == 150
    assert summary["expiring"] and summary["expiring"][0]["points"] == 300


def _operations_with_parameters():
    for result in schema.get_all_operations():
        operation = result.ok()
        for parameter in [*operation.path_parameters, *operation.query]:
            yield pytest.param(
                operation.label, parameter.location.value, parameter.name,
                id=f"{operation.label} {parameter.name}",
            )  # fmt: skip


@pytest.mark.parametrize(("label", "location", "name"), list(_operations_with_parameters()))
def test_a_nul_byte_in_a_parameter_is_refused_not_a_crash(fuzz_headers, label, location, name):
    """PostgreSQL text cannot hold NUL (psycopg raises DataError on the query), so a
    parameter that reaches the database unchecked answers 500 there, never on SQLite.
    Random fuzzing finds this only by luck (e.g. lookup needs *only* email set), so every
    path and query parameter is probed directly."""
    method, path = label.split(" ", 1)
    value = "a\x00b@example.com" if name == "email" else "6001234\x00567890"
    case = schema[path][method].Case(
        **({"query": {name: value}} if location == "query" else {"path_parameters": {name: value}})
    )
    if case.operation.body:
        case.body, case.media_type = {}, "application/json"
    response = case.call_and_validate(
        headers=request_headers(fuzz_headers),
        checks=[not_a_server_error, errors_are_problem_documents],
    )
    assert 400 <= response.status_code < 500, response.text


def test_a_nul_byte_in_an_event_property_name_is_refused_not_a_crash(fuzz_headers):
    """Property values go through SafeText (which refuses NUL) but property names do not,
    and PostgreSQL jsonb cannot hold \\u0000: 500 there, 201 on SQLite. Refusing (400) or
    cleaning the name (201) would both do; a crash would not."""
    member = MemberFactory()
    case = schema["/api/v1/events"]["POST"].Case(
        body={
            "card_number": member.card_number, "type": "review",
            "occurred_at": timezone.now().isoformat(), "properties": {"a\x00b": "x"},
        },
        media_type="application/json",
    )  # fmt: skip
    response = case.call_and_validate(
        headers=request_headers(fuzz_headers),
        checks=[not_a_server_error, errors_are_problem_documents],
    )
    assert response.status_code in (201, 400), response.text
