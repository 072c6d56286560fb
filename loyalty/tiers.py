"""Tiers: qualification in a rolling window, the upgrade at once on a purchase, the periodic
review, at-risk warnings and the progress a member sees.

Rules (issue 4):
- a member qualifies by spend (money paid on purchases in the window, less what returns of
  those purchases gave back) or by qualifying points (points those purchases earned, less
  what their returns took back), as ProgramSettings.tier_basis says;
- upgrades happen at once, straight to the highest tier reached; a return never moves a
  member down at once;
- each tier is guaranteed for its `guaranteed_months` after it was reached. When that
  period ends, the review measures again: still qualifying renews the period, otherwise
  the member drops ONE level and that lower tier gets its own guaranteed period. So each
  member meets the review once a period, and at most one level goes at a time;
- a member with no MemberTier row (or no tier) is in the entry tier, the active tier with
  threshold 0, when there is one: joining writes nothing.
"""

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from dateutil.relativedelta import relativedelta
from django.conf import settings as django_settings
from django.db import connection, transaction
from django.db.models import (
    Case,
    DecimalField,
    Exists,
    F,
    FloatField,
    Min,
    OuterRef,
    Q,
    Subquery,
    Sum,
    Value,
    When,
)
from django.db.models.functions import Coalesce, Greatest, NullIf
from django.utils import formats, timezone
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from loyalty import ledger, ledger_bulk
from loyalty.ledger import program_settings
from loyalty.models import (
    Membership,
    MemberTier,
    ProgramSettings,
    Purchase,
    PurchaseLine,
    PurchaseReturn,
    PurchaseReturnLine,
    Tier,
    TierBasis,
    TierChange,
)
from loyalty.money import Money
from members.models import Member

logger = logging.getLogger(__name__)

AMOUNT = DecimalField(max_digits=20, decimal_places=6)
CENT = Decimal("0.01")


# The tier table ------------------------------------------------------------------------


@dataclass(frozen=True)
class TierTable:
    """The active tiers by rank, plus every tier (active or not) by pk for members who still
    hold a retired one. Built once per page or review batch run."""

    active: list[Tier]
    by_pk: dict[int, Tier] = field(default_factory=dict)

    @classmethod
    def load(cls) -> "TierTable":
        tiers = list(Tier.objects.order_by("rank"))
        return cls(active=[t for t in tiers if t.is_active], by_pk={t.pk: t for t in tiers})

    @classmethod
    def cached(cls) -> "TierTable":
        """`load()`, kept in this process like the earning rules: a tier change makes every
        process read it again (loyalty/receivers.py). For the till's and the portal's reads;
        jobs and the admin load their own. Its tiers are shared: never change them."""
        from loyalty.rules import loader  # the rules read tiers

        return loader._cached("tier_table", cls.load, cls.load)

    def with_change(self, changed: Tier) -> "TierTable":
        """The table as it would be once `changed` (an unsaved edit, or a new tier) is saved."""
        tiers = [t for t in self.by_pk.values() if t.pk != changed.pk or changed.pk is None]
        tiers = sorted([*tiers, changed], key=lambda t: t.rank)
        by_pk = {t.pk: t for t in tiers if t.pk is not None}
        return TierTable(active=[t for t in tiers if t.is_active], by_pk=by_pk)

    def __bool__(self) -> bool:
        return bool(self.active)

    @property
    def entry(self) -> Tier | None:
        """The tier everyone is in without qualifying (threshold 0), if there is one."""
        first = self.active[0] if self.active else None
        return first if first is not None and first.threshold <= 0 else None

    def reached(self, qualification: Decimal) -> Tier | None:
        best = None
        for tier in self.active:
            if tier.threshold <= qualification:
                best = tier
        return best

    def held(self, tier_id: int | None) -> Tier | None:
        """The tier a member holds: their row's tier, else the entry tier."""
        if tier_id is not None:
            return self.by_pk.get(tier_id)
        return self.entry

    def below(self, rank: int) -> Tier | None:
        lower = [t for t in self.active if t.rank < rank]
        return lower[-1] if lower else None

    def above(self, rank: int) -> Tier | None:
        return next((t for t in self.active if t.rank > rank), None)


def _rank(tier: Tier | None) -> int:
    return tier.rank if tier is not None else -1


def guarantee_end(tier: Tier | None, start: datetime) -> datetime | None:
    """When a tier reached at `start` is next reviewed; the entry tier never is."""
    if tier is None or tier.threshold <= 0:
        return None
    return start + relativedelta(months=max(tier.guaranteed_months, 1))


def window_start(now: datetime, settings: ProgramSettings) -> datetime:
    return now - relativedelta(months=settings.tier_window_months)


# Qualification --------------------------------------------------------------------------


