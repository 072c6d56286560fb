"""POS API: purchases, quotes, symmetric returns, paying with points, events, batches."""

import json
import uuid
from unittest.mock import patch

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from loyalty import selectors, services
from loyalty.api import PurchaseOutSerializer, represented
from loyalty.ledger import program_settings
from loyalty.models import JournalEntry, Purchase, Redemption
from partners.models import IdempotencyRecord
from partners.services import api_key_create
from tests.concurrency import run_at_once
from tests.factories import TerminalFactory

NOW = timezone.now


def post(client, path, payload, key=None):
    return client.post(
        f"/api/v1/{path}", data=json.dumps(payload), content_type="application/json",
        HTTP_IDEMPOTENCY_KEY=key or str(uuid.uuid4()),
    )  # fmt: skip


def purchase_payload(member, receipt="R-1", **overrides):
    payload = {
        "card_number": member.card_number, "receipt_id": receipt,
        "occurred_at": NOW().isoformat(), "currency": "EUR", "total": "49.90",
        "lines": [
            {"sku": "SHAMPOO", "category": "hair", "quantity": "2", "unit_price": "12.45"},
            {"sku": "PERFUME", "category": "fragrance", "quantity": "1", "unit_price": "25.00"},
        ],
    }  # fmt: skip
    payload.update(overrides)
    return payload


def balance(member):
    return selectors.member_balance(member=member).points


def ledger_size():
    return JournalEntry.objects.count(), Purchase.objects.count()


@pytest.fixture
def other_store_client(db):
    _key, full_key = api_key_create(terminal=TerminalFactory(), name="Other store")
    return APIClient(HTTP_AUTHORIZATION=f"Api-Key {full_key}")


@pytest.mark.django_db
def test_quote_writes_nothing_and_equals_what_the_purchase_credits(api_client, member):
    quote = api_client.post(
        "/api/v1/purchases/quote", purchase_payload(member, receipt=None) | {}, format="json"
    )
    assert quote.status_code == 200, quote.content
    assert ledger_size() == (0, 0)
    response = post(api_client, "purchases", purchase_payload(member))
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["points_earned"] == quote.json()["points"] == 49
    assert [line["points"] for line in body["lines"]] == [
        line["points"] for line in quote.json()["lines"]
    ]
    assert sum(line["points"] for line in body["lines"]) == 49
    assert body["points_balance"] == balance(member) == 49
    assert body["breakdown"][0]["points"] == 49
    assert Purchase.objects.get().receipt_id == "R-1"


@pytest.mark.django_db
@pytest.mark.parametrize("body", ["null", "[]", '"text"', "42"])
def test_a_body_that_is_not_an_object_is_a_validation_error(api_client, body):
    response = api_client.post(
        "/api/v1/purchases", data=body, content_type="application/json",
        HTTP_IDEMPOTENCY_KEY=str(uuid.uuid4()),
    )  # fmt: skip
    assert response.status_code == 400
    problem = response.json()
    assert problem["code"] == "validation_error"
    assert problem["errors"]  # says what is wrong: the fields it needs, or that it is no object
    assert ledger_size() == (0, 0)


@pytest.mark.django_db
def test_purchase_points_wait_pending_through_the_return_window(api_client, member):
    settings = program_settings()
    settings.pending_days = 14
    settings.save()
    body = post(api_client, "purchases", purchase_payload(member)).json()
    assert body["points_balance"] == 0
    assert body["points_pending"] == 49


@pytest.mark.django_db
def test_same_request_ten_times_credits_once(api_client, member):
    key, payload = str(uuid.uuid4()), purchase_payload(member)
    responses = [post(api_client, "purchases", payload, key=key) for _ in range(10)]
    assert {r.status_code for r in responses} == {201}
    assert len({r.content for r in responses}) == 1
    assert responses[0]["Content-Type"] == "application/json"
    # Every answer, the first included, is the stored answer's own bytes.
    assert IdempotencyRecord.objects.get().body.encode() == responses[0].content
    assert balance(member) == 49
    assert Purchase.objects.count() == 1


