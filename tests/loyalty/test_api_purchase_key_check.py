"""A till's sale checks its Idempotency-Key in the statement that finds the member and
locks their accounts (one round trip fewer a sale). What a till sees must not change:
the key's answer still comes first, before anything the basket or the card would answer,
and a key in use answers 409 at once, whatever the first request holds locked."""

import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from loyalty.models import Purchase
from partners.models import IdempotencyRecord
from tests.concurrency import key_lock_id, other_connection
from tests.loyalty.test_api_purchases import post, purchase_payload


def problem_code(response) -> str:
    return response.json()["code"]


@pytest.fixture
def warm_member(api_client, member):
    """A member with a first sale behind them: their accounts exist, as at a real till."""
    assert post(api_client, "purchases", purchase_payload(member, receipt="W")).status_code == 201
    return member


@pytest.mark.django_db(transaction=True)
def test_a_sale_checks_its_key_where_it_finds_the_member(api_client, warm_member, postgres_only):
    with CaptureQueriesContext(connection) as queries:
        response = post(api_client, "purchases", purchase_payload(warm_member, receipt="R-2"))
    assert response.status_code == 201
    statements = [q["sql"] for q in queries]
    assert [sql.split()[0] for sql in statements] == ["BEGIN", "SELECT", "WITH", "COMMIT"]
    assert "pg_try_advisory_xact_lock" in statements[1] and '"loyalty_account"' in statements[1]
    assert 'INSERT INTO "partners_idempotencyrecord"' in statements[2]


@pytest.mark.django_db(transaction=True)
def test_a_key_in_use_answers_at_once_though_its_request_holds_the_members_accounts(
    api_client, warm_member, store, postgres_only
):
    """The first request holds the key's lock and the member's accounts, as a sale does
    mid-way: the second is refused without waiting for those rows (a lock_timeout would
    turn waiting into an error), and takes nothing."""
    key = str(uuid.uuid4())
    payload = purchase_payload(warm_member, receipt="R-3")
    with other_connection() as other:
        other.execute("BEGIN")
        other.execute("SELECT pg_advisory_xact_lock(%s)", [key_lock_id(store, key)])
        other.execute(
            "SELECT id FROM loyalty_account WHERE member_id = %s FOR UPDATE", [warm_member.pk]
        )
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '3s'")
        try:
            response = post(api_client, "purchases", payload, key=key)
        finally:
            with connection.cursor() as cursor:
                cursor.execute("RESET lock_timeout")
        assert response.status_code == 409
        assert problem_code(response) == "idempotency_key_in_use"
        assert "Idempotent-Replayed" not in response
        other.execute("ROLLBACK")
    assert not Purchase.objects.filter(receipt_id="R-3").exists()
    assert not IdempotencyRecord.objects.filter(key=key).exists()
    assert post(api_client, "purchases", payload, key=key).status_code == 201


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"lines": []}, id="invalid basket"),
        pytest.param({"card_number": "6000000999993"}, id="card failing its check digit"),
        pytest.param({"card_number": "6000000999995"}, id="card of nobody"),
    ],
)
def test_a_key_in_use_comes_before_what_the_request_itself_would_answer(
    api_client, warm_member, store, postgres_only, change
):
    key = str(uuid.uuid4())
    payload = purchase_payload(warm_member, receipt="R-4", **change)
    with other_connection() as other:
        other.execute("BEGIN")
        other.execute("SELECT pg_advisory_xact_lock(%s)", [key_lock_id(store, key)])
        response = post(api_client, "purchases", payload, key=key)
        other.execute("ROLLBACK")
    assert (response.status_code, problem_code(response)) == (409, "idempotency_key_in_use")
    assert not IdempotencyRecord.objects.filter(key=key).exists()
    # Once the key is free the request's own answer is given, stored and replayed.
    first = post(api_client, "purchases", payload, key=key)
    assert first.status_code in (400, 404)
    again = post(api_client, "purchases", payload, key=key)
    assert (again.status_code, again.content) == (first.status_code, first.content)
    assert again["Idempotent-Replayed"] == "true"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "change",
    [
        pytest.param({}, id="a valid sale"),
        pytest.param({"lines": []}, id="invalid basket"),
        pytest.param({"card_number": "6000000999995"}, id="card of nobody"),
    ],
)
def test_a_key_used_for_another_sale_is_refused_before_anything_else(
    api_client, warm_member, change
):
    key, sale = str(uuid.uuid4()), purchase_payload(warm_member, receipt="R-5")
    first = post(api_client, "purchases", sale, key=key)
    assert first.status_code == 201
    other = purchase_payload(warm_member, receipt="R-6", **change)
    response = post(api_client, "purchases", other, key=key)
    assert (response.status_code, problem_code(response)) == (422, "idempotency_key_reused")
    assert not Purchase.objects.filter(receipt_id="R-6").exists()
    replay = post(api_client, "purchases", sale, key=key)
    assert replay.content == first.content and replay["Idempotent-Replayed"] == "true"
