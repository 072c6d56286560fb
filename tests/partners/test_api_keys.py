"""API keys: how they are made and stored, how a request authenticates with one, scopes,
the once-a-minute last-used stamp, the command and admin that issue keys, throttling,
and the card-number masking of free text (shared/API.md)."""

import io
import re
import time
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from partners.api import authentication
from partners.api.fields import luhn_valid, pan_redact
from partners.api.throttling import ApiKeyRateThrottle
from partners.keys import key_generate, key_hash, key_split
from partners.models import ApiKey, Scope, Terminal
from partners.services import api_key_create, api_key_revoke
from tests.factories import MemberFactory, StaffFactory, StoreFactory, TerminalFactory

LOOKUP = "/api/v1/members/lookup"
PROBLEM = "application/problem+json"
KEY_SHAPE = re.compile(r"^tly_[a-z0-9]{8}_[A-Za-z0-9_-]{43}$")


def client_with(full_key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {full_key}")
    return client


def lookup(client: APIClient, card: str = "6001234567893"):
    """A members:read request; without a member it answers 404 once authenticated."""
    return client.get(LOOKUP, {"card": card})


def assert_problem(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"] == f"/api/v1/problems/{code}"
    assert body["title"]
    assert body["detail"]
    return body


def assert_authenticated(response) -> None:
    """The key got past authentication and permissions (the member just does not exist)."""
    assert response.status_code == 404, response.content
    assert response.json()["code"] == "member_not_found"


# --- the key itself ------------------------------------------------------------------


def test_generated_keys_are_random_high_entropy_and_well_formed():
    keys = {key_generate()[0] for _ in range(50)}
    assert len(keys) == 50
    for full_key in keys:
        assert KEY_SHAPE.match(full_key), full_key
        _, secret = key_split(full_key)
        assert len(secret) == 43  # 32 random bytes, URL-safe base64: 256 bits


def test_key_split_keeps_underscores_inside_the_secret():
    # URL-safe base64 uses "_" and "-": about half of all secrets contain an "_".
    secret = "ab_cd-ef_" + "x" * 34
    assert key_split(f"tly_abcd1234_{secret}") == ("tly_abcd1234", secret)


@pytest.mark.parametrize(
    "bad",
    ["", "tly_", "tly_abcd1234", "tly_abcd1234_", "tly_abc_secret", "xyz_abcd1234_secret",
     "tly_abcd1234-secret", "tly_abcd12345_secret"],
)  # fmt: skip
def test_key_split_refuses_malformed_keys(bad):
    assert key_split(bad) is None


@pytest.mark.django_db
def test_every_issued_key_authenticates():
    """Issue many keys so that secrets with "_" and "-" are certainly among them."""
    terminal = TerminalFactory()
    for index in range(40):
        _, full_key = api_key_create(terminal=terminal, name=f"Key {index}")
        assert_authenticated(lookup(client_with(full_key)))


@pytest.mark.django_db
def test_two_keys_differ_and_only_a_hash_and_prefix_are_stored(terminal):
    first, first_key = api_key_create(terminal=terminal, name="Till 1")
    second, second_key = api_key_create(terminal=terminal, name="Till 2")
    assert first_key != second_key
    assert first.prefix != second.prefix

    prefix, secret = key_split(first_key)
    row = ApiKey.objects.get(pk=first.pk)
    assert row.prefix == prefix
    assert row.hashed_secret == key_hash(secret)
    assert len(row.hashed_secret) == 64
    for value in [getattr(row, field.attname) for field in ApiKey._meta.concrete_fields]:
        assert first_key not in str(value)
        assert secret not in str(value)
    # And not in the raw row either, whatever column it might hide in.
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {ApiKey._meta.db_table} WHERE id = %s", [first.pk])
        raw = " ".join(str(column) for column in cursor.fetchone())
    assert secret not in raw
    assert first_key not in raw


# --- authentication ------------------------------------------------------------------


@pytest.mark.django_db
def test_no_header_is_401_problem_with_www_authenticate():
    response = APIClient().get(LOOKUP, {"card": "6001234567893"})
    body = assert_problem(response, 401, "authentication_failed")
    assert response["WWW-Authenticate"] == "Api-Key"
    assert "credentials" in body["detail"].lower()


@pytest.mark.django_db
def test_another_scheme_is_401(api_key):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key[1]}")
    response = lookup(client)
    assert_problem(response, 401, "authentication_failed")
    assert response["WWW-Authenticate"] == "Api-Key"


def _wrong_secret(full_key: str) -> str:
    prefix, secret = key_split(full_key)
    return f"{prefix}_{'A' if secret[0] != 'A' else 'B'}{secret[1:]}"


def _unknown_prefix(full_key: str) -> str:
    prefix, secret = key_split(full_key)
    other = "tly_" + ("zzzzzzzz" if prefix != "tly_zzzzzzzz" else "yyyyyyyy")
    return f"{other}_{secret}"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("mangle", "detail"),
    [
        (_wrong_secret, "Unknown API key."),
        (_unknown_prefix, "Unknown API key."),
        (lambda key: "not-a-key", "Malformed API key."),
        (lambda key: key.replace("tly_", "tlx_"), "Malformed API key."),
        (lambda key: key[:12], "Malformed API key."),
        (lambda key: "", "Malformed API key."),
    ],
    ids=["wrong-secret", "unknown-prefix", "garbage", "other-prefix", "prefix-only", "empty"],
)
def test_bad_keys_are_401_with_a_clear_detail(api_key, mangle, detail):
    response = lookup(client_with(mangle(api_key[1])))
    body = assert_problem(response, 401, "authentication_failed")
    assert body["detail"] == detail
    assert response["WWW-Authenticate"] == "Api-Key"


