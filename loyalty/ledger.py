"""The points ledger's primitives. Each runs inside the caller's transaction and locks
the member's accounts first; public, durable entry points live in services.py.

Invariants (tested by tests/loyalty/test_ledger_properties.py):
- every entry's postings sum to zero;
- a member account's stored balance equals the sum of its postings;
- the remainders of a member's available lots add up to max(balance, 0) and those of
  pending lots to the pending balance (a clawback may leave a debt, never a negative lot);
- debits take from the lots that expire first and never take a balance below zero.
"""

from dataclasses import dataclass
from datetime import datetime

from dateutil.relativedelta import relativedelta
from django.db import connection
from django.db.models import F
from django.utils import timezone

from loyalty.exceptions import (
    AlreadyReversed,
    InsufficientPoints,
    InvalidAccount,
    InvalidPoints,
    NotReversible,
)
from loyalty.models import (
    MEMBER_KINDS,
    Account,
    AccountKind,
    EntryKind,
    JournalEntry,
    Lot,
    LotMovement,
    Posting,
    ProgramSettings,
    Source,
)
from members.models import Member

SYSTEM_ACCOUNT_NAMES = {
    AccountKind.ISSUANCE: "Program issuance",
    AccountKind.REDEMPTION: "Redemptions",
    AccountKind.EXPIRY: "Expired points (breakage)",
    AccountKind.ADJUSTMENT: "Staff adjustments",
}


@dataclass(frozen=True, slots=True)
class Cause:
    """Who or what caused an entry: shown in the back office, kept for audit."""

    source: str
    user: object = None
    client: str = ""
    reason: str = ""

    @classmethod
    def system(cls, reason: str = "") -> "Cause":
        return cls(source=Source.SYSTEM, reason=reason)


@dataclass(slots=True)
class MemberAccounts:
    available: Account
    pending: Account


def _require_atomic() -> None:
    if not connection.in_atomic_block:
        raise RuntimeError(
            "Ledger primitives must run inside a transaction (use loyalty.services)."
        )


def _check_points(points) -> int:
    if type(points) is not int or points <= 0:
        raise InvalidPoints(points)
    return points


def system_account(kind: str) -> Account:
    account, _ = Account.objects.get_or_create(
        code=kind, defaults={"kind": kind, "name": SYSTEM_ACCOUNT_NAMES.get(kind, kind)}
    )
    return account


def program_settings() -> ProgramSettings:
    settings, _ = ProgramSettings.objects.get_or_create(pk=1)
    return settings


def member_accounts_lock(member: Member) -> MemberAccounts:
    """Lock the member's two accounts (ordered by pk, so concurrent lockers never deadlock),
    creating them on first use."""
    _require_atomic()
    accounts = {
        a.kind: a for a in Account.objects.select_for_update().filter(member=member).order_by("pk")
    }
    if len(accounts) < len(MEMBER_KINDS):
        for kind in MEMBER_KINDS:
            Account.objects.get_or_create(member=member, kind=kind)
        accounts = {
            a.kind: a
            for a in Account.objects.select_for_update().filter(member=member).order_by("pk")
        }
    return MemberAccounts(
        available=accounts[AccountKind.MEMBER], pending=accounts[AccountKind.MEMBER_PENDING]
    )


def lot_expiry_for(earned_at: datetime, settings: ProgramSettings) -> datetime | None:
    if settings.points_lifetime_months is None:
        return None
    return earned_at + relativedelta(months=settings.points_lifetime_months)


def _entry_create(
    *, member, kind, description, cause: Cause, effective_at=None, reversal_of=None, details=None
):
    now = timezone.now()
    return JournalEntry.objects.create(
        member=member,
        kind=kind,
        description=description[:255],
        reason=cause.reason,
        details=details or {},
        source=cause.source,
        created_by=cause.user,
        client=cause.client,
        reversal_of=reversal_of,
        effective_at=effective_at or now,
        created_at=now,
    )


def _post(entry: JournalEntry, moves: list[tuple[Account, int]]) -> None:
    """Write the postings of an entry and move the stored balances of member accounts."""
    assert sum(amount for _, amount in moves) == 0, "postings must sum to zero"
    postings = []
    for account, amount in moves:
        balance_after = None
        if account.kind in MEMBER_KINDS:
            Account.objects.filter(pk=account.pk).update(balance=F("balance") + amount)
            account.balance += amount
            balance_after = account.balance
        postings.append(
            Posting(entry=entry, account=account, amount=amount, balance_after=balance_after)
        )
    Posting.objects.bulk_create(postings)


