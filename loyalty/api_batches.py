"""POST /api/v1/batches: purchases and returns a till recorded while offline, up to 500
at once, each idempotent on its own key and answered as its single request would be.

The batch runs in one transaction (a commit waits for the disk; 500 of them were most of
a batch's time), which first locks every member it names, in pk order, so that two tills
syncing the same members wait for each other instead of deadlocking. Plain purchases (no
points paid, no membership plan bought) go through `purchases_bulk.purchases_record_many`
in runs of distinct members, with a fixed number of queries per run; everything else
(returns, points payments, plans, a member's second purchase in a run, a repeated key)
goes the single way, in order, in a savepoint of its own. A run that collides with a
concurrent request is undone and redone the single way.
"""

import uuid
from dataclasses import dataclass

from django.db import IntegrityError, transaction
from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from loyalty import memberships
from loyalty.api import (
    _BASKET,
    MAX_BATCH,
    PurchaseInSerializer,
    _cause,
    _lines,
    purchase_body,
    purchase_handler,
    return_handler,
    validated,
)
from loyalty.db_copy import objects_insert
from loyalty.ledger import members_lock_by_cards, members_lock_up_front
from loyalty.models import Purchase
from loyalty.purchases_bulk import Sale, program_warm, purchases_record_many, sale_is_plain
from members.cards import card_number_is_valid
from partners.api import problems
from partners.api.fields import JsonObject
from partners.api.idempotency import (
    answer_for,
    fingerprint,
    key_check,
    locks_and_find,
    outcome_settled,
    record_new,
    run_idempotent,
)
from partners.api.problems import ApiProblem
from partners.api.views import ApiView
from partners.models import IdempotencyRecord

PURCHASES_PATH = "/api/v1/purchases"


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


class BatchItemSerializer(serializers.Serializer):
    idempotency_key = serializers.CharField(max_length=255)
    kind = serializers.ChoiceField(choices=["purchase", "return"])
    payload = JsonObject()


class BatchInSerializer(serializers.Serializer):
    items = BatchItemSerializer(many=True, allow_empty=False, max_length=MAX_BATCH)


class BatchResultSerializer(serializers.Serializer):
    idempotency_key = serializers.CharField()
    status = serializers.IntegerField()
    body = serializers.DictField()


class BatchOutSerializer(serializers.Serializer):
    results = BatchResultSerializer(many=True)


BATCH_EXAMPLES = [
    OpenApiExample("Two sales from an offline till", request_only=True, value={"items": [
        {"idempotency_key": "till3-0001", "kind": "purchase", "payload": _BASKET | {
            "receipt_id": "OFF-1", "occurred_at": "2026-11-24T09:00:00+00:00"}},
        {"idempotency_key": "till3-0002", "kind": "return", "payload": {
            "purchase_id": "4f1c2b8e-2a51-4f0e-9d8c-1f2a3b4c5d6e", "return_id": "RT-OFF-1"}},
    ]}),
    OpenApiExample("Results", response_only=True, value={"results": [
        {"idempotency_key": "till3-0001", "status": 201, "body": {"id": "…", "points_earned": 49}},
        {"idempotency_key": "till3-0002", "status": 422, "body": {
            "type": "/api/v1/problems/return_exceeds_purchase", "title": "Return exceeds purchase",
            "status": 422, "detail": "Everything on this purchase was already returned.",
            "code": "return_exceeds_purchase"}},
    ]}),
]  # fmt: skip


class BatchApi(ApiView):
    required_scope = "purchases:write"

    @extend_schema(
        operation_id="batches_sync",
        summary="Sync purchases and returns recorded while offline",
        request=BatchInSerializer,
        responses={200: BatchOutSerializer},
        examples=BATCH_EXAMPLES,
        description="Up to 500 items, applied in order, each on its own (one item's error "
        "undoes only that item) and idempotent "
        "on its own `idempotency_key` (the same key as a single request would use: an item already "
        "sent alone is replayed). A `return` item's payload carries `purchase_id`. One bad item "
        "does not stop the others: each result has the status and body its single request would "
        "have had. Re-sending the batch changes nothing.",
    )
    def post(self, request):
        items = validated(BatchInSerializer, request.data)["items"]
        program_warm()
        with transaction.atomic(durable=True):
            results = BatchSync(request.user.store, _cause(request)).run(items)
        return Response({"results": results})