@pytest.mark.django_db
def test_same_receipt_under_a_new_key_is_a_duplicate_with_the_first_id(api_client, member):
    first = post(api_client, "purchases", purchase_payload(member)).json()
    again = post(api_client, "purchases", purchase_payload(member))
    assert again.status_code == 409
    assert again.json()["code"] == "duplicate_receipt"
    assert again.json()["id"] == first["id"]
    assert balance(member) == 49


@pytest.mark.django_db
def test_same_key_other_body_is_refused(api_client, member):
    key = str(uuid.uuid4())
    post(api_client, "purchases", purchase_payload(member), key=key)
    response = post(api_client, "purchases", purchase_payload(member, receipt="R-2"), key=key)
    assert response.status_code == 422
    assert response.json()["code"] == "idempotency_key_reused"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("overrides", "status", "code", "field"),
    [
        ({"total": "50.00"}, 400, "validation_error", "total"),
        ({"total": "-49.90"}, 400, "validation_error", "total"),
        ({"total": "0"}, 400, "validation_error", "total"),
        ({"total": "99999999999.00"}, 400, "validation_error", "total"),
        ({"total": "abc"}, 400, "validation_error", "total"),
        ({"currency": "USD"}, 422, "currency_mismatch", None),
        ({"currency": "euro"}, 400, "validation_error", "currency"),
        ({"occurred_at": "2999-01-01T00:00:00+00:00"}, 400, "validation_error", "occurred_at"),
        ({"lines": []}, 400, "validation_error", "lines"),
        (
            {"lines": [{"sku": "X", "quantity": "-1", "unit_price": "49.90"}]},
            400,
            "validation_error",
            "lines[0].quantity",
        ),
        ({"card_number": "6000000000000"}, 404, "member_not_found", None),
        ({"redeem_points": 0}, 400, "validation_error", "redeem_points"),
        ({"redeem_points": 100}, 409, "insufficient_points", None),
        ({"receipt_id": ""}, 400, "validation_error", "receipt_id"),
    ],
)
def test_bad_purchases_are_refused_and_write_nothing(
    api_client, member, overrides, status, code, field
):
    response = post(api_client, "purchases", purchase_payload(member, **overrides))
    assert response.status_code == status, response.content
    body = response.json()
    assert body["code"] == code
    if field:
        assert field in body["errors"]
    assert ledger_size() == (0, 0)


@pytest.mark.django_db
def test_missing_fields_and_wrong_types(api_client, member):
    response = post(api_client, "purchases", {"card_number": 12, "lines": "many"})
    assert response.status_code == 400
    assert {"receipt_id", "currency", "total", "lines", "card_number"} <= set(
        response.json()["errors"]
    )


@pytest.mark.django_db
def test_paying_with_points_inside_a_purchase_earns_on_the_rest(api_client, member, api_cause):
    services.points_credit(member=member, points=1000, description="Earlier", cause=api_cause)
    body = post(api_client, "purchases", purchase_payload(member, redeem_points=990)).json()
    assert body["points_redeemed"] == 990  # 9.90 EUR
    assert body["points_earned"] == 40  # earned on the 40.00 EUR paid in money
    assert body["points_balance"] == 1000 - 990 + 40


@pytest.mark.django_db
def test_a_purchase_answers_what_its_documented_serializer_represents(
    api_client, member, api_cause
):
    """The answer is built directly, not field by field through PurchaseOutSerializer (it
    cost more than the body is worth), so it must be exactly what that serializer, which
    the schema documents, makes of it: the same fields, the same values."""
    services.points_credit(member=member, points=500, description="Earlier", cause=api_cause)
    body = post(api_client, "purchases", purchase_payload(member, redeem_points=100)).json()
    assert set(body) == set(PurchaseOutSerializer().fields)
    assert json.loads(json.dumps(represented(PurchaseOutSerializer, body))) == body
    assert body["breakdown"] and body["lines"] and body["points_redeemed"] == 100
    assert uuid.UUID(body["id"]) == Purchase.objects.get(receipt_id="R-1").public_id