def _lots_take(
    accounts: MemberAccounts, points: int, entry: JournalEntry, first: Lot | None = None
) -> int:
    """Take up to `points` from the available lots, earliest-expiring first (never-expiring
    last), starting with `first` if given. Returns how many points the lots held."""
    lots = list(
        Lot.objects.filter(account=accounts.available, pending=False, remaining__gt=0).order_by(
            F("expires_at").asc(nulls_last=True), "id"
        )
    )
    if first is not None:
        lots.sort(key=lambda lot: lot.pk != first.pk)
    changed, movements, left = [], [], points
    for lot in lots:
        if left == 0:
            break
        take = min(lot.remaining, left)
        lot.remaining -= take
        left -= take
        changed.append(lot)
        movements.append(LotMovement(entry=entry, lot=lot, points=-take))
    Lot.objects.bulk_update(changed, ["remaining"])
    LotMovement.objects.bulk_create(movements)
    return points - left


def _debt(accounts: MemberAccounts) -> int:
    return max(0, -accounts.available.balance)


def credit(
    *,
    member: Member,
    points: int,
    description: str,
    cause: Cause,
    kind: str = EntryKind.EARN,
    counter: Account | None = None,
    effective_at: datetime | None = None,
    expires_at: datetime | None = None,
    pending_until: datetime | None = None,
    details: dict | None = None,
) -> JournalEntry:
    """Give points to a member as a new lot. With `pending_until` in the future the points
    wait in the pending account until the maturation job releases them.
    A debt left by an earlier clawback is paid off first."""
    _check_points(points)
    accounts = member_accounts_lock(member)
    settings = program_settings()
    counter = counter or system_account(AccountKind.ISSUANCE)
    if counter.kind in MEMBER_KINDS:
        raise InvalidAccount("Points cannot come from a member account.")
    entry = _entry_create(
        member=member,
        kind=kind,
        description=description,
        cause=cause,
        effective_at=effective_at,
        details=details,
    )
    earned_at = entry.effective_at
    if expires_at is None:
        expires_at = lot_expiry_for(earned_at, settings)
    pending = pending_until is not None and pending_until > entry.created_at
    if pending:
        remaining = points
        _post(entry, [(counter, -points), (accounts.pending, points)])
    else:
        remaining = max(0, points - _debt(accounts))
        _post(entry, [(counter, -points), (accounts.available, points)])
    Lot.objects.create(
        account=accounts.available,
        entry=entry,
        points=points,
        remaining=remaining,
        earned_at=earned_at,
        expires_at=expires_at,
        pending=pending,
        matures_at=pending_until if pending else None,
    )
    return entry


def debit(
    *,
    member: Member,
    points: int,
    description: str,
    cause: Cause,
    kind: str = EntryKind.REDEEM,
    counter: Account | None = None,
    details: dict | None = None,
) -> JournalEntry:
    """Take points from a member's spendable balance, earliest-expiring lots first.
    Raises InsufficientPoints rather than take the balance below zero."""
    _check_points(points)
    accounts = member_accounts_lock(member)
    if accounts.available.balance < points:
        raise InsufficientPoints(balance=accounts.available.balance, asked=points)
    counter = counter or system_account(AccountKind.REDEMPTION)
    if counter.kind in MEMBER_KINDS:
        raise InvalidAccount("Points cannot go to a member account this way.")
    entry = _entry_create(
        member=member, kind=kind, description=description, cause=cause, details=details
    )
    _lots_take(accounts, points, entry)
    _post(entry, [(accounts.available, -points), (counter, points)])
    return entry


def transfer(
    *, member: Member, points: int, to: Account, description: str, cause: Cause
) -> JournalEntry:
    """Give a member's points to a charity or a partner."""
    if to.kind not in (AccountKind.CHARITY, AccountKind.PARTNER):
        raise InvalidAccount("Points can be transferred only to a charity or a partner.")
    return debit(
        member=member,
        points=points,
        description=description,
        cause=cause,
        kind=EntryKind.TRANSFER,
        counter=to,
        details={"to": to.name or to.code},
    )


