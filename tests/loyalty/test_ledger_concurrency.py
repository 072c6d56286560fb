"""The ledger under real concurrency, and the rules PostgreSQL itself enforces
(loyalty/migrations/0003_ledger_guards.py). PostgreSQL only: SQLite has no row locks
and no triggers here.

Each worker is a real thread with its own database connection, released at a barrier
so that they hit the member's account rows at the same moment."""

from datetime import timedelta

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from loyalty import selectors, services
from loyalty.exceptions import AlreadyReversed, InsufficientPoints
from loyalty.ledger import Cause
from loyalty.models import (
    Account,
    AccountKind,
    EntryKind,
    JournalEntry,
    Lot,
    Posting,
    Source,
)
from members.models import Member
from tests.concurrency import THREADS, run_at_once
from tests.factories import MemberFactory, StaffFactory

TILL = Cause(source=Source.API, client="till-1")
SHOPPER = Cause(source=Source.MEMBER)

pytestmark = pytest.mark.django_db(transaction=True)


def member_postings(member: Member):
    return Posting.objects.filter(account__member=member, account__kind=AccountKind.MEMBER)


def assert_consistent(member: Member) -> None:
    account = Account.objects.get(member=member, kind=AccountKind.MEMBER)
    assert account.balance == sum(member_postings(member).values_list("amount", flat=True))
    lots = sum(
        Lot.objects.filter(account=account, pending=False).values_list("remaining", flat=True)
    )
    assert lots == max(account.balance, 0)


def test_concurrent_redemptions_of_the_whole_balance_let_exactly_one_through(postgres_only):
    member = MemberFactory()
    services.points_credit(member=member, points=1000, description="Purchase", cause=TILL)

    results = run_at_once(
        lambda i: services.points_redeem(
            member=Member.objects.get(pk=member.pk),
            points=1000,
            description=f"Reward {i}",
            cause=SHOPPER,
        )
    )

    succeeded = [r for r in results if isinstance(r, JournalEntry)]
    refused = [r for r in results if isinstance(r, InsufficientPoints)]
    assert (len(succeeded), len(refused)) == (1, THREADS - 1), results
    assert selectors.member_balance(member=member).points == 0
    assert JournalEntry.objects.filter(member=member, kind=EntryKind.REDEEM).count() == 1
    assert not member_postings(member).filter(balance_after__lt=0).exists()
    assert_consistent(member)


def test_concurrent_redeem_transfer_and_adjustment_never_overdraw(postgres_only):
    member = MemberFactory()
    staff = StaffFactory()
    charity = Account.objects.create(kind=AccountKind.CHARITY, code="charity-x", name="X")
    services.points_credit(member=member, points=300, description="Purchase", cause=TILL)

    def work(i):
        fresh = Member.objects.get(pk=member.pk)
        if i % 3 == 0:
            return services.points_redeem(
                member=fresh, points=100, description="Reward", cause=SHOPPER
            )
        if i % 3 == 1:
            return services.points_transfer(
                member=fresh, points=100, to=charity, description="Gift", cause=SHOPPER
            )
        return services.points_adjust(member=fresh, points=-100, reason="Typo", staff=staff)

    results = run_at_once(work)

    assert sum(isinstance(r, JournalEntry) for r in results) == 3, results
    assert sum(isinstance(r, InsufficientPoints) for r in results) == THREADS - 3, results
    assert selectors.member_balance(member=member).points == 0
    assert not member_postings(member).filter(balance_after__lt=0).exists()
    assert_consistent(member)


def test_concurrent_reversals_of_one_entry_reverse_it_exactly_once(postgres_only):
    member = MemberFactory()
    services.points_credit(member=member, points=500, description="Purchase", cause=TILL)
    redemption = services.points_redeem(
        member=member, points=200, description="Reward", cause=SHOPPER
    )

    results = run_at_once(
        lambda i: services.entry_reverse(
            entry=JournalEntry.objects.get(pk=redemption.pk), cause=Cause.system("Returned")
        )
    )

    succeeded = [r for r in results if isinstance(r, JournalEntry)]
    refused = [r for r in results if isinstance(r, AlreadyReversed)]
    assert (len(succeeded), len(refused)) == (1, THREADS - 1), results
    assert JournalEntry.objects.filter(reversal_of=redemption).count() == 1
    assert selectors.member_balance(member=member).points == 500
    assert_consistent(member)