@pytest.mark.django_db
def test_numeric_receipt_ids_are_kept_exactly_even_when_they_pass_luhn(api_client, member):
    # Both pass the Luhn check, as ~1 numeric receipt id in 10 does: they are identifiers,
    # not card numbers typed into free text, and must stay distinct.
    for receipt in ("4111111111111111", "4012888888881881"):
        assert (
            post(api_client, "purchases", purchase_payload(member, receipt=receipt)).status_code
            == 201
        )
    assert sorted(Purchase.objects.values_list("receipt_id", flat=True)) == [
        "4012888888881881", "4111111111111111",
    ]  # fmt: skip


@pytest.mark.django_db
def test_card_numbers_in_a_free_text_reference_are_masked(api_client, member, api_cause):
    services.points_credit(member=member, points=100, description="Earlier", cause=api_cause)
    post(api_client, "redemptions", {"card_number": member.card_number, "points": 10,
                                     "reference": "paid with 4111 1111 1111 1111"})  # fmt: skip
    assert "4111" not in Redemption.objects.get().reference


@pytest.mark.django_db
def test_partial_returns_add_up_to_exactly_the_purchase(api_client, member, api_cause):
    services.points_credit(member=member, points=500, description="Earlier", cause=api_cause)
    body = post(api_client, "purchases", purchase_payload(member, redeem_points=333)).json()
    earned, redeemed = body["points_earned"], body["points_redeemed"]
    pid = body["id"]
    parts = [
        {"return_id": "RT-1", "lines": [{"sku": "SHAMPOO", "quantity": "1"}]},
        {"return_id": "RT-2", "lines": [{"sku": "PERFUME", "quantity": "1"}]},
        {"return_id": "RT-3"},  # the rest: the second shampoo
    ]
    results = [post(api_client, f"purchases/{pid}/returns", part) for part in parts]
    assert [r.status_code for r in results] == [201, 201, 201], results[-1].content
    assert sum(r.json()["points_reversed"] for r in results) == earned
    assert sum(r.json()["points_restored"] for r in results) == redeemed
    assert balance(member) == 500  # back where it started
    over = post(api_client, f"purchases/{pid}/returns", {"return_id": "RT-4"})
    assert over.status_code == 422
    assert over.json()["code"] == "return_exceeds_purchase"
    too_many = post(
        api_client,
        f"purchases/{pid}/returns",
        {"return_id": "RT-5", "lines": [{"sku": "PERFUME", "quantity": "1"}]},
    )
    assert too_many.json()["code"] == "return_exceeds_purchase"


@pytest.mark.django_db
def test_a_return_after_spending_the_points_leaves_a_debt(api_client, member):
    pid = post(api_client, "purchases", purchase_payload(member)).json()["id"]
    post(api_client, "redemptions", {"card_number": member.card_number, "points": 49})
    response = post(api_client, f"purchases/{pid}/returns", {"return_id": "RT-1"})
    assert response.status_code == 201
    assert response.json()["points_balance"] == -49


@pytest.mark.django_db
def test_return_errors(api_client, other_store_client, member):
    pid = post(api_client, "purchases", purchase_payload(member)).json()["id"]
    assert (
        post(other_store_client, f"purchases/{pid}/returns", {"return_id": "X"}).json()["code"]
        == "permission_denied"
    )
    assert (
        post(api_client, f"purchases/{uuid.uuid4()}/returns", {"return_id": "X"}).json()["code"]
        == "purchase_not_found"
    )
    assert (
        post(api_client, "purchases/not-a-uuid/returns", {"return_id": "X"}).json()["code"]
        == "purchase_not_found"
    )
    unknown_sku = post(
        api_client,
        f"purchases/{pid}/returns",
        {"return_id": "X", "lines": [{"sku": "NOPE", "quantity": "1"}]},
    )
    assert unknown_sku.json()["code"] == "return_exceeds_purchase"
    first = post(
        api_client,
        f"purchases/{pid}/returns",
        {"return_id": "RT-1", "lines": [{"sku": "SHAMPOO", "quantity": "1"}]},
    )
    dup = post(
        api_client,
        f"purchases/{pid}/returns",
        {"return_id": "RT-1", "lines": [{"sku": "SHAMPOO", "quantity": "1"}]},
    )
    assert dup.status_code == 409
    assert dup.json()["id"] == first.json()["id"]