def reverse(*, entry: JournalEntry, cause: Cause, description: str = "") -> JournalEntry:
    """Post the mirror of `entry`, once. Points it gave are taken back (even into a debt:
    a return may claw back points already spent); points it took are given back to the
    lots they came from, or to a fresh lot if those have expired meanwhile."""
    if entry.kind in (EntryKind.REVERSAL, EntryKind.EXPIRY, EntryKind.MATURATION):
        raise NotReversible(f"A {entry.get_kind_display().lower()} entry cannot be reversed.")
    if entry.member_id is None:
        raise NotReversible("Only entries of a member can be reversed.")
    accounts = member_accounts_lock(entry.member)
    if JournalEntry.objects.filter(reversal_of=entry).exists():
        raise AlreadyReversed()
    reversal = _entry_create(
        member=entry.member,
        kind=EntryKind.REVERSAL,
        cause=cause,
        reversal_of=entry,
        description=description or entry.description,
    )
    moves: list[tuple[Account, int]] = []
    for posting in entry.postings.select_related("account"):
        if posting.account.kind not in MEMBER_KINDS:
            moves.append((posting.account, -posting.amount))
        elif posting.amount > 0:
            moves.append(_take_back_credit(accounts, entry, posting.amount, reversal))
        else:
            moves.append(_give_back_debit(accounts, entry, -posting.amount, reversal))
    _post(reversal, moves)
    return reversal


def _take_back_credit(accounts: MemberAccounts, original, points, reversal) -> tuple[Account, int]:
    lot = Lot.objects.get(entry=original)
    if lot.pending:
        lot.remaining -= points
        lot.save(update_fields=["remaining"])
        LotMovement.objects.create(entry=reversal, lot=lot, points=-points)
        return accounts.pending, -points
    _lots_take(accounts, points, reversal, first=lot)
    return accounts.available, -points


def _give_back_debit(accounts: MemberAccounts, original, points, reversal) -> tuple[Account, int]:
    """Refill the lots the debit emptied, latest-expiring first; a debt is paid off first."""
    to_lots = max(0, points - _debt(accounts))
    now = timezone.now()
    movements = list(
        original.lot_movements.filter(points__lt=0)
        .select_related("lot")
        .order_by(F("lot__expires_at").desc(nulls_first=True), "-lot_id")
    )
    fresh = 0
    for movement in movements:
        if to_lots == 0:
            break
        give = min(-movement.points, to_lots)
        to_lots -= give
        lot = movement.lot
        if lot.expires_at is not None and lot.expires_at <= now:
            fresh += give
            continue
        Lot.objects.filter(pk=lot.pk).update(remaining=F("remaining") + give)
        LotMovement.objects.create(entry=reversal, lot=lot, points=give)
    # Movements always cover the debit; were any left, a fresh lot beats losing points.
    fresh += to_lots
    if fresh:
        settings = program_settings()
        Lot.objects.create(
            account=accounts.available,
            entry=reversal,
            points=fresh,
            remaining=fresh,
            earned_at=now,
            expires_at=lot_expiry_for(now, settings),
        )
    return accounts.available, points


def expire_member_lots(*, member: Member, now: datetime) -> JournalEntry | None:
    """Move the remainder of the member's lots that are due to the expiry account."""
    accounts = member_accounts_lock(member)
    lots = list(
        Lot.objects.filter(
            account=accounts.available, pending=False, remaining__gt=0, expires_at__lte=now
        ).order_by("expires_at", "id")
    )
    if not lots:
        return None
    total = sum(lot.remaining for lot in lots)
    entry = _entry_create(
        member=member,
        kind=EntryKind.EXPIRY,
        cause=Cause.system("Points reached their expiry date"),
        description=f"{total} points reached their expiry date",
        details={
            "lots": [
                {
                    "earned_at": lot.earned_at.isoformat(),
                    "points": lot.remaining,
                    "expired_at": lot.expires_at.isoformat(),
                }
                for lot in lots
            ]
        },
    )
    LotMovement.objects.bulk_create(
        [LotMovement(entry=entry, lot=lot, points=-lot.remaining) for lot in lots]
    )
    for lot in lots:
        lot.remaining = 0
    Lot.objects.bulk_update(lots, ["remaining"])
    _post(entry, [(accounts.available, -total), (system_account(AccountKind.EXPIRY), total)])
    return entry


def mature_member_lots(*, member: Member, now: datetime) -> JournalEntry | None:
    """Release the member's pending lots whose return window has closed."""
    accounts = member_accounts_lock(member)
    lots = list(
        Lot.objects.filter(account=accounts.available, pending=True, matures_at__lte=now).order_by(
            "id"
        )
    )
    if not lots:
        return None
    total = sum(lot.remaining for lot in lots)
    debt = _debt(accounts)
    for lot in lots:
        lot.pending = False
        absorbed = min(debt, lot.remaining)
        lot.remaining -= absorbed
        debt -= absorbed
    Lot.objects.bulk_update(lots, ["pending", "remaining"])
    if total == 0:  # every pending point was already returned: nothing to move
        return None
    entry = _entry_create(
        member=member,
        kind=EntryKind.MATURATION,
        cause=Cause.system(),
        description=f"{total} pending points are now available",
        details={"points": total},
    )
    _post(entry, [(accounts.pending, -total), (accounts.available, total)])
    return entry