def _purchase_contribution(settings: ProgramSettings):
    """What one purchase counts for, as an expression on Purchase.

    Spend: the money paid (the total less the points that paid part of it, at the program's
    point value), less the share that returns gave back and the share of membership plan
    fees; returns give back money in proportion to the line amounts they return, as
    purchase_return does for points.
    Points: the points it earned less the points its returns took back."""
    if settings.tier_basis == TierBasis.POINTS:
        taken_back = (
            PurchaseReturn.objects.filter(purchase=OuterRef("pk"))
            .values("purchase")
            .annotate(s=Sum("points_reversed"))
            .values("s")
        )
        return F("points_earned") - Coalesce(Subquery(taken_back), 0)
    lines_total = (
        PurchaseLine.objects.filter(purchase=OuterRef("pk"))
        .values("purchase")
        .annotate(s=Sum(F("quantity") * F("unit_price"), output_field=AMOUNT))
        .values("s")
    )
    # A membership plan's fee buys the plan, not goods: it counts as never spent.
    plan_lines = (
        PurchaseLine.objects.filter(purchase=OuterRef("pk"), membership__isnull=False)
        .values("purchase")
        .annotate(s=Sum(F("quantity") * F("unit_price"), output_field=AMOUNT))
        .values("s")
    )
    returned = (
        PurchaseReturnLine.objects.filter(
            line__purchase=OuterRef("pk"), line__membership__isnull=True
        )
        .values("line__purchase")
        .annotate(s=Sum(F("quantity") * F("line__unit_price"), output_field=AMOUNT))
        .values("s")
    )
    paid = Greatest(
        F("total") - F("points_redeemed") * Value(settings.point_value, output_field=AMOUNT),
        Value(0, output_field=AMOUNT),
        output_field=AMOUNT,
    )
    returned_amount = Coalesce(
        Subquery(returned, output_field=AMOUNT), Value(0, output_field=AMOUNT)
    ) + Coalesce(Subquery(plan_lines, output_field=AMOUNT), Value(0, output_field=AMOUNT))
    if connection.vendor == "sqlite":  # whole amounts are integers there: 25 / 50 would be 0
        returned_amount = returned_amount * Value(1.0, output_field=FloatField())
    kept_share = Value(1, output_field=AMOUNT) - returned_amount / NullIf(
        Subquery(lines_total, output_field=AMOUNT), Value(0, output_field=AMOUNT)
    )
    return Coalesce(paid * kept_share, paid, output_field=AMOUNT)


def _round(value) -> Decimal:
    return Decimal(value or 0).quantize(CENT)


def member_qualification(
    *, member: Member, since: datetime, settings: ProgramSettings
) -> tuple[Decimal, datetime | None]:
    """(qualification from purchases after `since`, when the oldest purchase that still
    counts happened) for one member, in ONE query."""
    contribution = _purchase_contribution(settings)
    row = (
        Purchase.objects.filter(member=member, occurred_at__gt=since)
        .annotate(counts=contribution)
        .aggregate(
            q=Sum("counts", output_field=AMOUNT),
            oldest=Min(Case(When(counts__gt=0, then=F("occurred_at")))),
        )
    )
    return _round(row["q"]), row["oldest"]


def members_qualification(
    *,
    since: datetime,
    settings: ProgramSettings,
    first: int = 0,
    last: int | None = None,
    member_ids: Iterable[int] | None = None,
) -> dict[int, Decimal]:
    """Qualification of every member with purchases after `since` whose id is in
    first..last (or in `member_ids`), in ONE aggregate query. Members missing from the
    answer have 0."""
    purchases = Purchase.objects.filter(occurred_at__gt=since, member_id__gte=first)
    if last is not None:
        purchases = purchases.filter(member_id__lte=last)
    if member_ids is not None:
        purchases = purchases.filter(member_id__in=list(member_ids))
    rows = (
        purchases.annotate(counts=_purchase_contribution(settings))
        .values("member_id")
        .annotate(q=Sum("counts", output_field=AMOUNT))
        .order_by()
        .values_list("member_id", "q")
    )
    return {member_id: _round(q) for member_id, q in rows}


def member_tier(*, member: Member, at: datetime | None = None) -> Tier | None:
    """The tier the member holds at `at` (default now), in one query: the higher of the
    tier they earned (their own, else the entry tier) and the tier a paid membership
    running then grants (loyalty/memberships.py). What the earning rules read (`.code`,
    `.name`, `.rank`, `.earn_multiplier`)."""
    at = at or timezone.now()
    held = MemberTier.objects.filter(member_id=member.pk, tier__isnull=False)
    paid = (
        Membership.objects.filter(
            member_id=member.pk, starts_at__lte=at, ends_at__gt=at, plan__tier__isnull=False
        )
        .exclude(status=Membership.Status.CANCELLED)
        .values("plan__tier_id")
    )
    rows = list(
        Tier.objects.filter(
            Q(pk__in=held.values("tier_id")) | Q(is_active=True, threshold__lte=0) | Q(pk__in=paid)
        )
        .annotate(
            own=Case(When(pk__in=held.values("tier_id"), then=1), default=0),
            paid=Case(When(pk__in=paid, then=1), default=0),
        )
        .order_by("-own", "rank")
    )
    earned = next((t for t in rows if t.own or (t.is_active and t.threshold <= 0)), None)
    best = earned
    for tier in rows:
        if tier.paid and (best is None or tier.rank > best.rank):
            best = tier
    return best


# Words --------------------------------------------------------------------------------