@pytest.mark.django_db
def test_expired_key_is_401(terminal):
    _, full_key = api_key_create(
        terminal=terminal, name="Old", expires_at=timezone.now() - timedelta(seconds=1)
    )
    body = assert_problem(lookup(client_with(full_key)), 401, "authentication_failed")
    assert body["detail"] == "This API key has expired."


@pytest.mark.django_db
def test_key_expiring_later_still_works(terminal):
    _, full_key = api_key_create(
        terminal=terminal, name="Soon", expires_at=timezone.now() + timedelta(hours=1)
    )
    assert_authenticated(lookup(client_with(full_key)))


@pytest.mark.django_db
def test_revoked_key_is_401(api_key):
    row, full_key = api_key
    assert_authenticated(lookup(client_with(full_key)))
    api_key_revoke(api_key=row)
    body = assert_problem(lookup(client_with(full_key)), 401, "authentication_failed")
    assert body["detail"] == "This API key was revoked."


@pytest.mark.django_db
def test_revoking_twice_keeps_the_first_revocation_time(api_key):
    row, _ = api_key
    api_key_revoke(api_key=row)
    first = ApiKey.objects.get(pk=row.pk).revoked_at
    api_key_revoke(api_key=row)
    assert ApiKey.objects.get(pk=row.pk).revoked_at == first


@pytest.mark.django_db
def test_key_lacking_the_scope_is_403_naming_the_scope(terminal):
    _, full_key = api_key_create(terminal=terminal, name="Read only", scopes=["members:read"])
    client = client_with(full_key)
    assert_authenticated(lookup(client))
    response = client.post(
        "/api/v1/members", {"email": "new@example.com"}, format="json",
        HTTP_IDEMPOTENCY_KEY="5d0b4c0e-1f7e-4d8a-9c71-3a2f0c6b9e11",
    )  # fmt: skip
    body = assert_problem(response, 403, "permission_denied")
    assert "members:write" in body["detail"]


@pytest.mark.django_db
def test_key_with_the_scope_passes(terminal):
    _, full_key = api_key_create(terminal=terminal, name="Writer", scopes=["members:write"])
    response = client_with(full_key).post(
        "/api/v1/members", {"email": "new@example.com"}, format="json",
        HTTP_IDEMPOTENCY_KEY="0e6c3a55-1b7f-4f38-a0a4-4c2b7d9d1f00",
    )  # fmt: skip
    assert response.status_code == 201, response.content
    body = assert_problem(lookup(client_with(full_key)), 403, "permission_denied")
    assert "members:read" in body["detail"]


def test_unknown_scope_is_refused_when_issuing(db, terminal):
    from partners.services import InvalidScopes

    with pytest.raises(InvalidScopes, match="members:delete"):
        api_key_create(terminal=terminal, name="Bad", scopes=["members:read", "members:delete"])
    assert not ApiKey.objects.exists()


@pytest.fixture
def clients_seen(monkeypatch):
    """The ApiKey objects that authenticated requests were given, in order."""
    seen = []
    real = authentication.ApiClient

    def recording(api_key):
        seen.append(api_key)
        return real(api_key)

    monkeypatch.setattr(authentication, "ApiClient", recording)
    return seen