def test_concurrent_first_credits_of_a_new_member_all_land(postgres_only):
    member = MemberFactory()  # no accounts yet: the first credits create them

    results = run_at_once(
        lambda i: services.points_credit(
            member=Member.objects.get(pk=member.pk),
            points=10 + i,
            description=f"Purchase {i}",
            cause=TILL,
        )
    )

    assert all(isinstance(r, JournalEntry) for r in results), results
    assert Account.objects.filter(member=member).count() == 2
    assert selectors.member_balance(member=member).points == sum(10 + i for i in range(THREADS))
    assert_consistent(member)


def test_expiry_and_maturation_jobs_work_in_autocommit_as_the_task_runs_them(postgres_only):
    # No test transaction around the jobs: each member's durable transaction really
    # commits while the member query is still being iterated.
    members = [MemberFactory() for _ in range(3)]
    for member in members:
        services.points_credit(
            member=member,
            points=100,
            description="Old purchase",
            cause=TILL,
            expires_at=timezone.now() - timedelta(days=1),
        )
        services.points_credit(
            member=member, points=50, description="Purchase", cause=TILL, pending_days=3
        )

    assert services.lots_expire_due() == 300
    assert services.pending_mature_due(now=timezone.now() + timedelta(days=3)) == 3
    for member in members:
        assert selectors.member_balance(member=member).points == 50
        assert_consistent(member)


# --- rules the database enforces ---------------------------------------------------


@pytest.fixture
def posted_entry(postgres_only):
    member = MemberFactory()
    return services.points_credit(member=member, points=100, description="Purchase", cause=TILL)


def _refused_by_database(sql: str, params: list) -> IntegrityError:
    with (
        pytest.raises(IntegrityError) as refused,
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(sql, params)
    return refused.value


@pytest.mark.parametrize(
    ("sql", "what"),
    [
        ("UPDATE loyalty_journalentry SET description = 'edited' WHERE id = %s", "UPDATE"),
        ("DELETE FROM loyalty_journalentry WHERE id = %s", "DELETE"),
        ("UPDATE loyalty_posting SET amount = amount * 2 WHERE entry_id = %s", "UPDATE"),
        ("DELETE FROM loyalty_posting WHERE entry_id = %s", "DELETE"),
    ],
)
def test_database_refuses_to_change_or_delete_ledger_rows(posted_entry, sql, what):
    error = _refused_by_database(sql, [posted_entry.pk])
    assert f"ledger rows are append-only: {what}" in str(error)
    entry = JournalEntry.objects.get(pk=posted_entry.pk)
    assert entry.description == "Purchase"
    assert sorted(entry.postings.values_list("amount", flat=True)) == [-100, 100]


def test_database_refuses_orm_updates_and_deletes_of_ledger_rows(posted_entry):
    with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
        JournalEntry.objects.filter(pk=posted_entry.pk).update(description="edited")
    with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
        Posting.objects.filter(entry=posted_entry).delete()
    assert Posting.objects.filter(entry=posted_entry).count() == 2


def test_database_refuses_to_commit_an_entry_whose_postings_do_not_sum_to_zero(posted_entry):
    account = Account.objects.get(member=posted_entry.member, kind=AccountKind.MEMBER)
    entries_before = JournalEntry.objects.count()

    with pytest.raises(IntegrityError, match="sum to 7, not zero"), transaction.atomic():
        entry = JournalEntry.objects.create(
            member=posted_entry.member, kind=EntryKind.EARN, source=Source.SYSTEM
        )
        Posting.objects.create(entry=entry, account=account, amount=7)

    assert JournalEntry.objects.count() == entries_before
    assert not Posting.objects.filter(amount=7).exists()


def test_database_accepts_a_balanced_entry_written_one_posting_at_a_time(posted_entry):
    # The check is deferred to commit, so postings may be inserted one by one.
    account = Account.objects.get(member=posted_entry.member, kind=AccountKind.MEMBER)
    issuance = Account.objects.get(code=AccountKind.ISSUANCE)
    with transaction.atomic():
        entry = JournalEntry.objects.create(
            member=posted_entry.member, kind=EntryKind.EARN, source=Source.SYSTEM
        )
        Posting.objects.create(entry=entry, account=account, amount=7)
        Posting.objects.create(entry=entry, account=issuance, amount=-7)
    assert entry.postings.count() == 2