@pytest.mark.django_db
def test_pay_with_points_and_void(api_client, other_store_client, member, api_cause):
    services.points_credit(member=member, points=300, description="Earlier", cause=api_cause)
    response = post(
        api_client,
        "redemptions",
        {"card_number": member.card_number, "points": 120, "reference": "Coffee"},
    )
    assert response.status_code == 201
    body = response.json()
    assert body["value"] == {"amount": "1.20", "currency": "EUR"}
    assert body["points_balance"] == 180
    short = post(api_client, "redemptions", {"card_number": member.card_number, "points": 181})
    assert short.status_code == 409
    assert short.json()["code"] == "insufficient_points"
    assert post(other_store_client, f"redemptions/{body['id']}/void", {}).status_code == 403
    voided = post(api_client, f"redemptions/{body['id']}/void", {})
    assert voided.json() == {"id": body["id"], "status": "voided", "points_balance": 300}
    assert post(api_client, f"redemptions/{body['id']}/void", {}).json()["points_balance"] == 300
    from loyalty.explain import entry_text

    assert entry_text(member.entries.get(kind="reversal")) == "Reversed: Coffee"


@pytest.mark.django_db
def test_vouchers_are_not_found_until_the_catalog_exists(api_client):
    assert api_client.get("/api/v1/vouchers/ABC").json()["code"] == "voucher_not_found"
    assert post(api_client, "vouchers/ABC/redeem", {}).json()["code"] == "voucher_not_found"


@pytest.mark.django_db
def test_events_are_stored(api_client, member):
    response = post(
        api_client,
        "events",
        {
            "card_number": member.card_number,
            "type": "app-download",
            "occurred_at": NOW().isoformat(),
            "properties": {"os": "android"},
        },
    )
    assert response.status_code == 201
    assert response.json()["points_earned"] == 0
    assert member.events.get().properties == {"os": "android"}


@pytest.mark.django_db
def test_batch_applies_good_items_reports_bad_ones_and_is_safe_to_resend(api_client, member):
    items = [
        {
            "idempotency_key": f"k-{i}",
            "kind": "purchase",
            "payload": purchase_payload(member, receipt=f"OFF-{i}"),
        }
        for i in range(3)
    ]
    items.insert(
        1,
        {
            "idempotency_key": "k-bad",
            "kind": "purchase",
            "payload": purchase_payload(member, receipt="OFF-X", total="1.00"),
        },
    )
    response = api_client.post("/api/v1/batches", {"items": items}, format="json")
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["idempotency_key"] for r in results] == ["k-0", "k-bad", "k-1", "k-2"]
    assert [r["status"] for r in results] == [201, 400, 201, 201]
    assert results[1]["body"]["code"] == "validation_error"
    assert balance(member) == 3 * 49
    again = api_client.post("/api/v1/batches", {"items": items}, format="json").json()["results"]
    assert [r["body"] for r in again] == [r["body"] for r in results]
    assert balance(member) == 3 * 49
    ret = api_client.post(
        "/api/v1/batches",
        {
            "items": [
                {
                    "idempotency_key": "r-1",
                    "kind": "return",
                    "payload": {"purchase_id": results[0]["body"]["id"], "return_id": "RT-OFF-0"},
                }
            ]
        },
        format="json",
    ).json()
    assert ret["results"][0]["status"] == 201
    assert balance(member) == 2 * 49


