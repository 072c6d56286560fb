"""POST /api/v1/batches: an offline till's sales answered as their single requests would be.

Plain purchases take a set-based path (loyalty/purchases_bulk.py); everything else goes the
single way. The main test plays one mixed batch for one population of members and the
same requests one by one for an identical population, then compares every answer and
everything written, member by member.
"""

import json
import re
import threading
import time
import uuid
from contextlib import contextmanager
from decimal import Decimal

import pytest
from django.db import OperationalError, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from loyalty import db_copy
from loyalty.ledger import member_accounts_lock, program_settings
from loyalty.models import (
    Account,
    CapPeriod,
    EarningRule,
    JournalEntry,
    Lot,
    Membership,
    MembershipPlan,
    Posting,
    Purchase,
    RuleAward,
    RuleKind,
    RuleTarget,
    TierChange,
)
from loyalty.rules import services as rules_services
from members.cards import ean13_check_digit
from partners.models import IdempotencyRecord
from partners.services import api_key_create
from tests.factories import MemberFactory, StoreFactory, TerminalFactory
from tests.loyalty.tiers_helpers import make_three_tiers

OCCURRED = (timezone.now() - timezone.timedelta(hours=1)).replace(microsecond=0).isoformat()
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def rule(**fields) -> EarningRule:
    fields.setdefault("code", f"rule-{uuid.uuid4().hex[:8]}")
    fields.setdefault("name", fields["code"])
    made = EarningRule(**fields)
    made.full_clean()
    return rules_services.earning_rule_save(rule=made)


@pytest.fixture
def program(db):
    """Tiers with multipliers, a campaign, a basket bonus, a first-purchase bonus, a capped
    rule and a paid plan: everything that makes one sale change what the next one earns."""
    tiers = make_three_tiers()
    rule(
        code="fragrance",
        name="Fragrance weekend",
        kind=RuleKind.MULTIPLIER,
        target=RuleTarget.CATEGORY,
        target_values="fragrance",
        multiplier=2,
    )
    rule(code="big-basket", name="Big basket", kind=RuleKind.BASKET_BONUS, threshold=300, points=50)
    rule(code="welcome", name="First purchase", kind=RuleKind.FIRST_PURCHASE, points=100)
    rule(
        code="hair",
        name="Hair month",
        kind=RuleKind.MULTIPLIER,
        target=RuleTarget.CATEGORY,
        target_values="hair",
        multiplier=3,
        cap_points=60,
        cap_period=CapPeriod.MONTH,
    )
    MembershipPlan.objects.create(
        code="plus", name="Plus", sku="PLUS-1Y", fee=Decimal("49.00"), term_months=12,
        tier=tiers[1], earn_multiplier=Decimal("1.5"), bonus_points=200,
    )  # fmt: skip
    return tiers


def till(store_name: str):
    store = StoreFactory(name=store_name)
    _key, full_key = api_key_create(terminal=TerminalFactory(store=store), name="Till")
    return store, APIClient(HTTP_AUTHORIZATION=f"Api-Key {full_key}")


def sale(card, receipt, lines, **extra) -> dict:
    total = sum(Decimal(q) * Decimal(p) for _s, _c, q, p in lines)
    return {
        "card_number": card, "receipt_id": receipt, "occurred_at": OCCURRED, "currency": "EUR",
        "total": str(total.quantize(Decimal("0.01"))),
        "lines": [{"sku": s, "category": c, "quantity": q, "unit_price": p}
                  for s, c, q, p in lines],
    } | extra  # fmt: skip


BASKET = [("SHAMPOO", "hair", "2", "12.45"), ("PERFUME", "fragrance", "1", "25.00")]
BIG = [("SERUM", "skin", "4", "100.00")]


def unknown_card() -> str:
    """A well-formed card number no member has."""
    return "999000000001" + ean13_check_digit("999000000001")


