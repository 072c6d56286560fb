"""A mixed population of members for the periodic-job tests: every shape of ledger the
nightly jobs meet (due and not-yet-due lots, partly spent lots, debts from returns,
pending points due and not due, pending points already returned, till-only members)."""

import json
from datetime import datetime, timedelta

from django.utils import timezone

from loyalty import services
from loyalty.ledger import Cause
from loyalty.models import Account, JournalEntry, Lot, Source
from members.services import member_create
from tests.factories import MemberFactory, StaffFactory

TILL = Cause(source=Source.API, client="till-1")
SHOPPER = Cause(source=Source.MEMBER)
RUN_AFTER = timedelta(days=20)  # the jobs run this long after the population was built


def _credit(member, points, *, expires_in=None, pending_days=0, now):
    return services.points_credit(
        member=member,
        points=points,
        description=f"Purchase of {points}",
        cause=TILL,
        pending_days=pending_days,
        expires_at=None if expires_in is None else now + timedelta(days=expires_in),
    )


def _redeem(member, points):
    services.points_redeem(member=member, points=points, description="Reward", cause=SHOPPER)


def _reverse(entry, staff):
    services.entry_reverse(entry=entry, cause=Cause(source=Source.STAFF, user=staff, reason="X"))


def nothing(member, now, staff):
    pass


def one_due_lot(member, now, staff):
    _credit(member, 100, expires_in=5, now=now)


def partly_spent(member, now, staff):
    """Lots of 100 (due), 50 (due) and 80 (not due); 120 spent from the earliest: 30 of
    the 50 are left to expire."""
    _credit(member, 100, expires_in=3, now=now)
    _credit(member, 50, expires_in=10, now=now)
    _credit(member, 80, expires_in=60, now=now)
    _redeem(member, 120)


def debt_then_pending(member, now, staff):
    """Spent everything, then the purchase was returned: a debt of 100. Pending points
    that mature pay 60 of it; nothing is left to expire."""
    earned = _credit(member, 100, expires_in=5, now=now)
    _redeem(member, 100)
    _reverse(earned, staff)
    _credit(member, 60, pending_days=7, expires_in=300, now=now)


def pending_then_due(member, now, staff):
    """Pending points mature, and are past their own expiry by the time the jobs run."""
    _credit(member, 40, pending_days=7, expires_in=5, now=now)


def pending_not_yet_and_due(member, now, staff):
    _credit(member, 30, pending_days=30, expires_in=300, now=now)
    _credit(member, 20, expires_in=1, now=now)


def far_future(member, now, staff):
    _credit(member, 70, expires_in=400, now=now)


def pending_returned(member, now, staff):
    """A pending credit returned before maturing: the lot matures with nothing in it."""
    _reverse(_credit(member, 25, pending_days=7, expires_in=300, now=now), staff)


def expiring_later_this_month(member, now, staff):
    _credit(member, 15, expires_in=RUN_AFTER.days + 10, now=now)


SHAPES = [
    nothing, one_due_lot, partly_spent, debt_then_pending, pending_then_due,
    pending_not_yet_and_due, far_future, pending_returned, expiring_later_this_month,
]  # fmt: skip


def mixed_population(copies: int = 2, *, till_only_every: int = 4) -> tuple[list, datetime]:
    """`copies` members of every shape (every `till_only_every`-th member has no login).
    Returns the members and the time at which the jobs should run."""
    now = timezone.now()
    staff = StaffFactory()
    members = []
    for copy in range(copies):
        for i, shape in enumerate(SHAPES):
            n = copy * len(SHAPES) + i
            if n % till_only_every == 3:
                member = member_create(first_name="Till", last_name=f"Only {n}")
            else:
                member = MemberFactory()
            shape(member, now, staff)
            members.append(member)
    return members, now + RUN_AFTER


def ledger_snapshot() -> dict:
    """The whole ledger, without database ids of entries (two runs number them
    differently): every entry with its postings and lot movements, every balance and lot."""
    entries = []
    for e in JournalEntry.objects.prefetch_related("postings", "lot_movements").order_by("pk"):
        entries.append(
            (
                e.member_id, e.kind, e.description, e.reason, e.source,
                json.dumps(e.details, sort_keys=True), e.effective_at, e.created_at,
                tuple(sorted((p.account_id, p.amount, p.balance_after) for p in e.postings.all())),
                tuple(sorted((m.lot_id, m.points) for m in e.lot_movements.all())),
            )
        )  # fmt: skip
    return {
        "entries": sorted(entries, key=repr),
        "balances": list(Account.objects.order_by("pk").values_list("pk", "balance")),
        "lots": list(Lot.objects.order_by("pk").values_list("pk", "remaining", "pending")),
    }