@pytest.mark.django_db
def test_batch_refuses_more_than_500_items(api_client, member):
    items = [{"idempotency_key": f"k{i}", "kind": "purchase", "payload": {}} for i in range(501)]
    assert api_client.post("/api/v1/batches", {"items": items}, format="json").status_code == 400


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("history", [1, 50])
def test_purchase_query_count_does_not_grow_with_history(
    api_client, member, api_cause, django_assert_max_num_queries, history, shared_cache
):
    """A till in use (its key, the program settings and accounts already read and
    committed, as in production): a purchase costs the same few queries however long the
    member's history."""
    for i in range(history):
        services.points_credit(member=member, points=5, description=f"Old {i}", cause=api_cause)
    warm_up = post(api_client, "purchases", purchase_payload(member, receipt=f"W-{history}"))
    assert warm_up.status_code == 201
    with django_assert_max_num_queries(12) as captured:
        response = post(api_client, "purchases", purchase_payload(member, receipt=f"Q-{history}"))
    assert response.status_code == 201
    assert response.json()["points_balance"] == 5 * history + 2 * 49
    statements = [q["sql"].split()[0] for q in captured]
    assert statements.count("SELECT") <= 4  # lock, idempotency key, member + accounts


@pytest.mark.django_db(transaction=True)
def test_a_tills_repeated_purchases_run_as_prepared_statements(api_client, member, postgres_only):
    """On a kept connection PostgreSQL plans a purchase's statements once, not on every sale
    (DB_PREPARED_STATEMENTS, on by default): the ledger and receipt inserts are prepared
    and re-executed."""
    for i in range(8):
        assert (
            post(api_client, "purchases", purchase_payload(member, receipt=f"P-{i}")).status_code
            == 201
        )
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT statement, generic_plans + custom_plans FROM pg_prepared_statements"
            " WHERE NOT from_sql"
        )
        runs = cursor.fetchall()
    for table in ("loyalty_journalentry", "loyalty_purchase", "partners_idempotencyrecord"):
        # the statement that inserts into the table (with its postings, lot or lines)
        ran = [count for sql, count in runs if f'INSERT INTO "{table}" ' in sql]
        assert ran and max(ran) >= 3, (table, runs)


@pytest.mark.django_db
@pytest.mark.parametrize("total", ["49.90", "0.50"])  # points earned, and none
def test_a_sale_stores_its_answer_in_its_own_statement(api_client, member, postgres_only, total):
    """The key's record goes in with the sale's rows, in one statement: what a retry gets
    back is byte for byte the first answer, and nothing is stored twice."""
    assert post(api_client, "purchases", purchase_payload(member, receipt="W")).status_code == 201
    one = [{"sku": "GUM", "quantity": "1", "unit_price": total}]
    key = str(uuid.uuid4())
    payload = purchase_payload(member, receipt="R-9", total=total, lines=one)
    with CaptureQueriesContext(connection) as queries:
        first = post(api_client, "purchases", payload, key=key)
    assert first.status_code == 201
    assert first.json()["points_earned"] == (49 if total == "49.90" else 0)
    writes = [q["sql"] for q in queries if q["sql"].startswith(("INSERT", "UPDATE", "WITH"))]
    assert len(writes) == 1
    assert 'INSERT INTO "partners_idempotencyrecord"' in writes[0]
    assert 'INSERT INTO "loyalty_purchase"' in writes[0]
    record = IdempotencyRecord.objects.get(key=key)
    assert (record.status, record.body.encode()) == (201, first.content)
    again = post(api_client, "purchases", payload, key=key)
    assert again.content == first.content and again["Idempotent-Replayed"] == "true"
    assert IdempotencyRecord.objects.filter(key=key).count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_purchase_makes_one_cache_round_trip(api_client, member, shared_cache):
    """In steady state a purchase asks the shared cache once: one script reads the API
    key with the rules' generation and the program settings, however often the purchase
    reads them, and counts the request for the rate limit."""
    import redis.client

    assert post(api_client, "purchases", purchase_payload(member, receipt="W")).status_code == 201
    trips = []
    real_command, real_pipeline = redis.client.Redis.execute_command, redis.client.Pipeline.execute

    def command(client, *args, **kwargs):
        trips.append(args[0])
        return real_command(client, *args, **kwargs)

    def pipeline(pipe, *args, **kwargs):
        trips.append("PIPELINE")
        return real_pipeline(pipe, *args, **kwargs)

    with (
        patch.object(redis.client.Redis, "execute_command", command),
        patch.object(redis.client.Pipeline, "execute", pipeline),
    ):
        response = post(api_client, "purchases", purchase_payload(member, receipt="Q"))
    assert response.status_code == 201
    assert trips == ["EVALSHA"]


