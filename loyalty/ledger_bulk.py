"""Set-based ledger writes for the periodic jobs: each call handles one batch of members
(a range of member ids) with a constant number of queries, whatever the batch's size.

The rules are those of loyalty/ledger.py, whose per-member expire_member_lots and
mature_member_lots stay the reference these functions are tested against
(tests/loyalty/test_jobs_ledger.py, and the Hypothesis state machine runs these):
- run inside the caller's transaction, one batch per transaction, so a long job never
  holds many locks for long;
- lock the accounts the batch writes with one SELECT ... FOR UPDATE in pk order, the
  order every locker uses, so a batch and a till can wait for each other but never
  deadlock; read the lots only after the lock, so what a till changed meanwhile counts;
- one balanced entry per member (postings sum to zero; PostgreSQL checks it at commit),
  with the description and details the per-member path writes, so the member's history
  reads the same; postings are only inserted, stored balances move in the same
  transaction and each posting's balance_after is the account's balance after it.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from itertools import groupby
from operator import itemgetter

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, F, OuterRef
from django.utils import timezone

from loyalty.ledger import Cause, _require_atomic, system_account
from loyalty.models import (
    Account,
    AccountKind,
    EntryKind,
    JournalEntry,
    Lot,
    LotMovement,
    Posting,
)
from members.models import Member

EXPIRY_CAUSE = Cause.system("Points reached their expiry date")


@dataclass(slots=True)
class BatchResult:
    """What a batch (or a whole run, added up) wrote."""

    members: int = 0  # entries written, one per member
    points: int = 0
    lots: int = 0

    def __iadd__(self, other: "BatchResult") -> "BatchResult":
        self.members += other.members
        self.points += other.points
        self.lots += other.lots
        return self


def member_batches(batch_size: int) -> Iterator[tuple[int, int, int]]:
    """(first id, last id, how many members) of consecutive members, `batch_size` at a
    time, walking the member ids (one index-only query per batch)."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    last = 0
    while True:
        ids = list(
            Member.objects.filter(pk__gt=last)
            .order_by("pk")
            .values_list("pk", flat=True)[:batch_size]
        )
        if not ids:
            return
        yield ids[0], ids[-1], len(ids)
        last = ids[-1]


def in_batches(work, *, now: datetime, batch_size: int | None = None, progress=None, result=None):
    """Run `work(first=, last=, now=)` over every member, `batch_size` members (default
    settings.JOBS_BATCH_SIZE) per durable transaction, adding up what it returns into
    `result` (a BatchResult unless given). `progress(done, total, result)` is called before
    the first batch and after each one, when its transaction has committed."""
    batch_size = batch_size or settings.JOBS_BATCH_SIZE
    result = BatchResult() if result is None else result
    total = Member.objects.count()
    processed = 0
    if progress:
        progress(processed, total, result)
    for first, last, count in member_batches(batch_size):
        with transaction.atomic(durable=True):
            result += work(first=first, last=last, now=now)
        processed += count
        if progress:
            progress(processed, total, result)
    return result


def _add(model, field: str, deltas: dict[int, int], **constants) -> None:
    """`field += delta` for each pk, and set `constants`, in one UPDATE."""
    if not deltas:
        return
    if connection.vendor == "postgresql":
        table = model._meta.db_table
        column = model._meta.get_field(field).column
        sets = [f"{column} = t.{column} + v.delta"]
        params: list = []
        for name, value in constants.items():
            sets.append(f"{model._meta.get_field(name).column} = %s")
            params.append(value)
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} AS t SET {', '.join(sets)} "
                "FROM unnest(%s::bigint[], %s::bigint[]) AS v(id, delta) WHERE t.id = v.id",
                [*params, list(deltas), list(deltas.values())],
            )
        return
    objs = []
    for pk, delta in deltas.items():  # elsewhere: a CASE per row, still one statement
        obj = model(pk=pk, **constants)
        setattr(obj, field, F(field) + delta)
        objs.append(obj)
    model.objects.bulk_update(objs, [field, *constants])


