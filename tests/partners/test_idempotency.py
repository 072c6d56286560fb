"""Idempotency: a handler may store its answer's record in its own last write (a till's
sale does), and what is stored is still exactly the answer the request gets."""

import json
import threading

import pytest
from django.db import connection, transaction

from loyalty.compiled_query import CompiledQuery
from loyalty.db_copy import objects_insert
from loyalty.models import Account
from partners.api.idempotency import answer_riding, key_check_along, run_idempotent
from partners.api.problems import ApiProblem
from partners.models import IdempotencyRecord

KEY, FINGERPRINT = "K-1", "f" * 64


def run(store, handler, **kwargs):
    return run_idempotent(store=store, key=KEY, fingerprint=FINGERPRINT, handler=handler, **kwargs)


def stored(store):
    return [(r.status, json.loads(r.body)) for r in IdempotencyRecord.objects.filter(store=store)]


def written_along(status, body):
    """What a handler's last write does: insert its rows with the answer's record."""
    objects_insert(IdempotencyRecord, answer_riding(status, body))


@pytest.mark.django_db(transaction=True)
def test_an_answer_that_rode_along_is_stored_once(store):
    calls = []

    def handler():
        calls.append(1)
        written_along(201, {"points": 5})
        return 201, {"points": 5}

    outcome = run(store, handler)
    assert (outcome.status, outcome.body, outcome.replayed) == (201, {"points": 5}, False)
    assert stored(store) == [(201, {"points": 5})] and len(calls) == 1
    assert IdempotencyRecord.objects.get(store=store).body == outcome.text


@pytest.mark.django_db(transaction=True)
def test_an_answer_that_changed_after_it_rode_along_is_stored_as_answered(store):
    def handler():
        written_along(201, {"points_balance": 10})
        return 201, {"points_balance": 12}  # e.g. a bonus credited after the sale's rows

    outcome = run(store, handler)
    assert outcome.body == {"points_balance": 12}
    assert stored(store) == [(201, {"points_balance": 12})]
    assert IdempotencyRecord.objects.get(store=store).body == outcome.text


@pytest.mark.django_db(transaction=True)
def test_a_record_that_never_went_in_is_written_after_the_handler(store):
    def handler():
        answer_riding(201, {"points": 5})  # offered, but the handler wrote nothing after all
        return 201, {"points": 5}

    assert run(store, handler).status == 201
    assert stored(store) == [(201, {"points": 5})]


@pytest.mark.django_db(transaction=True)
def test_a_business_error_after_the_ride_stores_the_error_not_the_sale(store):
    def handler():
        written_along(201, {"points": 5})
        raise ApiProblem("insufficient_points", 409, "Not enough points.")

    outcome = run(store, handler)
    assert outcome.status == 409 and outcome.body["code"] == "insufficient_points"
    assert stored(store) == [(409, outcome.body)]


@pytest.mark.django_db(transaction=True)
def test_a_key_stored_meanwhile_by_another_request_is_replayed(store, postgres_only):
    """Another request with the key committed just as this one read (the advisory lock's
    window): the record riding along is refused, and the request starts over and answers
    what the other one stored."""
    calls = []

    def other_request_commits():
        IdempotencyRecord.objects.create(
            store=store, key=KEY, fingerprint=FINGERPRINT, status=201, body='{"points": 7}'
        )
        connection.close()

    def handler():
        calls.append(1)
        other = threading.Thread(target=other_request_commits)
        other.start()
        other.join()
        written_along(201, {"points": 5})
        return 201, {"points": 5}

    outcome = run(store, handler)
    assert (outcome.status, outcome.body, outcome.replayed) == (201, {"points": 7}, True)
    assert stored(store) == [(201, {"points": 7})] and len(calls) == 1


@pytest.mark.django_db(transaction=True)
def test_a_batch_item_writes_its_record_after_the_handler(store):
    """A batch item runs in a savepoint of the batch's transaction: nothing rides along."""
    offered = []

    def handler():
        offered.append(answer_riding(201, {"points": 5}))
        return 201, {"points": 5}

    with transaction.atomic():
        assert run(store, handler, durable=False).status == 201
    assert offered == [[]] and stored(store) == [(201, {"points": 5})]


accounts_of_card = CompiledQuery(lambda card: Account.objects.filter(member__card_number=card))


def reads_with_the_key_check(steps):
    """A handler whose first read checks the key (`key_check_along`), as a till's sale."""

    def handler():
        steps.append("read")
        accounts_of_card.run_after(key_check_along(), "6000000000011")
        steps.append("after the read")
        written_along(201, {"points": 5})
        return 201, {"points": 5}

    return handler


@pytest.mark.django_db(transaction=True)
def test_a_read_that_checks_the_key_stops_the_handler_with_the_stored_answer(store, postgres_only):
    steps = []
    first = run(store, reads_with_the_key_check(steps), key_check_along=True)
    assert (first.status, first.replayed, steps) == (201, False, ["read", "after the read"])
    steps.clear()
    again = run(store, reads_with_the_key_check(steps), key_check_along=True)
    assert (again.status, again.text, again.replayed) == (201, first.text, True)
    assert steps == ["read"] and stored(store) == [(201, {"points": 5})]


@pytest.mark.django_db(transaction=True)
def test_a_handler_failing_before_its_read_still_answers_the_keys_refusal_first(
    store, postgres_only
):
    IdempotencyRecord.objects.create(
        store=store, key=KEY, fingerprint="e" * 64, status=201, body='{"points": 7}'
    )

    def handler():
        raise ApiProblem("validation_error", 400, "Bad basket.")

    with pytest.raises(ApiProblem) as refused:
        run(store, handler, key_check_along=True)
    assert refused.value.get_codes() == "idempotency_key_reused"
    assert stored(store) == [(201, {"points": 7})]


@pytest.mark.django_db(transaction=True)
def test_a_handler_that_never_checks_its_key_is_a_bug_and_stores_nothing(store, postgres_only):
    def handler():
        written_along(201, {"points": 5})
        return 201, {"points": 5}

    with pytest.raises(RuntimeError, match="without checking its idempotency key"):
        run(store, handler, key_check_along=True)
    assert stored(store) == []