@pytest.mark.django_db
def test_a_process_decodes_a_tills_key_once_while_it_stays_the_same(
    shared_cache, api_key, clients_seen
):
    """The key read from Redis on every request is unpickled once per process (config.cache
    get_many_shared), yet a revocation still refuses the very next request."""
    row, full_key = api_key
    client = client_with(full_key)
    for _ in range(3):  # the first also stamps last_used_at, which re-caches the key
        assert_authenticated(lookup(client))
    assert clients_seen[1] is clients_seen[2]
    api_key_revoke(api_key=row)
    body = assert_problem(lookup(client), 401, "authentication_failed")
    assert body["detail"] == "This API key was revoked."


@pytest.mark.django_db
def test_stamping_last_used_leaves_the_key_other_requests_hold_alone(
    shared_cache, api_key, clients_seen, monkeypatch
):
    _row, full_key = api_key
    client = client_with(full_key)
    assert_authenticated(lookup(client))
    assert_authenticated(lookup(client))
    held = clients_seen[-1]
    stamped = held.last_used_at
    later = stamped + timedelta(minutes=2)
    monkeypatch.setattr(authentication.timezone, "now", lambda: later)
    assert_authenticated(lookup(client))
    assert held.last_used_at == stamped  # the shared object was not changed in place
    assert_authenticated(lookup(client))
    assert clients_seen[-1] is not held and clients_seen[-1].last_used_at == later


# --- last used -----------------------------------------------------------------------


@pytest.mark.django_db
def test_last_used_is_recorded_once_a_minute(api_key, monkeypatch):
    row, full_key = api_key
    client = client_with(full_key)
    assert row.last_used_at is None

    before = timezone.now()
    assert_authenticated(lookup(client))
    stamped = ApiKey.objects.get(pk=row.pk).last_used_at
    assert stamped is not None
    assert before <= stamped <= timezone.now()

    # Within the minute: the stamp stays and no UPDATE is written.
    with CaptureQueriesContext(connection) as queries:
        assert_authenticated(lookup(client))
    updates = [q["sql"] for q in queries if q["sql"].lstrip().upper().startswith("UPDATE")]
    assert updates == []
    assert ApiKey.objects.get(pk=row.pk).last_used_at == stamped

    # Two minutes later: stamped again.
    later = stamped + timedelta(minutes=2)
    monkeypatch.setattr(authentication.timezone, "now", lambda: later)
    assert_authenticated(lookup(client))
    assert ApiKey.objects.get(pk=row.pk).last_used_at == later


@pytest.mark.django_db
def test_failed_authentication_does_not_stamp_last_used(terminal):
    row, full_key = api_key_create(terminal=terminal, name="Till")
    lookup(client_with(_wrong_secret(full_key)))
    api_key_revoke(api_key=row)
    lookup(client_with(full_key))
    assert ApiKey.objects.get(pk=row.pk).last_used_at is None


# --- the create_api_key command -------------------------------------------------------


@pytest.mark.django_db
def test_create_api_key_command_prints_a_working_key_with_only_its_scopes():
    store = StoreFactory(code="istanbul-1")
    out, err = io.StringIO(), io.StringIO()
    call_command(
        "create_api_key", "--store", "istanbul-1", "--name", "Till 2",
        "--scopes", "members:read", stdout=out, stderr=err,
    )  # fmt: skip
    full_key = out.getvalue().strip().splitlines()[-1]
    assert KEY_SHAPE.match(full_key)
    assert out.getvalue().strip() == full_key  # nothing else on stdout, so scripts can read it

    row = ApiKey.objects.get()
    assert row.name == "Till 2"
    assert row.scopes == ["members:read"]
    assert row.terminal == Terminal.objects.get(store=store, name="Till 2")
    assert full_key not in err.getvalue()
    assert row.prefix in err.getvalue()

    client = client_with(full_key)
    assert_authenticated(lookup(client))
    response = client.post(
        "/api/v1/members", {"email": "x@example.com"}, format="json",
        HTTP_IDEMPOTENCY_KEY="cmd-key-1",
    )  # fmt: skip
    assert "members:write" in assert_problem(response, 403, "permission_denied")["detail"]


@pytest.mark.django_db
def test_create_api_key_command_defaults_to_all_scopes_on_an_existing_terminal(terminal):
    out = io.StringIO()
    call_command(
        "create_api_key", "--store", terminal.store.code, "--name", "Spare",
        "--terminal", terminal.name, stdout=out, stderr=io.StringIO(),
    )  # fmt: skip
    row = ApiKey.objects.get(terminal=terminal)
    assert sorted(row.scopes) == sorted(Scope.values)
    assert_authenticated(lookup(client_with(out.getvalue().strip().splitlines()[-1])))


