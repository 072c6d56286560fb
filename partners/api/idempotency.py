"""Idempotency as API.md specifies: the first response to a key is stored in the same
transaction as what the request changed, so no retry can ever double-count points and
no committed change can lose its response.

- same key, same body → the stored response again, with `Idempotent-Replayed: true`
  (4xx business errors included; a 5xx rolls everything back and is not stored);
- same key, other body → 422 idempotency_key_reused;
- same key while the first request runs → 409 idempotency_key_in_use (on PostgreSQL
  a transaction-scoped advisory lock tells; SQLite serialises writers anyway);
- keys are scoped to the API key's store.
"""

import functools
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.utils import timezone
from django.utils.translation import gettext as _
from rest_framework.response import Response

from partners.api.problems import CONTENT_TYPE, ApiProblem, problem_for
from partners.models import IdempotencyRecord, Store

KEY_PATTERN = re.compile(r"^[\x21-\x7e]{1,255}$")
KEEP_FOR = timedelta(days=7)


@dataclass(frozen=True, slots=True)
class Outcome:
    status: int
    body: dict
    replayed: bool = False


def key_check(key: str | None) -> str:
    if key is None:
        raise ApiProblem(
            "idempotency_key_required", 400,
            _("Send an Idempotency-Key header (a UUID you keep until the request succeeds)."),
        )  # fmt: skip
    if not KEY_PATTERN.match(key):
        raise ApiProblem(
            "validation_error", 400,
            _("The Idempotency-Key must be 1–255 visible ASCII characters."),
            errors={"Idempotency-Key": [_("1–255 visible ASCII characters.")]},
        )  # fmt: skip
    return key


def fingerprint(method: str, path: str, payload) -> str:
    canonical = json.dumps(
        [method, path, payload], sort_keys=True, separators=(",", ":"), default=str
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def _lock(store_id: int, key: str) -> bool:
    if connection.vendor != "postgresql":
        return True
    digest = hashlib.sha256(f"{store_id}:{key}".encode()).digest()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_try_advisory_xact_lock(%s)", [int.from_bytes(digest[:8], "big", signed=True)]
        )
        return cursor.fetchone()[0]


def _run(
    *, store: Store, key: str, fingerprint: str, handler: Callable[[], tuple[int, dict]]
) -> Outcome:
    """Inside the caller's transaction: replay, refuse, or run `handler` and store its answer."""
    if not _lock(store.pk, key):
        raise ApiProblem(
            "idempotency_key_in_use",
            409,
            _("A request with this Idempotency-Key is still running; retry shortly."),
        )
    record = IdempotencyRecord.objects.filter(store=store, key=key).first()
    if record is not None:
        if record.fingerprint != fingerprint:
            raise ApiProblem(
                "idempotency_key_reused", 422,
                _("This Idempotency-Key was used with another request; use a new key for it."),
            )  # fmt: skip
        return Outcome(record.status, json.loads(record.body), replayed=True)
    try:
        with transaction.atomic():  # a savepoint: a business error undoes only the handler
            status, body = handler()
    except Exception as exc:
        found = problem_for(exc)
        if found is None or found[0] >= 500 or found[2]:
            raise  # a bug, or an answer that depends on the moment (throttling): don't store
        status, body = found[0], found[1]
    IdempotencyRecord.objects.create(
        store=store, key=key, fingerprint=fingerprint, status=status,
        body=json.dumps(body, ensure_ascii=False, cls=DjangoJSONEncoder),
    )  # fmt: skip
    return Outcome(status, body)


def run_idempotent(*, store: Store, key: str, fingerprint: str, handler) -> Outcome:
    """One durable transaction around the idempotency record and the handler's writes."""
    with transaction.atomic(durable=True):
        return _run(store=store, key=key, fingerprint=fingerprint, handler=handler)


def outcome_response(outcome: Outcome) -> Response:
    headers = {"Idempotent-Replayed": "true"} if outcome.replayed else {}
    content_type = CONTENT_TYPE if outcome.status >= 400 else None
    return Response(outcome.body, status=outcome.status, headers=headers, content_type=content_type)


def idempotent(method):
    """Decorate an APIView's `post`; the method returns (status, body) and may raise
    domain errors, which become stored problem responses."""

    @functools.wraps(method)
    def wrapper(view, request, *args, **kwargs):
        key = key_check(request.headers.get("Idempotency-Key"))
        outcome = run_idempotent(
            store=request.user.store, key=key,
            fingerprint=fingerprint(request.method, request.path, request.data),
            handler=lambda: method(view, request, *args, **kwargs),
        )  # fmt: skip
        return outcome_response(outcome)

    return wrapper


def idempotency_purge(*, now=None) -> int:
    """Forget responses older than the 7 days API.md promises."""
    cutoff = (now or timezone.now()) - KEEP_FOR
    deleted, _ = IdempotencyRecord.objects.filter(created_at__lt=cutoff).delete()
    return deleted