@pytest.mark.django_db(transaction=True)
def test_settings_missing_from_the_shared_cache_are_read_from_the_database(
    api_client, member, shared_cache
):
    """The purchase reads the rules' generation and the settings in one MGET; when the
    settings are not in the cache (evicted, expired), it reads them from the database."""
    from django.core.cache import cache

    from loyalty.ledger import settings_cache_key
    from loyalty.models import ProgramSettings

    assert (
        post(api_client, "purchases", purchase_payload(member, receipt="W")).json()["points_earned"]
        == 49
    )
    ProgramSettings.objects.filter(pk=1).update(earn_rate=2)  # no signal: the cache is stale
    cache.delete(settings_cache_key())  # ...until it is evicted
    response = post(api_client, "purchases", purchase_payload(member, receipt="Q"))
    assert response.status_code == 201
    assert response.json()["points_earned"] == 99


@pytest.mark.django_db(transaction=True)
def test_a_process_decodes_the_settings_once_until_they_change(
    shared_cache, api_client, member, monkeypatch
):
    """Each purchase reads the program settings from Redis; a process unpickles them once
    while the cached copy stays the same, and a saved change earns at the next purchase."""
    from loyalty import ledger
    from loyalty.models import ProgramSettings

    seen = []
    real = ledger.program_settings
    monkeypatch.setattr(ledger, "program_settings", lambda: seen.append(real()) or seen[-1])
    for receipt in "ABC":  # the first reads the database and caches them at commit
        assert (
            post(api_client, "purchases", purchase_payload(member, receipt=receipt)).json()[
                "points_earned"
            ]
            == 49
        )
    assert seen[-1] is seen[-2]
    held = seen[-1]
    settings = ProgramSettings.objects.get(pk=1)
    settings.earn_rate = 2
    settings.save()
    response = post(api_client, "purchases", purchase_payload(member, receipt="D"))
    assert response.json()["points_earned"] == 99
    assert seen[-1] is not held and held.earn_rate == 1


@pytest.mark.django_db(transaction=True)
def test_twenty_tills_paying_at_once_never_overdraw(postgres_only, api_key, member, api_cause):
    services.points_credit(member=member, points=1000, description="Earlier", cause=api_cause)

    def pay(_i):
        client = APIClient(HTTP_AUTHORIZATION=f"Api-Key {api_key[1]}")
        return post(client, "redemptions", {"card_number": member.card_number, "points": 150})

    statuses = [response.status_code for response in run_at_once(pay, count=20)]
    assert statuses.count(201) == 1000 // 150
    assert statuses.count(409) == 20 - 1000 // 150
    assert balance(member) == 1000 - 150 * (1000 // 150)
    assert Redemption.objects.count() == 1000 // 150


@pytest.mark.django_db(transaction=True)
def test_concurrent_duplicate_purchases_credit_once(postgres_only, api_key, member):
    key, payload = str(uuid.uuid4()), purchase_payload(member)

    def send(_i):
        client = APIClient(HTTP_AUTHORIZATION=f"Api-Key {api_key[1]}")
        return post(client, "purchases", payload, key=key)

    statuses = [response.status_code for response in run_at_once(send)]
    assert Purchase.objects.count() == 1
    assert balance(member) == 49
    assert set(statuses) <= {201, 409}