def mixed_items(cards: list[str], before_id: str) -> list[dict]:
    """One offline day: plain sales, a member buying twice, points paid, a plan bought, a
    return, a bad basket, an unknown card, a receipt and a key used twice, another currency."""
    c = cards

    def purchase(key, payload):
        return {"idempotency_key": key, "kind": "purchase", "payload": payload}

    return [
        purchase("k1", sale(c[0], "R1", BASKET)),
        purchase("k2", sale(c[1], "R2", BIG)),  # reaches VIB with the bonus
        purchase("k3", sale(c[1], "R3", BASKET)),  # so this one earns at VIB
        purchase("k4", sale(c[2], "R4", BASKET) | {"total": "1.00"}),  # lines don't add up
        purchase("k5", sale(unknown_card(), "R5", BASKET)),
        purchase("k6", sale(c[2], "R6", BASKET, redeem_points=20)),  # points pay part
        purchase("k7", sale(c[3], "R7", [("PLUS-1Y", "", "1", "49.00")])),  # buys Plus
        purchase("k8", sale(c[3], "R8", BASKET)),  # earns as a Plus member
        purchase("k9", sale(c[4], "R1", BASKET)),  # receipt R1 again
        purchase("k1", sale(c[0], "R1", BASKET)),  # a retry inside the batch: replayed
        purchase("k2", sale(c[1], "R2x", BIG)),  # the key again for another sale
        purchase("bad key", sale(c[4], "R12", BASKET)),
        purchase("k13", sale(c[4], "R13", BASKET, currency="USD")),
        {"idempotency_key": "k14", "kind": "return",
         "payload": {"purchase_id": before_id, "return_id": "RT1",
                     "lines": [{"sku": "SHAMPOO", "quantity": "1"}]}},
        purchase("k15", sale(c[0], "R15", BASKET)),  # the hair cap is near for this member
        purchase("k16", sale(c[4], "R16", BASKET)),
    ]  # fmt: skip


def population(client, size=5) -> tuple[list, str]:
    """`size` identical members; the second and third bought before (receipt R0)."""
    members = [MemberFactory() for _ in range(size)]
    before = None
    for i in (1, 2):
        response = client.post(
            "/api/v1/purchases", sale(members[i].card_number, f"R0-{i}", BASKET), format="json",
            HTTP_IDEMPOTENCY_KEY=f"before-{i}",
        )  # fmt: skip
        assert response.status_code == 201, response.content
        before = before or response.json()["id"]
    return members, before


def normalised(value, cards_from: list[str], cards_to: list[str]) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    for a, b in zip(cards_from, cards_to, strict=True):
        text = text.replace(a, b)
    return UUID.sub("<id>", text)


def without_ids(details: dict) -> dict:
    return {k: "<pk>" if k.endswith("_entry") and v else v for k, v in details.items()}