@pytest.mark.django_db
def test_create_api_key_command_refuses_an_unknown_store():
    with pytest.raises(CommandError, match="no-such-store"):
        call_command(
            "create_api_key", "--store", "no-such-store", "--name", "Till",
            stdout=io.StringIO(), stderr=io.StringIO(),
        )  # fmt: skip
    assert not ApiKey.objects.exists()


@pytest.mark.django_db
def test_create_api_key_command_refuses_an_unknown_scope(store):
    with pytest.raises(CommandError, match="members:delete"):
        call_command(
            "create_api_key", "--store", store.code, "--name", "Till",
            "--scopes", "members:read", "members:delete",
            stdout=io.StringIO(), stderr=io.StringIO(),
        )  # fmt: skip
    assert not ApiKey.objects.exists()


# --- admin ---------------------------------------------------------------------------


@pytest.fixture
def staff_client(client, db):
    client.force_login(StaffFactory())
    return client


NEW_KEY_IN_PAGE = re.compile(r"<code data-testid=['\"]new-api-key['\"]>([^<]+)</code>")


@pytest.mark.django_db
def test_admin_adds_a_key_and_shows_it_once(staff_client, terminal):
    response = staff_client.post(
        reverse("admin:partners_apikey_add"),
        {
            "terminal": terminal.pk,
            "name": "Till 3",
            "scopes": ["members:read", "members:write"],
            "expires_at_0": "",
            "expires_at_1": "",
        },
        follow=True,
    )
    assert response.status_code == 200
    page = response.content.decode()
    shown = NEW_KEY_IN_PAGE.findall(page)
    assert len(shown) == 1, page
    full_key = shown[0]
    assert KEY_SHAPE.match(full_key)

    row = ApiKey.objects.get(name="Till 3")
    assert row.terminal == terminal
    assert sorted(row.scopes) == ["members:read", "members:write"]
    assert row.expires_at is None
    assert row.created_by is not None and row.created_by.is_superuser
    assert key_split(full_key)[0] == row.prefix
    assert_authenticated(lookup(client_with(full_key)))

    # Shown once: neither the change page nor the list shows it again.
    for url in (
        reverse("admin:partners_apikey_change", args=[row.pk]),
        reverse("admin:partners_apikey_changelist"),
    ):
        again = staff_client.get(url)
        assert again.status_code == 200
        assert full_key not in again.content.decode()
        assert key_split(full_key)[1] not in again.content.decode()
        assert row.prefix in again.content.decode()


@pytest.mark.django_db
def test_admin_add_form_requires_a_scope(staff_client, terminal):
    response = staff_client.post(
        reverse("admin:partners_apikey_add"),
        {"terminal": terminal.pk, "name": "Nothing", "expires_at_0": "", "expires_at_1": ""},
    )
    assert response.status_code == 200  # the form again, with its error
    assert not ApiKey.objects.exists()


@pytest.mark.django_db
def test_admin_revoke_action_revokes(staff_client, terminal):
    keep, keep_key = api_key_create(terminal=terminal, name="Keep")
    drop, drop_key = api_key_create(terminal=terminal, name="Drop")
    response = staff_client.post(
        reverse("admin:partners_apikey_changelist"),
        {"action": "revoke", "_selected_action": [drop.pk]},
        follow=True,
    )
    assert response.status_code == 200
    assert "Revoked 1 key(s)." in response.content.decode()
    assert ApiKey.objects.get(pk=drop.pk).revoked_at is not None
    assert ApiKey.objects.get(pk=keep.pk).revoked_at is None
    body = assert_problem(lookup(client_with(drop_key)), 401, "authentication_failed")
    assert body["detail"] == "This API key was revoked."
    assert_authenticated(lookup(client_with(keep_key)))


# --- throttling ----------------------------------------------------------------------


@pytest.fixture
def three_per_minute(monkeypatch):
    # DRF copies the rates into the class attribute THROTTLE_RATES when the throttling
    # module is first imported. override_settings(REST_FRAMEWORK=...) therefore only
    # "works" if nothing imported it before, and then leaks 3/min into every later test.
    # Patching the class is exact and undone after the test.
    monkeypatch.setattr(ApiKeyRateThrottle, "THROTTLE_RATES", {"api_key": "3/min"})
    cache.clear()  # the counters live in the cache (Redis when REDIS_URL is set)
    yield
    cache.clear()


