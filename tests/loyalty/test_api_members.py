"""POS API: member lookup and enrolment, problem+json errors and idempotency."""

import json
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from loyalty import services
from members.models import Member, User
from partners.api.idempotency import idempotency_purge
from partners.models import IdempotencyRecord
from partners.services import api_key_create
from tests.concurrency import key_lock_id, other_connection, run_at_once
from tests.factories import MemberFactory, TerminalFactory

ENROL = "/api/v1/members"


@pytest.fixture
def other_store_client(db):
    from rest_framework.test import APIClient

    _key, full_key = api_key_create(terminal=TerminalFactory(), name="Other store till")
    return APIClient(HTTP_AUTHORIZATION=f"Api-Key {full_key}")


def _post(client, payload, key=None, **extra):
    headers = {"HTTP_IDEMPOTENCY_KEY": key or str(uuid.uuid4()), **extra}
    return client.post(ENROL, data=json.dumps(payload), content_type="application/json", **headers)


def _problem(response, status, code):
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == code
    assert body["type"] == f"/api/v1/problems/{code}"
    assert body["status"] == status
    assert body["title"] and body["detail"]
    return body


@pytest.mark.django_db
@pytest.mark.parametrize("by", ["card", "phone", "email"])
def test_lookup_finds_a_member_and_shows_points_and_money(api_client, api_cause, by):
    member = MemberFactory(phone="+905551234567", first_name="Ayşe", last_name="Kaya")
    services.points_credit(member=member, points=1200, description="R-1", cause=api_cause)
    services.points_credit(
        member=member, points=150, description="R-2", cause=api_cause, pending_days=14
    )
    value = {"card": member.card_number, "phone": "+905551234567", "email": member.user.email}[by]
    response = api_client.get("/api/v1/members/lookup", {by: value})
    assert response.status_code == 200
    body = response.json()
    assert body["card_number"] == member.card_number
    assert body["display_name"] == "Ayşe K."
    assert body["points_balance"] == 1200
    assert body["points_pending"] == 150
    assert body["points_value"] == {"amount": "12.00", "currency": "EUR"}
    assert body["tier"] is None
    assert body["expiring"][0]["points"] == 1200


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({}, 400, "validation_error"),
        ({"card": "6001234567890", "email": "a@b.c"}, 400, "validation_error"),
        ({"phone": "05551234567"}, 400, "validation_error"),
        ({"card": "6001234567891"}, 404, "member_not_found"),  # wrong check digit
        ({"email": "nobody@example.com"}, 404, "member_not_found"),
        ({"phone": "+905550000000"}, 404, "member_not_found"),
    ],
)
def test_lookup_errors_are_problem_documents(api_client, params, status, code):
    _problem(api_client.get("/api/v1/members/lookup", params), status, code)


@pytest.mark.django_db
def test_member_by_card_number(api_client, member):
    response = api_client.get(f"/api/v1/members/{member.card_number}")
    assert response.status_code == 200
    assert response.json()["card_number"] == member.card_number
    _problem(api_client.get("/api/v1/members/6000000000000"), 404, "member_not_found")


@pytest.mark.django_db
def test_lookup_query_count_is_fixed(api_client, member, api_cause, django_assert_max_num_queries):
    for i in range(30):
        services.points_credit(member=member, points=10, description=f"R-{i}", cause=api_cause)
    with django_assert_max_num_queries(7):
        assert api_client.get(f"/api/v1/members/{member.card_number}").status_code == 200


@pytest.mark.django_db
def test_enrol_at_the_till_creates_a_member_who_can_claim_a_login(api_client):
    response = _post(
        api_client,
        {"email": "Till.Shopper@Example.com", "phone": "+905551112233", "first_name": "Ali",
         "last_name": "Veli", "marketing_consent": True},
    )  # fmt: skip
    assert response.status_code == 201, response.content
    body = response.json()
    member = Member.objects.get(card_number=body["card_number"])
    assert member.phone == "+905551112233"
    assert member.marketing_consent is True
    assert member.user.email == "till.shopper@example.com"
    assert not member.user.has_usable_password()  # claimed later through "forgot password"
    assert body["points_balance"] == 0
    assert body["display_name"] == "Ali V."


@pytest.mark.django_db
def test_enrol_with_only_a_phone(api_client):
    response = _post(api_client, {"phone": "+905559998877"})
    assert response.status_code == 201
    assert Member.objects.get(phone="+905559998877").user is None


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({}, "email"),
        ({"first_name": "No contact"}, "email"),
        ({"email": "not-an-email"}, "email"),
        ({"phone": "0555 123"}, "phone"),
        ({"email": "a@example.com", "marketing_consent": "maybe"}, "marketing_consent"),
        ({"email": "a@example.com", "first_name": "x" * 151}, "first_name"),
    ],
)
def test_enrol_refuses_bad_input_and_writes_nothing(api_client, payload, field):
    body = _problem(_post(api_client, payload), 400, "validation_error")
    assert field in body["errors"]
    assert not Member.objects.exists()
    assert not User.objects.exists()


@pytest.mark.django_db
def test_enrol_masks_a_payment_card_number_typed_into_a_name(api_client):
    response = _post(api_client, {"phone": "+905551230000", "first_name": "4111 1111 1111 1111"})
    assert response.status_code == 201
    member = Member.objects.get(phone="+905551230000")
    assert "4111" not in member.first_name
    assert "4111" not in json.dumps(list(IdempotencyRecord.objects.values_list("body", flat=True)))