def _measure(basis: str, amount, currency: str) -> str:
    from loyalty.templatetags.ledger import money, points

    if basis == TierBasis.POINTS:
        return _("%(n)s qualifying points") % {"n": points(int(Decimal(amount)))}
    return money(Money.of(Decimal(amount), currency))


def measure_text(settings: ProgramSettings, value) -> str:
    """A qualification figure in words: "120.00 EUR" or "120 qualifying points"."""
    return _measure(settings.tier_basis, value, settings.currency)


def tier_change_text(change: TierChange) -> str:
    """A tier change in words, in the reader's language (member pages and back office)."""
    d = change.details or {}
    came, went = change.to_tier, change.from_tier
    to_name = came.name if came else _("no tier")
    if change.cause == TierChange.Cause.STAFF:
        return _("Moved to %(to)s by our team: %(reason)s") % {
            "to": to_name,
            "reason": change.reason,
        }
    if change.cause == TierChange.Cause.PLAN and d.get("event"):
        return _plan_change_text(change, d, to_name)
    if change.cause == TierChange.Cause.PLAN:
        return _("Moved to %(to)s by your paid plan: %(reason)s") % {
            "to": to_name,
            "reason": change.reason,
        }
    if not d:
        return _("Moved to %(to)s") % {"to": to_name}
    measured = {
        "have": _measure(d["basis"], d["qualification"], d.get("currency", "")),
        "need": _measure(d["basis"], d["threshold"], d.get("currency", "")),
        "months": d["window_months"],
        "to": to_name,
        "from": went.name if went else "",
    }
    if _rank(came) > _rank(went):
        return (
            ngettext(
                "Welcome to %(to)s: %(have)s in the last %(months)s month reached the "
                "%(need)s it needs.",
                "Welcome to %(to)s: %(have)s in the last %(months)s months reached the "
                "%(need)s it needs.",
                measured["months"],
            )
            % measured
        )
    return (
        ngettext(
            "Moved from %(from)s to %(to)s at the review: after its guaranteed period, %(have)s in "
            "the last %(months)s month was below the %(need)s %(from)s needs.",
            "Moved from %(from)s to %(to)s at the review: after its guaranteed period, %(have)s in "
            "the last %(months)s months was below the %(need)s %(from)s needs.",
            measured["months"],
        )
        % measured
    )


def _plan_change_text(change: TierChange, d: dict, to_name: str) -> str:
    """A move caused by a paid membership (loyalty/memberships.py) in words."""
    words = {"plan": d.get("plan", ""), "to": to_name, "reason": change.reason,
             "return": d.get("return_id", "")}  # fmt: skip
    event = d["event"]
    if event == "started":
        words["date"] = date_text(datetime.fromisoformat(d["until"])) if d.get("until") else ""
        return _("Welcome to %(plan)s: you hold %(to)s until %(date)s.") % words
    if event == "ended":
        return (
            _("Your %(plan)s membership ended: you are back in %(to)s, the tier you earned.")
            % words
        )
    if event == "returned":
        return (
            _("Your %(plan)s membership was returned (%(return)s): you are now in %(to)s.") % words
        )
    if change.reason:
        return (
            _(
                "Your %(plan)s membership was cancelled by our team: %(reason)s. "
                "You are now in %(to)s."
            )
            % words
        )
    return _("Your %(plan)s membership was cancelled: you are now in %(to)s.") % words


def _details(settings: ProgramSettings, qualification: Decimal, threshold: Decimal) -> dict:
    return {
        "basis": settings.tier_basis,
        "qualification": str(qualification),
        "threshold": str(threshold),
        "window_months": settings.tier_window_months,
        "currency": settings.currency,
    }


# Upgrade at once ----------------------------------------------------------------------


def _tiers_with_state(member: Member, since: datetime, settings: ProgramSettings) -> list[Tier]:
    """Every tier, highest first, each annotated with the member's qualification (`q`) and
    the tier they hold (`held_id`), in ONE query: the subqueries don't depend on the tier
    row, so PostgreSQL runs each once.

    The member's tier row is read FOR UPDATE: if a review batch is deciding about this
    member right now, we wait for it and read what it wrote; if we lock first, the review
    waits for this purchase and then counts it. Either way nobody decides on stale data."""
    own = MemberTier.objects.select_for_update(of=("self",)).filter(member_id=member.pk)
    qualification = (
        Purchase.objects.filter(member_id=member.pk, occurred_at__gt=since)
        .annotate(counts=_purchase_contribution(settings))
        .values("member_id")
        .annotate(q=Sum("counts", output_field=AMOUNT))
        .values("q")
    )
    return list(
        Tier.objects.annotate(
            q=Subquery(qualification, output_field=AMOUNT),
            held_id=Subquery(own.values("tier_id")),
        ).order_by("-rank")
    )


