"""The points ledger's primitives. Each runs inside the caller's transaction and locks
the member's accounts first; public, durable entry points live in services.py.

Invariants (tested by tests/loyalty/test_ledger_properties.py):
- every entry's postings sum to zero;
- a member account's stored balance equals the sum of its postings;
- the remainders of a member's available lots add up to max(balance, 0) and those of
  pending lots to the pending balance (a clawback may leave a debt, never a negative lot);
- debits take from the lots that expire first and never take a balance below zero.
"""

import functools
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from dateutil.relativedelta import relativedelta
from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import F, Model, Q, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from loyalty import request_memo
from loyalty.compiled_query import CompiledQuery, FirstRead
from loyalty.db_copy import family_insert, objects_insert, unsaved
from loyalty.exceptions import (
    AlreadyReversed,
    InsufficientPoints,
    InvalidAccount,
    InvalidPoints,
    NotReversible,
    UnknownMember,
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

# A save clears the cache at once; the timeout only bounds a rare race (a request that
# read the old row commits just after the save's commit and caches it again).
SETTINGS_CACHE_SECONDS = 60
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


# Program rows the till's hot path reads on every purchase are kept between requests,
# but only once committed: inside a transaction that may still roll back, the row read
# could be one this very transaction created or changed.
_system_accounts: dict[str, Account] = {}


def system_account(kind: str) -> Account:
    """A program account (issuance, redemption...), created on first use. They never
    change or go away, so each process keeps them."""
    account = _system_accounts.get(kind)
    if account is None:
        account, _ = Account.objects.get_or_create(
            code=kind, defaults={"kind": kind, "name": SYSTEM_ACCOUNT_NAMES.get(kind, kind)}
        )
        transaction.on_commit(lambda: _system_accounts.setdefault(kind, account))
    return account


@functools.cache
def settings_cache_key() -> str:
    # The field list is part of the key: a deploy that adds a field never reads an old copy.
    fields = ",".join(f.attname for f in ProgramSettings._meta.concrete_fields)
    return f"loyalty:program-settings:{zlib.crc32(fields.encode())}"


def program_settings() -> ProgramSettings:
    """The program's settings, read through the cache (shared by every process when
    REDIS_URL is set), once per request. Saving them clears it (`program_settings_forget`).
    Within requests a process decodes them once while the cached copy stays the same, and
    every request gets that one object: read it, never change it in place."""
    return request_memo.remembered(settings_cache_key(), _program_settings_read)


def _program_settings_read() -> ProgramSettings:
    key = settings_cache_key()
    settings = cache.get(key)
    if settings is None:
        settings, _ = ProgramSettings.objects.get_or_create(pk=1)
        transaction.on_commit(lambda: cache.set(key, settings, timeout=SETTINGS_CACHE_SECONDS))
    return settings


def program_settings_forget() -> None:
    """Drop the cached settings now and again at commit, so no process keeps reading the
    old values, nor caches the new ones before they are committed."""
    key = settings_cache_key()
    request_memo.forget(key)
    cache.delete(key)
    transaction.on_commit(lambda: cache.delete(key))


def caches_clear() -> None:
    """For tests, which empty the database under the caches."""
    _system_accounts.clear()
    request_memo.forget(settings_cache_key())
    cache.delete(settings_cache_key())


def member_accounts_lock(member: Member) -> MemberAccounts:
    """Lock the member's two accounts (ordered by pk, so concurrent lockers never deadlock),
    creating them on first use. Raises UnknownMember for a member not in the database."""
    _require_atomic()
    if member.pk is None:
        raise UnknownMember()
    accounts = {
        a.kind: a for a in Account.objects.select_for_update().filter(member=member).order_by("pk")
    }
    if len(accounts) < len(MEMBER_KINDS):
        # First use: the member row must exist, and stay until we commit.
        if not Member.objects.select_for_update(no_key=True).filter(pk=member.pk).exists():
            raise UnknownMember()
        for kind in MEMBER_KINDS:
            Account.objects.get_or_create(member=member, kind=kind)
        accounts = {
            a.kind: a
            for a in Account.objects.select_for_update().filter(member=member).order_by("pk")
        }
    return MemberAccounts(
        available=accounts[AccountKind.MEMBER], pending=accounts[AccountKind.MEMBER_PENDING]
    )


_accounts_by_card_locked = CompiledQuery(
    lambda card_number: (
        Account.objects.select_for_update(of=("self",))
        # The member's tier rides along: the earning rules read it (loyalty.rules.loader).
        .select_related("member__tier_state__tier")
        .filter(member__card_number=card_number)
        .order_by("pk")
    )
)


def member_lock_by_card(
    card_number: str, *, first: FirstRead | None = None
) -> tuple[Member, MemberAccounts]:
    """Find a member by card and lock their accounts in one query (the till's hot path),
    which makes the read `first` too, ahead of it (the API's idempotency key check);
    `first.then` must raise where `first.proceed` does not hold, as nothing was read.
    Raises UnknownMember."""
    _require_atomic()
    if first is None:
        accounts = _accounts_by_card_locked.run(card_number)
    else:
        accounts = _accounts_by_card_locked.run_after(first, card_number)
    if len(accounts) == len(MEMBER_KINDS):
        by_kind = {a.kind: a for a in accounts}
        member = accounts[0].member
        for account in accounts:
            account.member = member
        return member, MemberAccounts(
            available=by_kind[AccountKind.MEMBER], pending=by_kind[AccountKind.MEMBER_PENDING]
        )
    member = Member.objects.filter(card_number=card_number).first()  # accounts not made yet
    if member is None:
        raise UnknownMember()
    return member, member_accounts_lock(member)


def members_lock_by_cards(card_numbers) -> dict[str, tuple[Member, MemberAccounts]]:
    """`member_lock_by_card` for many cards, in one query when every member has their
    accounts (three more for those who don't yet): {card: (member, accounts)}. Unknown
    cards are left out. The accounts are locked in pk order, as single requests lock theirs,
    so a batch and a single request never deadlock."""
    _require_atomic()
    cards = list(card_numbers)
    found = _members_accounts_locked(cards)
    missing = [card for card in cards if card not in found]
    if missing and _accounts_make(missing):
        found |= _members_accounts_locked(missing)
    return found


def members_lock_up_front(*, cards: list[str], member_ids=None) -> None:
    """Lock, before a long transaction writes anything, the accounts of every member it
    may touch (by card, or `member_ids`, a list or a subquery), in one statement and so in
    pk order, making those not made yet. Its later locks then take rows it holds already.
    A batch needs this: each of its runs locks in pk order, but the runs follow the batch's
    order, so two batches syncing the same members at once could deadlock across runs."""
    _require_atomic()
    where = Q(member__card_number__in=cards)
    if member_ids is not None:
        where |= Q(member_id__in=member_ids)
    found = set(
        Account.objects.select_for_update(of=("self",))
        .filter(where)
        .order_by("pk")
        .values_list("member__card_number", flat=True)
    )
    missing = [card for card in cards if card not in found]
    if missing:
        _accounts_make(missing)


def _accounts_make(cards: list[str]) -> bool:
    """First use: make the accounts of these cards' members (whose rows must stay
    meanwhile). Whether any of the cards is a member's."""
    ids = list(
        Member.objects.select_for_update(no_key=True)
        .filter(card_number__in=cards)
        .values_list("pk", flat=True)
    )
    if ids:
        Account.objects.bulk_create(
            [Account(member_id=pk, kind=kind) for pk in ids for kind in MEMBER_KINDS],
            ignore_conflicts=True,
        )
    return bool(ids)


def _members_accounts_locked(cards: list[str]) -> dict[str, tuple[Member, MemberAccounts]]:
    rows = (
        Account.objects.select_for_update(of=("self",))
        # The members' tiers ride along: the earning rules read them (loyalty.rules.loader).
        .select_related("member__tier_state__tier")
        .filter(member__card_number__in=cards)
        .order_by("pk")
    )
    by_member: dict[int, dict[str, Account]] = {}
    members: dict[int, Member] = {}
    for account in rows:
        member = members.setdefault(account.member_id, account.member)
        account.member = member
        by_member.setdefault(member.pk, {})[account.kind] = account
    found = {}
    for member_id, accounts in by_member.items():
        if len(accounts) == len(MEMBER_KINDS):
            member = members[member_id]
            available = accounts[AccountKind.MEMBER]
            pending = accounts[AccountKind.MEMBER_PENDING]
            found[member.card_number] = (member, MemberAccounts(available, pending))
    return found


def lot_expiry_for(earned_at: datetime, settings: ProgramSettings) -> datetime | None:
    if settings.points_lifetime_months is None:
        return None
    return earned_at + relativedelta(months=settings.points_lifetime_months)


def _entry_create(**fields) -> JournalEntry:
    entry = _entry_new(**fields)
    entry.save(force_insert=True)
    return entry


def _entry_new(
    *, member, kind, description, cause: Cause, effective_at=None, reversal_of=None, details=None
) -> JournalEntry:
    now = timezone.now()
    return unsaved(
        JournalEntry,
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
    postings, moved = [], {}
    for account, amount in moves:
        balance_after = None
        if account.kind in MEMBER_KINDS:
            account.balance += amount
            balance_after = account.balance
            moved[account.pk] = moved.get(account.pk, 0) + amount
        postings.append(
            unsaved(
                Posting, entry=entry, account=account, amount=amount, balance_after=balance_after
            )
        )
    if moved:
        _balances_move(moved)
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


@dataclass(frozen=True, slots=True)
class Credit:
    """One credit for `credits_post`: what `credit` takes, for a member already locked."""

    member: Member
    accounts: MemberAccounts
    points: int
    description: str
    effective_at: datetime | None = None
    expires_at: datetime | None = None
    pending_until: datetime | None = None
    details: dict | None = None


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
    settings: ProgramSettings | None = None,
    accounts: MemberAccounts | None = None,
    riders: Callable[[JournalEntry], list[Model]] | None = None,
) -> JournalEntry:
    """Give points to a member as a new lot. With `pending_until` in the future the points
    wait in the pending account until the maturation job releases them.
    A debt left by an earlier clawback is paid off first. Pass `accounts` when the caller
    already holds the member's lock. `riders(entry)` gives new rows to insert in the same
    statement as the entry, which may refer to it (a purchase and its lines)."""
    _check_points(points)
    accounts = accounts or member_accounts_lock(member)
    one = Credit(
        member=member, accounts=accounts, points=points, description=description,
        effective_at=effective_at, expires_at=expires_at, pending_until=pending_until,
        details=details,
    )  # fmt: skip
    return credits_post(
        [one], cause=cause, kind=kind, counter=counter, settings=settings, riders=riders
    )[0]


def credits_post(
    credits: list[Credit],
    *,
    cause: Cause,
    kind: str = EntryKind.EARN,
    counter: Account | None = None,
    settings: ProgramSettings | None = None,
    riders: Callable[[JournalEntry], list[Model]] | None = None,
) -> list[JournalEntry]:
    """`credit` for many members at once, in order (a batch of purchases): one entry and
    one lot each, in four queries however many (one for a single credit, with its
    `riders`). The members' accounts must be locked."""
    _require_atomic()
    for one in credits:
        _check_points(one.points)
    counter = counter or system_account(AccountKind.ISSUANCE)
    if counter.kind in MEMBER_KINDS:
        raise InvalidAccount("Points cannot come from a member account.")
    entries = [
        _entry_new(
            member=one.member,
            kind=kind,
            description=one.description,
            cause=cause,
            effective_at=one.effective_at,
            details=one.details,
        )
        for one in credits
    ]
    single = len(entries) == 1  # a till's sale: everything below goes in with the entry
    if riders is not None and not single:
        raise ValueError("Only a single credit takes riders.")
    if not single:
        objects_insert(JournalEntry, entries, ids=True)
    postings, lots, moved = [], [], {}
    for one, entry in zip(credits, entries, strict=True):
        expires_at = one.expires_at
        if expires_at is None:
            settings = settings or program_settings()
            expires_at = lot_expiry_for(entry.effective_at, settings)
        pending = one.pending_until is not None and one.pending_until > entry.created_at
        to = one.accounts.pending if pending else one.accounts.available
        remaining = one.points if pending else max(0, one.points - _debt(one.accounts))
        to.balance += one.points
        moved[to.pk] = moved.get(to.pk, 0) + one.points
        postings += [
            unsaved(Posting, entry=entry, account=counter, amount=-one.points),
            unsaved(Posting, entry=entry, account=to, amount=one.points, balance_after=to.balance),
        ]
        lot = unsaved(
            Lot, account=one.accounts.available, entry=entry, points=one.points,
            remaining=remaining, earned_at=entry.effective_at, expires_at=expires_at,
            pending=pending, matures_at=one.pending_until if pending else None,
        )  # fmt: skip
        lots.append(lot)
    if single:  # one statement (db_copy.family_insert)
        rows = postings + lots + (riders(entries[0]) if riders else [])
        family_insert(entries[0], rows, also=_balances_update(moved))
    else:
        objects_insert(Posting, postings)
        objects_insert(Lot, lots)
        _balances_move(moved)
    return entries


def _balances_move(moved: dict[int, int]) -> None:
    """Add to the stored balances of member accounts in one UPDATE (relative, as the
    database has the last word on a locked row's value)."""
    if not moved:
        return
    with connection.cursor() as cursor:
        cursor.execute(*_balances_update(moved))


def _balances_update(moved: dict[int, int]) -> tuple[str, list]:
    """The UPDATE of `_balances_move` (SQL and parameters), or none when nothing moved."""
    if not moved:
        return "", []
    # Written out: for a batch's hundreds of accounts the ORM's CASE WHEN cost more to
    # build than the database takes to run it, and for a till's one account the ORM's
    # UPDATE was a quarter of the credit's time. WHERE id IN keeps it an index scan
    # however many accounts there are (a join to a VALUES list was planned as a full scan).
    table = Account._meta.db_table
    whens = " ".join(["WHEN %s THEN %s"] * len(moved))
    ids = ", ".join(["%s"] * len(moved))
    return (
        f"UPDATE {table} SET balance = balance + CASE id {whens} END WHERE id IN ({ids})",
        [*(value for pair in moved.items() for value in pair), *moved],
    )


def debit(
    *,
    member: Member,
    points: int,
    description: str,
    cause: Cause,
    kind: str = EntryKind.REDEEM,
    counter: Account | None = None,
    details: dict | None = None,
    accounts: MemberAccounts | None = None,
) -> JournalEntry:
    """Take points from a member's spendable balance, earliest-expiring lots first.
    Raises InsufficientPoints rather than take the balance below zero."""
    _check_points(points)
    accounts = accounts or member_accounts_lock(member)
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
    if _has_partial_returns(entry):
        raise NotReversible("Part of this entry was already returned; return the rest instead.")
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
            lot = Lot.objects.get(entry=entry)
            unexpired = _unexpire_share(entry, lot, posting.amount)
            moves += _take_back_credit(accounts, lot, posting.amount, reversal, unexpired)
        else:
            moves.append(_give_back_debit(accounts, entry, -posting.amount, reversal))
    _post(reversal, moves)
    return reversal


def _expired_not_taken_back(original: JournalEntry, lot: Lot) -> int:
    """Points of the credit's lot that expired and that no earlier return took back."""
    expired = -(
        lot.movements.filter(entry__kind=EntryKind.EXPIRY).aggregate(total=Sum("points"))["total"]
        or 0
    )
    if not expired:
        return 0
    earlier = JournalEntry.objects.filter(kind=EntryKind.RETURN, details__earn_entry=original.pk)
    return expired - sum(e.details.get("unexpired", 0) for e in earlier)


def _take_back_credit(
    accounts: MemberAccounts, lot: Lot, points, entry, unexpired: int = 0
) -> list[tuple[Account, int]]:
    """Take a credit back. Its points that already expired went to breakage, so those
    `unexpired` come back from the expiry account; only the rest is taken from the
    member (their own lot first, then others, into a debt if they were spent)."""
    moves = [(system_account(AccountKind.EXPIRY), -unexpired)] if unexpired else []
    clawback = points - unexpired
    if not clawback:
        return moves
    if lot.pending:
        lot.remaining -= clawback
        lot.save(update_fields=["remaining"])
        LotMovement.objects.create(entry=entry, lot=lot, points=-clawback)
        return [*moves, (accounts.pending, -clawback)]
    _lots_take(accounts, clawback, entry, first=lot)
    return [*moves, (accounts.available, -clawback)]


def _unexpire_share(original: JournalEntry, lot: Lot, points: int) -> int:
    return min(points, _expired_not_taken_back(original, lot))


def _give_back_debit(accounts: MemberAccounts, original, points, entry) -> tuple[Account, int]:
    """Refill the lots the debit emptied, latest-expiring first, never more per lot than
    the debit took minus earlier refunds; a debt is paid off first. Points whose lot has
    expired meanwhile go to one fresh lot, so a refund never hands back dead points."""
    to_lots = max(0, points - _debt(accounts))
    now = timezone.now()
    movements = (
        original.lot_movements.filter(points__lt=0)
        .annotate(refunded=Coalesce(Sum("refunds__points"), 0))
        .select_related("lot")
        .order_by(F("lot__expires_at").desc(nulls_first=True), "-lot_id")
    )
    refunds, expired = [], []
    for movement in movements:
        give = min(-movement.points - movement.refunded, to_lots)
        if give <= 0:
            continue
        to_lots -= give
        lot = movement.lot
        if lot.expires_at is not None and lot.expires_at <= now:
            expired.append((movement, give))
            continue
        Lot.objects.filter(pk=lot.pk).update(remaining=F("remaining") + give)
        refunds.append(LotMovement(entry=entry, lot=lot, points=give, refund_of=movement))
    fresh_points = sum(give for _, give in expired) + to_lots  # to_lots is 0 unless data drifted
    if fresh_points:
        fresh = Lot.objects.create(
            account=accounts.available, entry=entry, points=fresh_points, remaining=fresh_points,
            earned_at=now, expires_at=lot_expiry_for(now, program_settings()),
        )  # fmt: skip
        refunds += [
            LotMovement(entry=entry, lot=fresh, points=give, refund_of=m) for m, give in expired
        ]
    LotMovement.objects.bulk_create(refunds)
    return accounts.available, points


def _has_partial_returns(entry: JournalEntry) -> bool:
    return JournalEntry.objects.filter(
        Q(details__earn_entry=entry.pk) | Q(details__redeem_entry=entry.pk), kind=EntryKind.RETURN
    ).exists()


def return_points(
    *,
    member: Member,
    earn_entry: JournalEntry | None,
    earn_points: int,
    redeem_entry: JournalEntry | None,
    redeem_points: int,
    description: str,
    cause: Cause,
    details: dict | None = None,
) -> JournalEntry:
    """Part (or all) of a purchase comes back: take back `earn_points` it earned (from its
    own lot first, into a debt if they were spent) and give back `redeem_points` that paid
    for it. One entry; the caller keeps the sums within what the purchase earned/redeemed."""
    if earn_points < 0 or redeem_points < 0 or (earn_points == 0 and redeem_points == 0):
        raise InvalidPoints(earn_points or redeem_points)
    accounts = member_accounts_lock(member)
    earn_lot = Lot.objects.get(entry=earn_entry) if earn_points else None
    unexpired = _unexpire_share(earn_entry, earn_lot, earn_points) if earn_points else 0
    entry = _entry_create(
        member=member, kind=EntryKind.RETURN, cause=cause, description=description,
        details={**(details or {}), "earn_entry": earn_entry and earn_entry.pk,
                 "redeem_entry": redeem_entry and redeem_entry.pk, "unexpired": unexpired},
    )  # fmt: skip
    moves: list[tuple[Account, int]] = []
    if redeem_points:
        counter = redeem_entry.postings.exclude(account__kind__in=MEMBER_KINDS).get().account
        moves += [
            _give_back_debit(accounts, redeem_entry, redeem_points, entry),
            (counter, -redeem_points),
        ]
    if earn_points:
        counter = earn_entry.postings.exclude(account__kind__in=MEMBER_KINDS).get().account
        moves += [
            *_take_back_credit(accounts, earn_lot, earn_points, entry, unexpired),
            (counter, earn_points),
        ]
    _post(entry, _merge(moves))
    return entry


def _merge(moves: list[tuple[Account, int]]) -> list[tuple[Account, int]]:
    """One posting per account (a return may touch the member account twice)."""
    totals: dict[int, list] = {}
    for account, amount in moves:
        totals.setdefault(account.pk, [account, 0])[1] += amount
    return [(account, amount) for account, amount in totals.values() if amount]


def expire_member_lots(*, member: Member, now: datetime) -> JournalEntry | None:
    """Move the remainder of the member's lots that are due to the expiry account.
    For one member; the periodic job runs loyalty.ledger_bulk.expire_due, which writes
    exactly this for a batch of members (tests/loyalty/test_jobs_ledger.py)."""
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
    """Release the member's pending lots whose return window has closed. For one member;
    the periodic job runs loyalty.ledger_bulk.mature_due, its set-based twin."""
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