def member_story(member) -> dict:
    """Everything a sale writes about a member, without ids."""
    entries = JournalEntry.objects.filter(member=member).order_by("pk")
    return {
        "balances": sorted(member.accounts.values_list("kind", "balance")),
        "entries": [
            (e.kind, e.description, without_ids(e.details),
             e.effective_at if e.kind == "earn" else None, e.source, bool(e.client),
             sorted(Posting.objects.filter(entry=e).values_list("amount", "balance_after")))
            for e in entries
        ],
        "lots": list(Lot.objects.filter(account__member=member).order_by("pk").values_list(
            "points", "remaining", "earned_at", "expires_at", "pending", "matures_at")),
        "purchases": [
            (p.receipt_id, p.total, p.points_earned, p.points_redeemed, p.breakdown,
             list(p.lines.order_by("position").values_list("sku", "quantity", "points")))
            for p in Purchase.objects.filter(member=member).order_by("pk")
        ],
        "awards": list(RuleAward.objects.filter(member=member).order_by("pk").values_list(
            "rule__code", "points", "slot", "occurred_at")),
        "tier_changes": list(TierChange.objects.filter(member=member).order_by("pk").values_list(
            "from_tier__code", "to_tier__code", "cause", "details")),
        "memberships": list(Membership.objects.filter(member=member).values_list(
            "plan__code", "starts_at", "ends_at", "status")),
    }  # fmt: skip


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("pending_days", "copy_from"),
    [(0, db_copy.COPY_FROM), (14, 1)],  # 1: every bulk insert by COPY, however few rows
)
def test_a_batch_answers_and_writes_exactly_what_single_requests_would(
    program, pending_days, copy_from, monkeypatch
):
    monkeypatch.setattr(db_copy, "COPY_FROM", copy_from)
    settings = program_settings()
    settings.pending_days = pending_days
    settings.save()
    store_a, batch_till = till("Kadıköy")
    store_b, single_till = till("Kadıköy")
    members_a, before_a = population(batch_till)
    members_b, before_b = population(single_till)
    cards_a = [m.card_number for m in members_a]
    cards_b = [m.card_number for m in members_b]

    response = batch_till.post(
        "/api/v1/batches", {"items": mixed_items(cards_a, before_a)}, format="json"
    )
    assert response.status_code == 200, response.content
    batched = response.json()["results"]

    singles = []
    for item in mixed_items(cards_b, before_b):
        payload = dict(item["payload"])
        path = "/api/v1/purchases"
        if item["kind"] == "return":
            path = f"/api/v1/purchases/{payload.pop('purchase_id')}/returns"
        answer = single_till.post(
            path, payload, format="json", HTTP_IDEMPOTENCY_KEY=item["idempotency_key"]
        )
        singles.append({"idempotency_key": item["idempotency_key"],
                        "status": answer.status_code, "body": answer.json()})  # fmt: skip

    paid_with_points = 409 if pending_days else 201  # earlier points still pending
    assert [r["status"] for r in batched] == [
        201, 201, 201, 400, 404, paid_with_points, 201, 201, 409, 201, 422, 400, 422, 201, 201, 201,
    ]  # fmt: skip
    assert normalised(batched, cards_a, cards_b) == normalised(singles, cards_b, cards_b)
    # What the members would notice: the second sale of k2's member earned at VIB, the
    # plan's buyer earned as Plus, the hair cap held across the member's two sales.
    assert batched[2]["body"]["breakdown"][1]["rule"] == "tier"
    assert "plan:plus" in [b["rule"] for b in batched[7]["body"]["breakdown"]]
    hair = [
        b["points"] for i in (0, 14) for b in batched[i]["body"]["breakdown"] if b["rule"] == "hair"
    ]
    assert hair == [49, 11]  # capped at 60 a month
    for a, b in zip(members_a, members_b, strict=True):
        assert normalised(member_story(a), cards_a, cards_b) == normalised(
            member_story(b), cards_b, cards_b
        )
    stored = dict(IdempotencyRecord.objects.filter(store=store_a).values_list("key", "body"))
    alone = dict(IdempotencyRecord.objects.filter(store=store_b).values_list("key", "body"))
    assert stored.keys() == alone.keys()
    for key, body in stored.items():
        assert normalised(json.loads(body), cards_a, cards_b) == normalised(
            json.loads(alone[key]), cards_b, cards_b
        ), key

    # Re-sending the whole batch changes nothing and answers the same.
    written = (JournalEntry.objects.count(), Purchase.objects.count(), RuleAward.objects.count())
    again = batch_till.post(
        "/api/v1/batches", {"items": mixed_items(cards_a, before_a)}, format="json"
    ).json()["results"]
    assert again == batched
    assert (
        JournalEntry.objects.count(),
        Purchase.objects.count(),
        RuleAward.objects.count(),
    ) == written


def lock_awaited(seconds: float = 10) -> bool:
    """Wait until some transaction waits for a lock (the batch under test, in its thread)."""
    deadline = time.monotonic() + seconds
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute("SELECT count(*) FROM pg_locks WHERE NOT granted")
            if cursor.fetchone()[0]:
                return True
            time.sleep(0.05)
    return False


def _own_connection(work):
    """`work` for a thread: on its own database connection, closed when it ends."""

    def run(*args):
        try:
            work(*args)
        finally:
            connection.close()

    return run


@contextmanager
def waiting_behind(hold, act, *, never: str):
    """`hold(held, release)` takes a lock in its own transaction, sets `held` and keeps the
    lock until `release` is set; then `act()` runs in another thread. The block runs once
    `act` waits on that lock (the test fails with `never` if it never does); afterwards
    the lock is let go and both threads are waited for."""
    held, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=_own_connection(hold), args=(held, release))
    holder.start()
    runner = None
    try:
        assert held.wait(timeout=10)
        runner = threading.Thread(target=_own_connection(act))
        runner.start()
        if not lock_awaited():
            pytest.fail(never)
        yield
    finally:
        release.set()
        holder.join(timeout=30)
        if runner is not None:
            runner.join(timeout=30)