def tier_upgrade_check(
    *,
    member: Member,
    cause: str = TierChange.Cause.PURCHASE,
    settings: ProgramSettings | None = None,
    now: datetime | None = None,
) -> TierChange | None:
    """Move the member up at once, straight to the highest tier their qualification now
    reaches, and record why. Never moves anyone down. Runs inside the caller's transaction
    (after the purchase and its lines are written); on PostgreSQL it costs 1 query when
    nothing changes and 2 when the member moves up (pass `settings` to save loading them).

    The write is also a compare-and-set on the member's row (a member without a row may
    get one from the review meanwhile): if it finds another tier, we read again rather
    than overwrite that decision."""
    from loyalty.rules import loader  # the rules read tiers: imported late, not in a loop

    if not loader.tiers_active():
        return None
    settings = settings or program_settings()
    now = now or timezone.now()
    since = window_start(now, settings)
    for _attempt in range(3):
        every = _tiers_with_state(member, since, settings)
        table = TierTable(active=[t for t in reversed(every) if t.is_active])
        if not table:
            return None
        qualification = _round(every[0].q)
        reached = table.reached(qualification)
        expected = every[0].held_id
        held = next((t for t in every if t.pk == expected), None) if expected else table.entry
        if reached is None or reached.rank <= _rank(held):
            return None
        change = _move_up(
            member=member,
            tier=reached,
            expected_tier_id=expected,
            from_tier_id=held.pk if held else None,
            now=now,
            cause=cause,
            details=_details(settings, qualification, reached.threshold),
        )
        if change is not None:
            return change
    return None


def tiers_upgrade_many(
    *, members: list[Member], settings: ProgramSettings, now: datetime | None = None
) -> dict[int, TierChange]:
    """`tier_upgrade_check` for many members after a batch of their purchases, in three
    queries however many (plus two for each member who moves up): the tiers, the members'
    tier rows (locked, as the single check locks them) and their qualification.
    Returns {member pk: change} for those who moved up."""
    from loyalty.rules import loader

    if not members or not loader.tiers_active():
        return {}
    now = now or timezone.now()
    table = TierTable.cached()
    if not table:
        return {}
    ids = [m.pk for m in members]
    held_ids = dict(
        MemberTier.objects.select_for_update()
        .filter(member_id__in=ids)
        .order_by("member_id")
        .values_list("member_id", "tier_id")
    )
    reached_by = members_qualification(
        since=window_start(now, settings), settings=settings, member_ids=ids
    )
    changes = {}
    for member in members:
        qualification = reached_by.get(member.pk, _round(0))
        reached = table.reached(qualification)
        expected = held_ids.get(member.pk)
        held = table.held(expected)
        if reached is None or reached.rank <= _rank(held):
            continue
        change = _move_up(
            member=member, tier=reached, expected_tier_id=expected,
            from_tier_id=held.pk if held else None, now=now, cause=TierChange.Cause.PURCHASE,
            details=_details(settings, qualification, reached.threshold),
        )  # fmt: skip
        if change is None:  # someone else moved them meanwhile: decide again, singly
            change = tier_upgrade_check(member=member, settings=settings, now=now)
        if change is not None:
            changes[member.pk] = change
    return changes


