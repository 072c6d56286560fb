"""Idempotency: a handler may store its answer's record in its own last write (a till's
sale does), and what is stored is still exactly the answer the request gets."""

import json
import threading

import pytest
from django.db import connection, transaction

from loyalty.db_copy import objects_insert
from partners.api.idempotency import answer_riding, run_idempotent
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
