"""The ledger's public write API. Each function is one durable transaction: when it
returns, the points are committed; when it raises, nothing was written.

Callers that must combine a ledger movement with other writes in one transaction
(e.g. a purchase and its idempotency record) open their own durable transaction and
call loyalty.ledger directly.
"""

from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from loyalty import ledger, ledger_bulk
from loyalty.exceptions import AlreadyReversed, InvalidPoints, ReasonRequired
from loyalty.ledger import Cause
from loyalty.models import Account, AccountKind, EntryKind, JournalEntry
from members.models import Member, User


@transaction.atomic(durable=True)
def points_credit(
    *,
    member: Member,
    points: int,
    description: str,
    cause: Cause,
    effective_at: datetime | None = None,
    pending_days: int | None = None,
    expires_at: datetime | None = None,
) -> JournalEntry:
    """Earn: credit `points` from program issuance as a new lot. `pending_days` (default:
    the program's) holds them back for the return window."""
    if pending_days is None:
        pending_days = ledger.program_settings().pending_days
    pending_until = timezone.now() + timedelta(days=pending_days) if pending_days else None
    return ledger.credit(
        member=member,
        points=points,
        description=description,
        cause=cause,
        effective_at=effective_at,
        pending_until=pending_until,
        expires_at=expires_at,
    )


@transaction.atomic(durable=True)
def points_redeem(*, member: Member, points: int, description: str, cause: Cause) -> JournalEntry:
    """Debit spendable points; raises InsufficientPoints if the balance is short."""
    return ledger.debit(member=member, points=points, description=description, cause=cause)


@transaction.atomic(durable=True)
def points_transfer(
    *, member: Member, points: int, to: Account, description: str, cause: Cause
) -> JournalEntry:
    """Give points to a charity or partner account; raises InsufficientPoints if short."""
    return ledger.transfer(
        member=member, points=points, to=to, description=description, cause=cause
    )


def entry_reverse(*, entry: JournalEntry, cause: Cause, description: str = "") -> JournalEntry:
    """Reverse an entry exactly once; raises AlreadyReversed or NotReversible."""
    try:
        with transaction.atomic(durable=True):
            return ledger.reverse(entry=entry, cause=cause, description=description)
    except IntegrityError as exc:
        # The unique reversal_of constraint caught a race the lock did not (different member
        # lock ordering cannot happen, but the database has the last word).
        if JournalEntry.objects.filter(reversal_of=entry).exists():
            raise AlreadyReversed() from exc
        raise


@transaction.atomic(durable=True)
def points_adjust(*, member: Member, points: int, reason: str, staff: User) -> JournalEntry:
    """A staff correction, positive or negative, with a reason the member will read.
    A negative adjustment may not take the balance below zero."""
    reason = (reason or "").strip()
    if not reason:
        raise ReasonRequired()
    if type(points) is not int or points == 0:
        raise InvalidPoints(points)
    cause = Cause(source="staff", user=staff, reason=reason)
    counter = ledger.system_account(AccountKind.ADJUSTMENT)
    if points > 0:
        return ledger.credit(
            member=member,
            points=points,
            description=reason,
            cause=cause,
            kind=EntryKind.ADJUSTMENT,
            counter=counter,
        )
    return ledger.debit(
        member=member,
        points=-points,
        description=reason,
        cause=cause,
        kind=EntryKind.ADJUSTMENT,
        counter=counter,
    )


def lots_expire_due(
    *, now: datetime | None = None, batch_size: int | None = None, progress=None
) -> int:
    """Expire every lot whose date has passed, in batches of members (one transaction
    each, so a long run never holds many locks). Safe to run twice: a second run finds
    nothing due. Returns the number of points expired."""
    return ledger_bulk.in_batches(
        ledger_bulk.expire_due, now=now or timezone.now(), batch_size=batch_size,
        progress=progress,
    ).points  # fmt: skip


def pending_mature_due(
    *, now: datetime | None = None, batch_size: int | None = None, progress=None
) -> int:
    """Release pending points whose return window has closed, in batches of members.
    Returns how many members got points released."""
    return ledger_bulk.in_batches(
        ledger_bulk.mature_due, now=now or timezone.now(), batch_size=batch_size,
        progress=progress,
    ).members  # fmt: skip