def _move_up(
    *, member, tier, expected_tier_id, from_tier_id, now, cause, details
) -> TierChange | None:
    """Write the new tier if the member still holds `expected_tier_id`; None if not."""
    until = guarantee_end(tier, now)
    if connection.vendor != "postgresql":
        # SQLite runs one writer at a time, so the plain ORM is already a compare-and-set.
        state = MemberTier.objects.filter(member_id=member.pk).first()
        if state is not None and state.tier_id != expected_tier_id:
            return None
        MemberTier.objects.update_or_create(
            member_id=member.pk,
            defaults={"tier": tier, "since": now, "guaranteed_until": until},
        )
        return TierChange.objects.create(
            member_id=member.pk, from_tier_id=from_tier_id, to_tier=tier, cause=cause,
            details=details, at=now,
        )  # fmt: skip
    states, changes = MemberTier._meta.db_table, TierChange._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            WITH moved AS (
                INSERT INTO {states} (member_id, tier_id, since, guaranteed_until)
                VALUES (%s, %s, %s, %s)
                ON CONFLICT (member_id) DO UPDATE
                   SET tier_id = EXCLUDED.tier_id, since = EXCLUDED.since,
                       guaranteed_until = EXCLUDED.guaranteed_until
                 WHERE {states}.tier_id IS NOT DISTINCT FROM %s
                RETURNING member_id
            )
            INSERT INTO {changes}
                   (member_id, from_tier_id, to_tier_id, cause, reason, details, at)
            SELECT member_id, %s, %s, %s, '', %s::jsonb, %s FROM moved
            RETURNING id
            """,
            [member.pk, tier.pk, now, until, expected_tier_id,
             from_tier_id, tier.pk, cause, json.dumps(details), now],
        )  # fmt: skip
        row = cursor.fetchone()
    if row is None:
        return None
    return TierChange(
        pk=row[0], member_id=member.pk, from_tier_id=from_tier_id, to_tier=tier,
        cause=cause, details=details, at=now,
    )  # fmt: skip


@transaction.atomic(durable=True)
def member_tier_set(*, member: Member, tier: Tier | None, reason: str, staff) -> TierChange:
    """Staff put a member in a tier (up or down) with a reason the member will read. The
    tier gets its guaranteed period from now; the review takes it from there."""
    reason = (reason or "").strip()
    if not reason:
        raise ValueError(_("Give a reason: the member will read it."))
    now = timezone.now()
    # Every member with a tier row has ledger accounts (purchases create them too), so a
    # purchase never holds the member row's first-use lock while it waits for a review
    # batch that holds tier rows: that wait, against the batch's foreign-key checks on the
    # member, would be a deadlock.
    ledger.member_accounts_lock(member)
    state = MemberTier.objects.select_for_update().filter(member_id=member.pk).first()
    before = state.tier_id if state is not None else None
    MemberTier.objects.update_or_create(
        member_id=member.pk,
        defaults={"tier": tier, "since": now, "guaranteed_until": guarantee_end(tier, now)},
    )
    return TierChange.objects.create(
        member=member, from_tier_id=before, to_tier=tier, cause=TierChange.Cause.STAFF,
        reason=reason, staff=staff, at=now,
    )  # fmt: skip


# The periodic review ------------------------------------------------------------------


@dataclass(slots=True)
class ReviewResult:
    """What a review batch (or a whole review, added up) did."""

    up: int = 0
    down: int = 0
    renewed: int = 0  # still qualifying when the guaranteed period ended: a new period
    # Below their tier's threshold but still guaranteed: they move down at a later review
    # unless they qualify again (the back office preview shows it).
    down_later: int = 0
    # Due to move down, but a paid membership holds them at (or above) their tier: they
    # are looked at again at the next review once it has ended.
    held_by_plan: int = 0

    def __iadd__(self, other: "ReviewResult") -> "ReviewResult":
        self.up += other.up
        self.down += other.down
        self.renewed += other.renewed
        self.down_later += other.down_later
        self.held_by_plan += other.held_by_plan
        return self


@dataclass(frozen=True, slots=True)
class _Move:
    member_id: int
    old: Tier | None
    new: Tier | None
    guaranteed_until: datetime | None
    details: dict | None  # None: a renewal of the guaranteed period, not a change
    has_row: bool


def _decide(
    *, member_id, row, qualification, table: TierTable, now, day_start, settings
) -> tuple[_Move | None, bool]:
    """What the review does for one member of a batch: (move or None, below-but-guaranteed)."""
    tier_id, since, guaranteed_until = row if row is not None else (None, None, None)
    held = table.held(tier_id)
    reached = table.reached(qualification)
    if _rank(reached) > _rank(held):
        details = _details(settings, qualification, reached.threshold)
        until = guarantee_end(reached, now)
        return _Move(member_id, held, reached, until, details, row is not None), False
    if row is None or tier_id is None or held is None or (held.is_active and held.threshold <= 0):
        return None, False  # the entry tier (or none) is never reviewed
    keeps = held.is_active and qualification >= held.threshold
    # A tier changed today is not reviewed again today: a second run changes nothing.
    due = (guaranteed_until is None or guaranteed_until <= now) and since < day_start
    if not due:
        return None, not keeps
    if keeps:
        return _Move(member_id, held, held, guarantee_end(held, now), None, True), False
    lower = table.below(held.rank)
    details = _details(settings, qualification, held.threshold)
    return _Move(member_id, held, lower, guarantee_end(lower, now), details, True), False


def _review_batch(*, first, last, table, now, settings, lock) -> tuple[ReviewResult, list]:
    """Decide for members first..last: one query for their tier rows, one aggregate for
    their qualification; the Python below sees only members with a row or a purchase."""
    states = MemberTier.objects.filter(pk__gte=first, pk__lte=last)
    if lock:
        # A purchase moving one of these members up waits for this batch, then re-reads
        # (its write is a compare-and-set), so neither overwrites the other.
        states = states.select_for_update()
    rows = {
        member_id: (tier_id, since, until)
        for member_id, tier_id, since, until in states.values_list(
            "member_id", "tier_id", "since", "guaranteed_until"
        )
    }
    qualifications = members_qualification(
        since=window_start(now, settings), settings=settings, first=first, last=last
    )
    day_start = timezone.localtime(now).replace(hour=0, minute=0, second=0, microsecond=0)
    from loyalty.memberships import paid_floors  # memberships builds on this module

    floors = paid_floors(first=first, last=last, now=now)
    result, moves = ReviewResult(), []
    for member_id in sorted(rows.keys() | qualifications.keys()):
        move, later = _decide(
            member_id=member_id, row=rows.get(member_id),
            qualification=qualifications.get(member_id, Decimal(0)), table=table, now=now,
            day_start=day_start, settings=settings,
        )  # fmt: skip
        result.down_later += later
        if move is None:
            continue
        down = move.details is not None and _rank(move.new) < _rank(move.old)
        if down and floors.get(member_id, -1) >= _rank(move.old):
            result.held_by_plan += 1  # the paid tier holds: no move, no new period
            continue
        moves.append(move)
        if move.details is None:
            result.renewed += 1
        elif _rank(move.new) > _rank(move.old):
            result.up += 1
        else:
            result.down += 1
    return result, moves


def _write_moves(moves: list[_Move], now: datetime) -> None:
    changed = [m for m in moves if m.has_row and m.details is not None]
    MemberTier.objects.bulk_update(
        [
            MemberTier(
                member_id=m.member_id, tier=m.new, since=now, guaranteed_until=m.guaranteed_until
            )
            for m in changed
        ],
        ["tier", "since", "guaranteed_until"],
        batch_size=1000,
    )
    MemberTier.objects.bulk_update(
        [
            MemberTier(member_id=m.member_id, guaranteed_until=m.guaranteed_until)
            for m in moves
            if m.details is None
        ],
        ["guaranteed_until"],
        batch_size=1000,
    )
    inserted = _insert_new_states([m for m in moves if not m.has_row], now)
    TierChange.objects.bulk_create(
        [
            TierChange(
                member_id=m.member_id, from_tier=m.old, to_tier=m.new,
                cause=TierChange.Cause.REVIEW, details=m.details, at=now,
            )
            for m in moves
            if m.details is not None and (m.has_row or m.member_id in inserted)
        ],
        batch_size=1000,
    )  # fmt: skip


def _insert_new_states(moves: list[_Move], now: datetime) -> set[int]:
    """Insert rows for members who had none. A purchase may have inserted one meanwhile
    (it moved the member up itself): that row wins. Returns the member ids inserted."""
    inserted: set[int] = set()
    table, ops = MemberTier._meta.db_table, connection.ops
    for start in range(0, len(moves), 1000):
        chunk = moves[start : start + 1000]
        values = ", ".join(["(%s, %s, %s, %s)"] * len(chunk))
        params: list = []
        for m in chunk:
            params += [
                m.member_id, m.new.pk, ops.adapt_datetimefield_value(now),
                ops.adapt_datetimefield_value(m.guaranteed_until),
            ]  # fmt: skip
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {table} (member_id, tier_id, since, guaranteed_until) "
                f"VALUES {values} ON CONFLICT (member_id) DO NOTHING RETURNING member_id",
                params,
            )
            inserted.update(row[0] for row in cursor.fetchall())
    return inserted


def _log_progress(done: int, total: int, result: ReviewResult) -> None:
    logger.info(
        "review: %s/%s members, %s down, %s up", f"{done:,}", f"{total:,}",
        f"{result.down:,}", f"{result.up:,}",
    )  # fmt: skip


def tiers_review(
    *,
    now: datetime | None = None,
    batch_size: int | None = None,
    progress: Callable[[int, int, ReviewResult], None] | None = None,
) -> ReviewResult:
    """The periodic tier review, set-based: members in batches of `batch_size` (by id,
    settings.JOBS_BATCH_SIZE by default), each batch in its own transaction with one
    query for the tier rows, one aggregate for qualification and bulk writes, so a crash
    loses at most a batch and a rerun finishes the job.

    Applies upgrades that were missed (e.g. a threshold lowered by staff); moves a member
    down ONE level only once their tier's guaranteed period has ended and they no longer
    qualify (the lower tier gets its own guaranteed period); renews the period of members
    who still qualify. Running it twice the same day changes nothing the second time.
    Reports `progress(done, total, result)` after each batch (default: the log)."""
    now = now or timezone.now()
    settings = program_settings()
    table = TierTable.load()
    if not table:
        return ReviewResult()

    def review(*, first, last, now):
        result, moves = _review_batch(
            first=first, last=last, table=table, now=now, settings=settings, lock=True
        )
        _write_moves(moves, now)
        return result

    return ledger_bulk.in_batches(
        review, now=now, batch_size=batch_size, progress=progress or _log_progress,
        result=ReviewResult(),
    )  # fmt: skip


def tiers_review_preview(
    *, table: TierTable, now: datetime | None = None, batch_size: int | None = None
) -> ReviewResult:
    """What the next review would do with the tiers in `table` (e.g. an edit not saved yet):
    the review's own decisions, computed batch by batch, with nothing locked or written."""
    now = now or timezone.now()
    settings = program_settings()
    total = ReviewResult()
    if not table:
        return total
    for first, last, _count in ledger_bulk.member_batches(
        batch_size or django_settings.JOBS_BATCH_SIZE
    ):
        result, _moves = _review_batch(
            first=first, last=last, table=table, now=now, settings=settings, lock=False
        )
        total += result
    return total