@dataclass(slots=True)
class _Item:
    index: int
    key: str
    kind: str
    path: str
    payload: dict
    purchase_id: str = ""
    fingerprint: str = ""
    error: Exception | None = None


@dataclass(slots=True)
class _Plain:
    """A plain purchase waiting in the current run."""

    item: _Item
    values: dict
    lines: list


class BatchSync:
    """Answers one batch's items in order (inside the caller's transaction)."""

    def __init__(self, store, cause):
        self.store, self.cause = store, cause
        self.catalog = memberships.plan_catalog()
        self.results: list[dict | None] = []
        self._run_reset()

    def _run_reset(self):
        self.plain: list[_Plain] = []
        self.answered: list[tuple[_Item, int, dict]] = []  # validation errors, to store
        self.cards: set[str] = set()
        self.receipts: set[str] = set()

    def run(self, items: list[dict]) -> list[dict]:
        prepared = [self._prepare(i, item) for i, item in enumerate(items)]
        self.results = [None] * len(prepared)
        keys = list(dict.fromkeys(item.key for item in prepared if item.error is None))
        found = locks_and_find(self.store.pk, keys)
        todo: list[tuple[_Item, bool]] = []  # (item, its key came earlier in the batch)
        seen: set[str] = set()
        for item in prepared:
            if item.error is not None:
                self._error(item, item.error)
            elif item.key in seen:
                todo.append((item, True))
            else:
                seen.add(item.key)
                try:
                    settled = outcome_settled(*found[item.key], item.fingerprint)
                except ApiProblem as problem:
                    self._error(item, problem)
                    continue
                if settled is not None:
                    self._result(item, settled.status, settled.body)
                else:
                    todo.append((item, False))
        self._members_lock([item for item, _ in todo])
        for item, repeated in todo:
            if repeated or item.kind != "purchase":  # a repeat answers as a retry would
                self._flush()
                self._single(item)
            else:
                self._purchase(item)
        self._flush()
        return self.results

    def _members_lock(self, items: list[_Item]) -> None:
        """Lock every member the items name before writing any (see members_lock_up_front);
        ill-formed cards and ids are left to the items' own validation."""
        cards, purchase_ids = [], []
        for item in items:
            if item.kind == "purchase":
                card = item.payload.get("card_number")
                if isinstance(card, str) and card_number_is_valid(card):
                    cards.append(card)
            elif _is_uuid(item.purchase_id):
                purchase_ids.append(item.purchase_id)
        members = None
        if purchase_ids:
            members = Purchase.objects.filter(store=self.store, public_id__in=purchase_ids).values(
                "member_id"
            )
        members_lock_up_front(cards=cards, member_ids=members)

    def _prepare(self, index: int, item: dict) -> _Item:
        key, kind, payload = item["idempotency_key"], item["kind"], item["payload"]
        if kind == "purchase":
            prepared = _Item(index, key, kind, PURCHASES_PATH, payload)
        else:
            purchase_id = str(payload.get("purchase_id", ""))
            rest = {k: v for k, v in payload.items() if k != "purchase_id"}
            path = f"{PURCHASES_PATH}/{purchase_id}/returns"
            prepared = _Item(index, key, kind, path, rest, purchase_id=purchase_id)
        try:
            key_check(key)
        except ApiProblem as problem:
            prepared.error = problem
            return prepared
        prepared.fingerprint = fingerprint("POST", prepared.path, prepared.payload)
        return prepared

    def _purchase(self, item: _Item) -> None:
        try:
            values = validated(PurchaseInSerializer, item.payload)
        except serializers.ValidationError as invalid:
            status, body = answer_for(invalid)
            self.answered.append((item, status, body))
            self._result(item, status, body)
            return
        lines = _lines(values)
        plain = sale_is_plain(
            lines=lines, redeem_points=values["redeem_points"], catalog=self.catalog
        )
        if not plain:
            self._flush()
            self._single(item)
            return
        if values["card_number"] in self.cards or values["receipt_id"] in self.receipts:
            self._flush()  # the member's (or receipt's) earlier sale must be written first
        self.plain.append(_Plain(item, values, lines))
        self.cards.add(values["card_number"])
        self.receipts.add(values["receipt_id"])

    def _flush(self) -> None:
        """Write the current run: its plain purchases at once, and every answer."""
        plain, answered = self.plain, self.answered
        self._run_reset()
        if not plain and not answered:
            return
        later: list[_Item] = []
        try:
            with transaction.atomic():
                records = self._record_plain(plain, later)
                records += [
                    record_new(store=self.store, key=item.key, fingerprint=item.fingerprint,
                               status=status, body=body)
                    for item, status, body in answered
                ]  # fmt: skip
                objects_insert(IdempotencyRecord, records)
        except Exception as exc:
            # The run is undone and its items go the single way, where each stands alone:
            # a concurrent request recorded one of these receipts or keys meanwhile (the
            # single way finds it and answers so), or a bug, which then fails one item only.
            if not isinstance(exc, IntegrityError):
                problems.log.exception("Batch run failed; its items go one by one", exc_info=exc)
            later = sorted([p.item for p in plain] + [item for item, _, _ in answered],
                           key=lambda item: item.index)  # fmt: skip
        for item in later:
            self._single(item)

    def _record_plain(self, plain: list[_Plain], later: list[_Item]) -> list[IdempotencyRecord]:
        if not plain:
            return []
        locked = members_lock_by_cards([p.values["card_number"] for p in plain])
        taken = set(
            Purchase.objects.filter(
                store=self.store, receipt_id__in=[p.values["receipt_id"] for p in plain]
            ).values_list("receipt_id", flat=True)
        )
        sales, chosen = [], []
        for p in plain:
            found = locked.get(p.values["card_number"])
            if found is None or p.values["receipt_id"] in taken:
                later.append(p.item)  # unknown card, accounts never made, receipt taken
                continue
            member, accounts = found
            values = p.values
            sales.append(
                Sale(
                    member=member,
                    accounts=accounts,
                    receipt_id=values["receipt_id"],
                    occurred_at=values["occurred_at"],
                    currency=values["currency"],
                    total=values["total"],
                    lines=p.lines,
                )
            )
            chosen.append(p.item)
        outcomes = purchases_record_many(store=self.store, sales=sales, cause=self.cause)
        recorded = [
            (item, o) for item, o in zip(chosen, outcomes, strict=True) if isinstance(o, Purchase)
        ]
        bodies = [purchase_body(o) for _, o in recorded]
        answers = {
            item.index: (201, body) for (item, _), body in zip(recorded, bodies, strict=True)
        }
        for item, outcome in zip(chosen, outcomes, strict=True):
            if not isinstance(outcome, Purchase):
                answers[item.index] = answer_for(outcome)
        records = []
        for item in chosen:
            status, body = answers[item.index]
            self._result(item, status, body)
            records.append(
                record_new(store=self.store, key=item.key, fingerprint=item.fingerprint,
                           status=status, body=body)
            )  # fmt: skip
        return records

    def _single(self, item: _Item) -> None:
        """The item the way its single request goes, in a savepoint of its own."""
        store, cause = self.store, self.cause
        if item.kind == "purchase":
            handler = lambda: purchase_handler(store, cause, item.payload)  # noqa: E731
        else:
            handler = lambda: return_handler(store, cause, item.purchase_id, item.payload)  # noqa: E731
        try:
            outcome = run_idempotent(
                store=store, key=item.key, fingerprint=item.fingerprint, handler=handler,
                durable=False,
            )  # fmt: skip
        except Exception as exc:  # one bad item must not sink the batch
            self._error(item, exc)
            return
        self._result(item, outcome.status, outcome.body)

    def _error(self, item: _Item, exc: Exception) -> None:
        found = problems.problem_for(exc)
        if found is None:
            problems.log.exception("Batch item failed", exc_info=exc)
            body = problems.problem_body(
                "server_error", 500, "This item failed on our side; retry it."
            )
            found = (500, body, {})
        self._result(item, found[0], found[1])

    def _result(self, item: _Item, status: int, body: dict) -> None:
        self.results[item.index] = {"idempotency_key": item.key, "status": status, "body": body}