def expire_due(*, first: int, last: int, now: datetime) -> BatchResult:
    """Expire the due lots of the members with ids first..last: their unspent remainder
    goes to the expiry (breakage) account, one entry per member."""
    _require_atomic()
    due = Lot.objects.filter(pending=False, remaining__gt=0, expires_at__lte=now)
    accounts = {
        a.pk: a
        for a in Account.objects.select_for_update()
        .filter(kind=AccountKind.MEMBER, member__id__range=(first, last))
        .filter(Exists(due.filter(account_id=OuterRef("pk"))))
        .order_by("pk")
        .only("pk", "member_id", "balance")
    }
    if not accounts:
        return BatchResult()
    lots = list(
        due.filter(account_id__in=accounts)
        .order_by("account_id", "expires_at", "id")
        .values_list("id", "account_id", "remaining", "earned_at", "expires_at")
    )
    expiry = system_account(AccountKind.EXPIRY)
    created = timezone.now()
    entries, moves = [], []
    for account_id, group in groupby(lots, key=itemgetter(1)):
        group = list(group)
        total = sum(lot[2] for lot in group)
        entries.append(
            JournalEntry(
                member_id=accounts[account_id].member_id,
                kind=EntryKind.EXPIRY,
                description=f"{total} points reached their expiry date",
                reason=EXPIRY_CAUSE.reason,
                source=EXPIRY_CAUSE.source,
                details={
                    "lots": [
                        {
                            "earned_at": earned_at.isoformat(),
                            "points": remaining,
                            "expired_at": expires_at.isoformat(),
                        }
                        for _, _, remaining, earned_at, expires_at in group
                    ]
                },
                effective_at=created,
                created_at=created,
            )
        )
        moves.append((accounts[account_id], total, group))
    JournalEntry.objects.bulk_create(entries)
    postings, movements, deltas = [], [], {}
    for entry, (account, total, group) in zip(entries, moves, strict=True):
        account.balance -= total
        deltas[account.pk] = -total
        postings += [
            Posting(entry=entry, account=account, amount=-total, balance_after=account.balance),
            Posting(entry=entry, account=expiry, amount=total),
        ]
        movements += [LotMovement(entry=entry, lot_id=lot[0], points=-lot[2]) for lot in group]
    Posting.objects.bulk_create(postings)
    LotMovement.objects.bulk_create(movements)
    Lot.objects.filter(pk__in=[lot[0] for lot in lots]).update(remaining=0)
    _add(Account, "balance", deltas)
    return BatchResult(
        members=len(entries), points=sum(total for _, total, _ in moves), lots=len(lots)
    )


def mature_due(*, first: int, last: int, now: datetime) -> BatchResult:
    """Release the pending lots of members first..last whose return window has closed:
    their points move from the pending to the spendable account, one entry per member,
    paying off a debt first (the lots that pay it keep nothing)."""
    _require_atomic()
    due = Lot.objects.filter(pending=True, matures_at__lte=now)
    # Lots hang off the spendable account; both of those members' accounts are locked.
    with_due = (
        Account.objects.filter(kind=AccountKind.MEMBER, member__id__range=(first, last))
        .filter(Exists(due.filter(account_id=OuterRef("pk"))))
        .values("member_id")
    )
    locked = (
        Account.objects.select_for_update()
        .filter(member__id__range=(first, last), member__in=with_due)
        .order_by("pk")
        .only("pk", "member_id", "kind", "balance")
    )
    available, pending = {}, {}
    for account in locked:
        (available if account.kind == AccountKind.MEMBER else pending)[account.member_id] = account
    if not available:
        return BatchResult()
    by_account = {a.pk: a for a in available.values()}
    lots = list(
        due.filter(account_id__in=by_account)
        .order_by("account_id", "id")
        .values_list("id", "account_id", "remaining")
    )
    created = timezone.now()
    cause = Cause.system()
    absorbed: dict[int, int] = {}
    releases = []
    for account_id, group in groupby(lots, key=itemgetter(1)):
        account = by_account[account_id]
        total, debt = 0, max(0, -account.balance)
        for lot_id, _, remaining in group:
            total += remaining
            take = min(debt, remaining)
            debt -= take
            absorbed[lot_id] = -take
        if total:  # every pending point was already returned: nothing to move
            releases.append((account, pending[account.member_id], total))
    entries = [
        JournalEntry(
            member_id=account.member_id,
            kind=EntryKind.MATURATION,
            description=f"{total} pending points are now available",
            reason=cause.reason,
            source=cause.source,
            details={"points": total},
            effective_at=created,
            created_at=created,
        )
        for account, _, total in releases
    ]
    JournalEntry.objects.bulk_create(entries)
    postings, deltas = [], {}
    for entry, (account, held, total) in zip(entries, releases, strict=True):
        held.balance -= total
        account.balance += total
        deltas[held.pk], deltas[account.pk] = -total, total
        postings += [
            Posting(entry=entry, account=held, amount=-total, balance_after=held.balance),
            Posting(entry=entry, account=account, amount=total, balance_after=account.balance),
        ]
    Posting.objects.bulk_create(postings)
    _add(Lot, "remaining", absorbed, pending=False)
    _add(Account, "balance", deltas)
    return BatchResult(
        members=len(entries), points=sum(total for _, _, total in releases), lots=len(lots)
    )