# What members see ---------------------------------------------------------------------


@dataclass(frozen=True)
class TierProgress:
    """Everything the dashboard and the POS summary show about a member's tier."""

    table: TierTable
    basis: str
    currency: str
    window_months: int
    qualification: Decimal
    tier: Tier | None
    since: datetime | None
    guaranteed_until: datetime | None
    next_tier: Tier | None
    needed: Decimal | None  # more spend/points to reach next_tier
    by: datetime | None  # ... before purchases start leaving the window
    keep_needed: Decimal | None = None  # at risk: more needed to keep `tier` ...
    keep_by: datetime | None = None  # ... by this review
    drop_to: Tier | None = None
    earned_tier: Tier | None = None  # without the paid membership (same as `tier` if none)
    membership: object | None = None  # memberships.MembershipNow running now, if any

    @property
    def paid(self) -> bool:
        """Whether the tier shown is the one the paid membership grants (above the earned)."""
        return self.tier is not None and _rank(self.tier) > _rank(self.earned_tier)

    @property
    def has_tiers(self) -> bool:
        return bool(self.table)

    @property
    def multiplier(self) -> Decimal:
        """What the next purchase earns, base = 1: the tier's multiplier plus the extra of a
        paid plan running now (each adds its part of the base points)."""
        value = self.tier.earn_multiplier if self.tier is not None else Decimal(1)
        if self.membership is not None:
            value += self.membership.plan.earn_multiplier - 1
        return value

    @property
    def at_risk(self) -> bool:
        return self.keep_needed is not None

    @property
    def is_top(self) -> bool:
        return self.tier is not None and self.next_tier is None

    @property
    def percent(self) -> int:
        if self.next_tier is None or self.next_tier.threshold <= 0:
            return 100
        return min(100, int(self.qualification * 100 / self.next_tier.threshold))

    def _shown(self, value: Decimal) -> str:
        return _measure(self.basis, value, self.currency)

    @property
    def multiplier_text(self) -> str:
        return _("Your next purchase earns %(m)s× points.") % {
            "m": multiplier_text(self.multiplier)
        }

    @property
    def measured_text(self) -> str:
        """ "412.00 EUR of 1,000.00 EUR in the last 12 months": the progress bar in words."""
        if self.next_tier is None:
            return ""
        return ngettext(
            "%(have)s of %(need)s in the last %(months)s month",
            "%(have)s of %(need)s in the last %(months)s months",
            self.window_months,
        ) % {
            "have": self._shown(self.qualification),
            "need": self._shown(self.next_tier.threshold),
            "months": self.window_months,
        }

    @property
    def goal_text(self) -> str:
        """ "Spend 120.00 EUR more by 31 December 2027 to reach VIB"."""
        if self.next_tier is None or self.needed is None:
            return ""
        words = {"amount": self._shown(self.needed), "date": date_text(self.by),
                 "tier": self.next_tier.name}  # fmt: skip
        if self.basis == TierBasis.POINTS:
            return _("Earn %(amount)s more by %(date)s to reach %(tier)s.") % words
        return _("Spend %(amount)s more by %(date)s to reach %(tier)s.") % words

    @property
    def keep_text(self) -> str:
        """ "Spend 80.00 EUR more by 31 December to keep VIB" (only when at risk)."""
        if not self.at_risk:
            return ""
        words = {"amount": self._shown(self.keep_needed), "date": date_text(self.keep_by),
                 "tier": self.tier.name,
                 "lower": self.drop_to.name if self.drop_to else _("no tier")}  # fmt: skip
        if self.basis == TierBasis.POINTS:
            text = _("Earn %(amount)s more by %(date)s to keep %(tier)s.") % words
        else:
            text = _("Spend %(amount)s more by %(date)s to keep %(tier)s.") % words
        return text + " " + _("Otherwise the review then moves you to %(lower)s.") % words