def plain_batch(cards: list[str], tag: str) -> dict:
    return {
        "items": [
            {"idempotency_key": f"{tag}-{i}", "kind": "purchase",
             "payload": sale(card, f"{tag}-R{i}", BASKET)}
            for i, card in enumerate(cards)
        ]
    }  # fmt: skip


@pytest.mark.django_db(transaction=True)
def test_plain_purchases_cost_the_same_queries_however_many(api_client, shared_cache, monkeypatch):
    """A till in use (program rows cached and committed, as in production), a program with
    tiers and campaigns but no capped rule (a capped rule reads each member's use of it: a
    query per sale). 3 sales or 27 in a batch: the same number of queries (COPY for many
    rows costs one more query per table that needs its ids: 2)."""
    monkeypatch.setattr(db_copy, "COPY_FROM", 1)
    make_three_tiers()
    rule(code="fragrance", kind=RuleKind.MULTIPLIER, target=RuleTarget.CATEGORY,
         target_values="fragrance", multiplier=2)  # fmt: skip
    rule(code="welcome", kind=RuleKind.FIRST_PURCHASE, points=100)
    cards = [MemberFactory().card_number for _ in range(30)]
    api_client.post("/api/v1/batches", plain_batch(cards[:2], "warm"), format="json")
    counts = []
    for tag, chosen in (("few", cards[:3]), ("more", cards[3:30])):
        with CaptureQueriesContext(connection) as captured:
            response = api_client.post("/api/v1/batches", plain_batch(chosen, tag), format="json")
        assert [r["status"] for r in response.json()["results"]] == [201] * len(chosen)
        counts.append(len(captured.captured_queries))
    assert counts[0] == counts[1], counts
    assert counts[1] <= 24, counts  # new members: 3 of them make their accounts


@pytest.mark.django_db(transaction=True)
def test_a_batch_after_a_program_change_reads_the_tier_table_once(api_client, shared_cache):
    """Staff changed a rule: the next batch reads the tiers afresh, once, not in each of
    its runs (a copy is kept only once committed, and the batch is one transaction)."""
    make_three_tiers()
    cards = [MemberFactory().card_number for _ in range(2)]
    api_client.post("/api/v1/batches", plain_batch(cards[:1], "warm"), format="json")
    rule(code="welcome", kind=RuleKind.FIRST_PURCHASE, points=100)
    batch = plain_batch([cards[0], cards[0], cards[1]], "runs")  # the repeat starts a 2nd run
    with CaptureQueriesContext(connection) as captured:
        response = api_client.post("/api/v1/batches", batch, format="json")
    assert [r["status"] for r in response.json()["results"]] == [201, 201, 201]
    whole = 'FROM "loyalty_tier" ORDER BY'  # the ladder, not a query for some of its tiers
    ladder = [q for q in captured.captured_queries if whole in q["sql"]]
    assert len(ladder) == 1, [q["sql"][:120] for q in ladder]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("copy_from", [1, db_copy.COPY_FROM])  # the purchases by COPY, or not
def test_a_receipt_recorded_meanwhile_by_another_till_undoes_the_run_and_answers_409(
    postgres_only, api_client, store, copy_from, monkeypatch
):
    """Another till (a second connection) records receipt R-RACE while the batch runs: the
    batch's insert waits on the receipt's unique index, then fails; the run is redone the
    single way, so that item answers 409 with the other purchase's id and the others count."""
    monkeypatch.setattr(db_copy, "COPY_FROM", copy_from)
    members = [MemberFactory() for _ in range(3)]
    other = {}

    def other_till(inserted, release):
        with transaction.atomic():
            other["purchase"] = Purchase.objects.create(
                store=store, member=members[2], receipt_id="R-RACE", occurred_at=timezone.now(),
                currency="EUR", total=Decimal("1.00"),
            )  # fmt: skip
            inserted.set()
            release.wait(timeout=30)

    def batch():
        items = [
            {"idempotency_key": "a", "kind": "purchase",
             "payload": sale(members[0].card_number, "R-A", BASKET)},
            {"idempotency_key": "race", "kind": "purchase",
             "payload": sale(members[1].card_number, "R-RACE", BASKET)},
        ]  # fmt: skip
        other["batch"] = api_client.post("/api/v1/batches", {"items": items}, format="json")

    # the batch waits on the receipt's unique index
    with waiting_behind(
        other_till, batch, never="the batch never waited on the other till's receipt"
    ):
        pass  # nothing to look at while it waits: its answer afterwards is what counts
    results = other["batch"].json()["results"]
    assert [r["status"] for r in results] == [201, 409]
    assert results[1]["body"]["code"] == "duplicate_receipt"
    assert results[1]["body"]["id"] == str(other["purchase"].public_id)
    assert Purchase.objects.filter(member=members[0]).count() == 1
    assert not Purchase.objects.filter(member=members[1]).exists()
    assert (
        members[0].accounts.get(kind="member").balance == results[0]["body"]["points_balance"] > 0
    )