@pytest.mark.django_db
def test_fourth_request_in_a_minute_is_429_with_retry_after(api_key, three_per_minute):
    client = client_with(api_key[1])
    for _ in range(3):
        assert_authenticated(lookup(client))
    response = lookup(client)
    body = assert_problem(response, 429, "throttled")
    retry_after = int(response["Retry-After"])
    assert 0 < retry_after <= 60
    assert str(retry_after) in body["detail"]


@pytest.mark.django_db
def test_throttling_counts_per_key(terminal, three_per_minute):
    _, first = api_key_create(terminal=terminal, name="One")
    _, second = api_key_create(terminal=terminal, name="Two")
    for _ in range(3):
        assert_authenticated(lookup(client_with(first)))
    assert lookup(client_with(first)).status_code == 429
    assert_authenticated(lookup(client_with(second)))


@pytest.mark.django_db
def test_unauthenticated_requests_are_not_counted_against_a_key(api_key, three_per_minute):
    for _ in range(5):
        assert lookup(APIClient()).status_code == 401
    assert_authenticated(lookup(client_with(api_key[1])))


@pytest.mark.django_db
def test_wrong_secrets_never_use_up_a_tills_limit(api_key, three_per_minute):
    """The count rides in the round trip that reads the key, before the secret is checked:
    it is kept per secret presented, so someone who knows a till's visible prefix cannot
    get the till throttled by sending wrong secrets."""
    _row, full_key = api_key
    for _ in range(5):
        assert_problem(lookup(client_with(_wrong_secret(full_key))), 401, "authentication_failed")
    client = client_with(full_key)
    for _ in range(3):
        assert_authenticated(lookup(client))
    assert_problem(lookup(client), 429, "throttled")


@pytest.mark.django_db
def test_a_request_that_crosses_into_the_next_window_is_counted_there(
    api_key, three_per_minute, monkeypatch
):
    """Counted with the key in one window, checked in the next: the check counts anew in
    its own window rather than trusting the old window's count."""
    from partners.api import throttling

    client = client_with(api_key[1])
    for _ in range(3):
        assert_authenticated(lookup(client))
    assert_problem(lookup(client), 429, "throttled")
    window_end = (int(time.time() // 60) + 1) * 60
    clock = iter([window_end - 0.01, window_end + 0.01])  # the key's trip, then the check
    monkeypatch.setattr(throttling, "_now", lambda: next(clock, window_end + 0.02))
    assert_authenticated(lookup(client))


# --- pan_redact ----------------------------------------------------------------------

REDACTED = "[card number removed]"


@pytest.mark.parametrize(
    "pan",
    [
        "4111111111111111",  # Visa test number, 16 digits
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "5555555555554444",  # Mastercard
        "378282246310005",  # Amex, 15 digits
        "4222222222222",  # 13 digits
        "6011000990139424",
        "3530111333300000",
        "6304000000000000018",  # 19 digits (Maestro-length)
    ],
)
def test_pan_redact_masks_luhn_valid_card_numbers(pan):
    assert luhn_valid(re.sub(r"[ -]", "", pan))
    assert pan_redact(pan) == REDACTED
    assert pan_redact(f"paid with {pan} at till 2") == f"paid with {REDACTED} at till 2"
    assert pan not in pan_redact(f"a{pan}b")


@pytest.mark.parametrize(
    "text",
    [
        "4111111111111112",  # fails Luhn
        "4111 1111 1111 1112",
        "411111111111",  # 12 digits: too short to be a card
        "41111111111111111113",  # 20 digits: too long
        "order 12345, 3 items",
        "+905551234567",
        "",
    ],
)
def test_pan_redact_keeps_other_numbers(text):
    assert not (text.isdigit() and 13 <= len(text) <= 19 and luhn_valid(text))
    assert pan_redact(text) == text


@pytest.mark.django_db
def test_pan_redact_keeps_member_card_numbers_that_fail_luhn():
    members = [MemberFactory() for _ in range(30)]
    failing = [m.card_number for m in members if not luhn_valid(m.card_number)]
    assert failing  # ~90% of EAN-13 card numbers fail Luhn
    for card in failing:
        assert pan_redact(f"member {card} asked") == f"member {card} asked"


def test_pan_redact_masks_two_card_numbers_and_keeps_the_text_between():
    text = "first 4111111111111111, then 5555-5555-5555-4444."
    assert pan_redact(text) == f"first {REDACTED}, then {REDACTED}."