def _kept_at(member: Member, deadline: datetime, settings: ProgramSettings) -> Decimal:
    """Qualification the member will still have at the review on `deadline`'s day if they
    buy nothing more (purchases leaving the window before then no longer count)."""
    day_end = timezone.localtime(deadline).replace(hour=23, minute=59, second=59)
    return member_qualification(
        member=member, since=window_start(day_end, settings), settings=settings
    )[0]


def tier_progress(
    *,
    member: Member,
    settings: ProgramSettings | None = None,
    table: TierTable | None = None,
    now: datetime | None = None,
    membership=None,
) -> TierProgress:
    """The member's tier, what reaching the next one takes and by when, and whether the
    tier is at risk at its next review (and what keeps it). 2 queries (1 with no tiers),
    3 when the guaranteed period ends within the warning window.

    `membership` (memberships.membership_now) is the paid membership running now: the
    tier shown is the higher of the earned one and the one it grants, held until the
    membership ends, and a tier it holds is not at risk before then."""
    settings = settings or program_settings()
    now = now or timezone.now()
    table = table if table is not None else TierTable.cached()
    base = {"table": table, "basis": settings.tier_basis, "currency": settings.currency,
            "window_months": settings.tier_window_months, "membership": membership}  # fmt: skip
    if not table:
        return TierProgress(
            **base, qualification=Decimal(0), tier=None, since=None, guaranteed_until=None,
            next_tier=None, needed=None, by=None,
        )  # fmt: skip
    since = window_start(now, settings)
    contribution = _purchase_contribution(settings)
    own = MemberTier.objects.filter(member_id=OuterRef("pk"))
    counted = Purchase.objects.filter(member_id=OuterRef("pk"), occurred_at__gt=since).annotate(
        counts=contribution
    )
    row = (
        Member.objects.filter(pk=member.pk)
        .annotate(
            q=Subquery(
                counted.values("member_id")
                .annotate(s=Sum("counts", output_field=AMOUNT))
                .values("s"),
                output_field=AMOUNT,
            ),
            oldest=Subquery(
                counted.filter(counts__gt=0).order_by("occurred_at").values("occurred_at")[:1]
            ),
            tier_id=Subquery(own.values("tier_id")),
            tier_since=Subquery(own.values("since")),
            guaranteed_until=Subquery(own.values("guaranteed_until")),
        )
        .values("q", "oldest", "tier_id", "tier_since", "guaranteed_until")
        .get()
    )
    qualification = _round(row["q"])
    earned = tier = table.held(row["tier_id"])
    since, guaranteed_until = row["tier_since"], row["guaranteed_until"]
    paid = membership.tier if membership is not None else None
    paid = table.by_pk.get(paid.pk, paid) if paid is not None else None
    if paid is not None and _rank(paid) > _rank(earned):
        tier, since, guaranteed_until = paid, membership.membership.starts_at, membership.until
    elif paid is not None and _rank(paid) == _rank(earned):
        guaranteed_until = max(guaranteed_until or membership.until, membership.until)
    next_tier = table.above(_rank(tier))
    needed = by = None
    if next_tier is not None:
        needed = max(next_tier.threshold - qualification, CENT)
        # Until the oldest counted purchase leaves the window, everything counted still
        # counts: spending `needed` before then reaches the next tier.
        by = (row["oldest"] or now) + relativedelta(months=settings.tier_window_months)
    progress = TierProgress(
        **base, qualification=qualification, tier=tier, since=since,
        guaranteed_until=guaranteed_until, next_tier=next_tier, needed=needed, by=by,
        earned_tier=earned,
    )  # fmt: skip
    if paid is not None and _rank(paid) >= _rank(earned):
        return progress  # the review does not move a member below a tier their plan holds
    risk = _risk(member, progress, settings, now)
    if risk is None:
        return progress
    keep_needed, keep_by, drop_to = risk
    return TierProgress(
        **{**progress.__dict__, "keep_needed": keep_needed, "keep_by": keep_by, "drop_to": drop_to}
    )