@pytest.mark.django_db
def test_a_run_that_fails_on_our_side_is_redone_item_by_item(api_client, monkeypatch):
    """A bug in the set-based path must cost no sale: the run is undone and each of its
    sales goes the single way."""
    cards = [MemberFactory().card_number for _ in range(3)]

    def broken(**kwargs):
        raise RuntimeError("a bug in the set-based path")

    monkeypatch.setattr("loyalty.api_batches.purchases_record_many", broken)
    response = api_client.post("/api/v1/batches", plain_batch(cards, "bug"), format="json")
    assert [r["status"] for r in response.json()["results"]] == [201, 201, 201]
    assert Purchase.objects.count() == 3
    assert JournalEntry.objects.filter(kind="earn").count() == 3


def accounts_locked(member) -> bool:
    """Whether another transaction holds the member's accounts (asked without waiting)."""
    try:
        with transaction.atomic():
            list(Account.objects.select_for_update(nowait=True).filter(member=member))
    except OperationalError:
        return True
    return False


@pytest.mark.django_db(transaction=True)
def test_a_batch_locks_every_member_it_names_before_writing_any(postgres_only, api_client):
    """Runs follow the batch's order but each locks in pk order; two batches naming the same
    members in different orders could each hold one and wait for the other. So a batch
    locks all its members in pk order first: waiting for the lower one, it holds no other."""
    low, high = MemberFactory(), MemberFactory()
    for member in (low, high):  # their accounts in that order: low's come first in pk order
        with transaction.atomic():
            member_accounts_lock(member)
    answer = {}

    def other_batch(holding, release):  # holds low's accounts, as an earlier batch would
        with transaction.atomic():
            list(Account.objects.select_for_update().filter(member=low))
            holding.set()
            release.wait(timeout=30)

    def batch():  # high's second sale ends the first run: high would be locked, then low
        cards = [high.card_number, high.card_number, low.card_number]
        answer["batch"] = api_client.post(
            "/api/v1/batches", plain_batch(cards, "order"), format="json"
        )

    with waiting_behind(other_batch, batch, never="the batch never waited for the other batch"):
        assert not accounts_locked(high)
    assert [r["status"] for r in answer["batch"].json()["results"]] == [201, 201, 201]


@pytest.mark.django_db(transaction=True)
def test_two_batches_syncing_the_same_members_crosswise_both_apply_in_full(postgres_only, api_key):
    """Two tills sync the same members in opposite orders at the same moment: every sale of
    both counts, none is answered 500."""
    members = [MemberFactory() for _ in range(6)]
    cards = [m.card_number for m in members]
    start = threading.Barrier(2)
    answers = {}

    def sync(tag, order):
        try:
            start.wait(timeout=10)
            batch = plain_batch([c for card in order for c in (card, card)], tag)
            client = APIClient(HTTP_AUTHORIZATION=f"Api-Key {api_key[1]}")
            answers[tag] = client.post("/api/v1/batches", batch, format="json")
        finally:
            connection.close()

    for round_ in range(3):
        runners = [
            threading.Thread(target=sync, args=(f"a{round_}", cards)),
            threading.Thread(target=sync, args=(f"b{round_}", cards[::-1])),
        ]
        for runner in runners:
            runner.start()
        for runner in runners:
            runner.join(timeout=60)
        for tag in (f"a{round_}", f"b{round_}"):
            assert {r["status"] for r in answers[tag].json()["results"]} == {201}, tag
    assert Purchase.objects.count() == 3 * 2 * 2 * len(members)
