"""The set-based jobs (loyalty/ledger_bulk.py) write exactly the ledger the per-member
primitives (ledger.expire_member_lots / mature_member_lots) write, on a mixed population
and whatever the batch size; a batch costs the same number of queries whatever its size;
and what expired is what the member reads in their history."""

from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from loyalty import explain, ledger, ledger_bulk, selectors, services
from loyalty.models import Account, AccountKind, EntryKind, JournalEntry, Lot, LotMovement
from members.models import Member
from tests.factories import MemberFactory
from tests.loyalty.population import TILL, ledger_snapshot, mixed_population


def freeze(monkeypatch, moment):
    """Entries are stamped with timezone.now(): two runs compared must share the clock."""
    monkeypatch.setattr(timezone, "now", lambda: moment)


def per_member_reference(now) -> None:
    """The nightly run as the per-member primitives do it: maturation, then expiry, one
    member per transaction, only members with something due."""
    pending_due = Lot.objects.filter(pending=True, matures_at__lte=now)
    for member in Member.objects.filter(accounts__lots__in=pending_due).distinct().order_by("pk"):
        with transaction.atomic():
            ledger.mature_member_lots(member=member, now=now)
    due = Lot.objects.filter(pending=False, remaining__gt=0, expires_at__lte=now)
    for member in Member.objects.filter(accounts__lots__in=due).distinct().order_by("pk"):
        with transaction.atomic():
            ledger.expire_member_lots(member=member, now=now)


def batched(now, batch_size) -> tuple[int, int]:
    return (
        services.pending_mature_due(now=now, batch_size=batch_size),
        services.lots_expire_due(now=now, batch_size=batch_size),
    )


@pytest.mark.django_db
@pytest.mark.parametrize("batch_size", [1, 4, 1000])
def test_batches_write_the_same_ledger_as_the_per_member_primitives(monkeypatch, batch_size):
    _, run_at = mixed_population(copies=3)
    ledger.system_account(AccountKind.EXPIRY)  # or each run creates it with its own id
    freeze(monkeypatch, run_at)
    before = ledger_snapshot()

    savepoint = transaction.savepoint()
    per_member_reference(run_at)
    expected = ledger_snapshot()
    transaction.savepoint_rollback(savepoint)
    assert ledger_snapshot() == before

    released, expired = batched(run_at, batch_size)

    assert ledger_snapshot() == expected
    assert expected != before, "the population had nothing due: the test proves nothing"
    # 3 copies: debt_then_pending and pending_then_due release points; pending_returned
    # matures empty (no entry); pending_not_yet_and_due is not due yet.
    assert released == 2 * 3
    assert expired == (100 + 30 + 40 + 20) * 3
    assert batched(run_at, batch_size) == (0, 0), "a second run changes nothing"
    assert ledger_snapshot() == expected


@pytest.mark.django_db
def test_a_batch_costs_the_same_queries_whatever_its_size(postgres_only):
    now = timezone.now()
    members = [MemberFactory() for _ in range(33)]
    for member in members:
        for days in (-2, -1):  # two due lots each, on two days
            services.points_credit(
                member=member, points=10, description="Old", cause=TILL,
                expires_at=now + timedelta(days=days),
            )  # fmt: skip
        services.points_credit(
            member=member, points=5, description="Recent", cause=TILL, pending_days=3
        )
    later = now + timedelta(days=4)
    ledger.system_account(AccountKind.EXPIRY)  # created once per install, not per batch

    def queries(work, first, last):
        with CaptureQueriesContext(connection) as captured, transaction.atomic():
            result = work(first=first.pk, last=last.pk, now=later)
        return len(captured), result

    for work in (ledger_bulk.mature_due, ledger_bulk.expire_due):
        small, small_result = queries(work, members[0], members[2])
        large, large_result = queries(work, members[3], members[32])
        assert small_result.members == 3 and large_result.members == 30
        assert small == large, f"{work.__name__}: {small} queries for 3 members, {large} for 30"
        assert large <= 12


@pytest.mark.django_db
def test_the_expired_amount_is_the_due_lots_remainder_and_the_history_says_why(client):
    member = MemberFactory()
    now = timezone.now()
    early = services.points_credit(
        member=member, points=120, description="Purchase R-1", cause=TILL,
        expires_at=now + timedelta(days=10),
    )  # fmt: skip
    services.points_credit(
        member=member, points=80, description="Purchase R-2", cause=TILL,
        expires_at=now + timedelta(days=40),
    )  # fmt: skip
    services.points_redeem(member=member, points=50, description="Reward", cause=TILL)
    due_remainder = Lot.objects.get(entry=early).remaining
    assert due_remainder == 70

    assert services.lots_expire_due(now=now + timedelta(days=11)) == 70

    entry = JournalEntry.objects.get(member=member, kind=EntryKind.EXPIRY)
    postings = dict(entry.postings.values_list("account__kind", "amount"))
    assert postings == {AccountKind.MEMBER: -70, AccountKind.EXPIRY: 70}
    assert list(LotMovement.objects.filter(entry=entry).values_list("lot__entry", "points")) == [
        (early.pk, -70)
    ]
    assert entry.description == "70 points reached their expiry date"
    day = early.effective_at
    text = explain.entry_text(entry)
    assert text.startswith("Expired: points earned on ") and "end of their lifetime" in text
    assert str(day.year) in text
    assert selectors.member_balance(member=member).points == 80

    client.force_login(member.user)
    page = client.get("/history/").content.decode()
    assert text in page and "−70" in page


@pytest.mark.django_db(transaction=True)
def test_a_job_and_tills_at_the_same_time_neither_deadlock_nor_lose_points(postgres_only):
    """Batches lock many members' accounts in pk order while tills lock one member's:
    they wait for each other, never deadlock, and every invariant holds after."""
    from tests.concurrency import run_at_once

    now = timezone.now()
    members = [MemberFactory() for _ in range(12)]
    for member in members:
        services.points_credit(
            member=member, points=100, description="Old", cause=TILL,
            expires_at=now - timedelta(minutes=1),
        )  # fmt: skip
        services.points_credit(member=member, points=50, description="New", cause=TILL)

    def work(i):
        if i < 2:
            return services.lots_expire_due(now=now, batch_size=5)
        member = Member.objects.get(pk=members[i].pk)
        return services.points_redeem(member=member, points=30, description="R", cause=TILL)

    results = run_at_once(work, count=8)
    assert not [r for r in results if isinstance(r, Exception)], results
    expiries = JournalEntry.objects.filter(kind=EntryKind.EXPIRY)
    assert expiries.count() == 12, "one expiry entry per member, however the runs interleaved"
    expired = {
        e.member_id: e.postings.get(account__kind=AccountKind.EXPIRY).amount for e in expiries
    }
    assert sum(results[:2]) == sum(expired.values())
    for i, member in enumerate(members):
        # A redemption that came first spent 30 of the due lot: 70 were left to expire.
        redeemed = 30 if 2 <= i < 8 else 0
        assert expired[member.pk] in ((100, 70) if redeemed else (100,))
        account = Account.objects.get(member=member, kind=AccountKind.MEMBER)
        total = sum(account.postings.values_list("amount", flat=True))
        lots = sum(Lot.objects.filter(account=account).values_list("remaining", flat=True))
        assert account.balance == total == lots == 150 - redeemed - expired[member.pk]