def _risk(member, progress: TierProgress, settings, now):
    tier, until = progress.tier, progress.guaranteed_until
    if tier is None or until is None or tier.threshold <= 0:
        return None
    if until > now + timedelta(days=settings.tier_notice_days):
        return None
    kept = _kept_at(member, max(until, now), settings)
    if kept >= tier.threshold and tier.is_active:
        return None
    return tier.threshold - kept, max(until, now), progress.table.below(tier.rank)


@dataclass(frozen=True, slots=True)
class AtRisk:
    member_id: int
    tier: Tier
    drop_to: Tier | None
    review_on: datetime
    kept: Decimal
    needed: Decimal


def tiers_at_risk(*, now: datetime | None = None, settings=None) -> Iterable[AtRisk]:
    """Members whose guaranteed period ends within the warning window and who, buying
    nothing more, would not qualify for their tier at that review — with what keeps it.
    Set-based: one aggregate query per review day in the window."""
    settings = settings or program_settings()
    now = now or timezone.now()
    table = TierTable.load()
    if not table:
        return
    horizon = now + timedelta(days=settings.tier_notice_days)
    # A paid membership running now that holds the member at their tier: the review will
    # not move them while it runs (loyalty/memberships.py), so there is nothing to warn of.
    held_by_plan = (
        Membership.objects.filter(
            member_id=OuterRef("member_id"), starts_at__lte=now, ends_at__gt=now,
            plan__tier__rank__gte=OuterRef("tier__rank"),
        )
        .exclude(status=Membership.Status.CANCELLED)
    )  # fmt: skip
    due = (
        MemberTier.objects.filter(
            tier__isnull=False, tier__threshold__gt=0, guaranteed_until__lte=horizon
        )
        .exclude(Exists(held_by_plan))
        .order_by("guaranteed_until")
        .values_list("member_id", "tier_id", "guaranteed_until")
    )
    by_day: dict = {}
    for member_id, tier_id, until in due.iterator(chunk_size=5000):
        day = timezone.localdate(max(until, now))
        by_day.setdefault(day, []).append((member_id, tier_id, max(until, now)))
    contribution = _purchase_contribution(settings)
    for day, members in sorted(by_day.items()):
        day_end = timezone.make_aware(datetime.combine(day, datetime.max.time()))
        since = window_start(day_end, settings)
        for start in range(0, len(members), django_settings.JOBS_BATCH_SIZE):
            chunk = members[start : start + django_settings.JOBS_BATCH_SIZE]
            kept = dict(
                Purchase.objects.filter(
                    occurred_at__gt=since, member_id__in=[m for m, _t, _u in chunk]
                )
                .annotate(counts=contribution)
                .values("member_id")
                .annotate(q=Sum("counts", output_field=AMOUNT))
                .order_by()
                .values_list("member_id", "q")
            )
            for member_id, tier_id, review_on in chunk:
                tier = table.by_pk[tier_id]
                q = _round(kept.get(member_id))
                if q < tier.threshold or not tier.is_active:
                    yield AtRisk(member_id, tier, table.below(tier.rank), review_on, q,
                                 tier.threshold - q)  # fmt: skip


def member_tier_changes(*, member: Member):
    return TierChange.objects.filter(member=member).select_related("from_tier", "to_tier")


def multiplier_text(value: Decimal) -> str:
    """1.25 → "1.25", 2.00 → "2" (not "2E+0"), in the reader's locale."""
    value = Decimal(value)
    plain = value.quantize(Decimal(1)) if value == value.to_integral_value() else value.normalize()
    return formats.number_format(plain)


def date_text(value: datetime) -> str:
    return formats.date_format(timezone.localtime(value), "DATE_FORMAT")