@pytest.mark.django_db
def test_enrolling_an_existing_shopper_answers_member_exists_with_the_card(api_client, member):
    body = _problem(_post(api_client, {"email": member.user.email.upper()}), 409, "member_exists")
    assert body["card_number"] == member.card_number
    assert Member.objects.count() == 1


@pytest.mark.django_db
def test_malformed_json_and_wrong_media_type(api_client):
    response = api_client.post(
        ENROL, data='{"email": "a@b.c"', content_type="application/json", HTTP_IDEMPOTENCY_KEY="k1"
    )
    _problem(response, 400, "malformed_json")
    response = api_client.post(
        ENROL, data="email=a", content_type="text/plain", HTTP_IDEMPOTENCY_KEY="k2"
    )
    _problem(response, 415, "unsupported_media_type")
    assert not Member.objects.exists()


@pytest.mark.django_db
def test_oversized_body_is_refused(api_client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    response = _post(api_client, {"email": "a@example.com", "first_name": "x" * 4000})
    _problem(response, 413, "payload_too_large")
    assert not Member.objects.exists()


@pytest.mark.django_db
def test_unknown_api_path_is_a_problem_document(api_client):
    _problem(api_client.get("/api/v1/no-such-thing"), 404, "not_found")


# Idempotency ------------------------------------------------------------------------


@pytest.mark.django_db
def test_missing_or_bad_idempotency_key_is_refused(api_client):
    response = api_client.post(
        ENROL, data=json.dumps({"phone": "+905551110000"}), content_type="application/json"
    )
    _problem(response, 400, "idempotency_key_required")
    _problem(_post(api_client, {"phone": "+905551110000"}, key="x" * 256), 400, "validation_error")
    _problem(
        _post(api_client, {"phone": "+905551110000"}, key="has space"), 400, "validation_error"
    )
    assert not Member.objects.exists()


@pytest.mark.django_db
def test_same_key_same_body_ten_times_enrols_once_with_identical_answers(api_client):
    key = str(uuid.uuid4())
    responses = [_post(api_client, {"phone": "+905554443322"}, key=key) for _ in range(10)]
    assert {r.status_code for r in responses} == {201}
    assert len({r.content for r in responses}) == 1
    assert "Idempotent-Replayed" not in responses[0]
    assert all(r["Idempotent-Replayed"] == "true" for r in responses[1:])
    assert Member.objects.count() == 1


@pytest.mark.django_db
def test_same_key_with_another_body_is_refused(api_client):
    key = str(uuid.uuid4())
    assert _post(api_client, {"phone": "+905554443322"}, key=key).status_code == 201
    _problem(_post(api_client, {"phone": "+905554443300"}, key=key), 422, "idempotency_key_reused")
    assert Member.objects.count() == 1


@pytest.mark.django_db
def test_a_business_error_is_replayed_too(api_client, member):
    key = str(uuid.uuid4())
    first = _post(api_client, {"email": member.user.email}, key=key)
    _problem(first, 409, "member_exists")
    again = _post(api_client, {"email": member.user.email}, key=key)
    assert again.content == first.content
    assert again["Idempotent-Replayed"] == "true"


@pytest.mark.django_db
def test_keys_are_scoped_to_the_store(api_client, other_store_client):
    key = str(uuid.uuid4())
    assert _post(api_client, {"phone": "+905554440001"}, key=key).status_code == 201
    assert _post(other_store_client, {"phone": "+905554440002"}, key=key).status_code == 201
    assert Member.objects.count() == 2


@pytest.mark.django_db
def test_records_older_than_seven_days_are_purged(api_client):
    _post(api_client, {"phone": "+905554440003"})
    IdempotencyRecord.objects.update(created_at=timezone.now() - timedelta(days=8))
    _post(api_client, {"phone": "+905554440004"})
    assert idempotency_purge() == 1
    assert IdempotencyRecord.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_duplicates_enrol_exactly_once(postgres_only, api_key):
    from rest_framework.test import APIClient

    key = str(uuid.uuid4())

    def send(_i):
        client = APIClient(HTTP_AUTHORIZATION=f"Api-Key {api_key[1]}")
        return _post(client, {"phone": "+905557770000"}, key=key)

    results = run_at_once(send)
    assert Member.objects.count() == 1
    statuses = sorted(r.status_code for r in results)
    assert statuses.count(201) >= 1
    assert set(statuses) <= {201, 409}
    for response in results:
        if response.status_code == 409:
            assert response.json()["code"] == "idempotency_key_in_use"
        else:
            assert response.json()["card_number"] == Member.objects.get().card_number


@pytest.mark.django_db(transaction=True)
def test_a_key_whose_first_request_is_still_running_answers_in_use(
    postgres_only, api_client, store
):
    """Hold the key's lock from another connection, as an in-flight request would."""
    key = str(uuid.uuid4())
    with other_connection() as other:
        other.execute("BEGIN")
        other.execute("SELECT pg_advisory_xact_lock(%s)", [key_lock_id(store, key)])
        _problem(
            _post(api_client, {"phone": "+905551119999"}, key=key), 409, "idempotency_key_in_use"
        )
        assert not Member.objects.exists()
        other.execute("ROLLBACK")
    assert _post(api_client, {"phone": "+905551119999"}, key=key).status_code == 201
