"""Paid memberships (e.g. "Plus", 49 EUR a year): bought at the till as a purchase line with
the plan's SKU, or granted by staff; while one runs, the member holds at least the plan's
tier and earns the plan's extra multiplier (loyalty/rules/engine.py); the periodic job
lapses ended ones and reminds members to renew.

How it hangs together:
- A member's memberships form one unbroken chain: a new term (bought or granted) starts
  where the current one ends, or now when none runs. Each term is its own row, so a return
  of the till purchase shortens exactly the term it bought, and later terms move up.
- What a membership covers is decided by time alone (starts_at ≤ t < ends_at): an offline
  till's purchase made while it ran earns its benefits even when synced after the end,
  and cancelling a membership ends it at that moment (ends_at moves there).
- The tier a member holds is the higher of the tier they earned (loyalty.tiers: their
  MemberTier row, else the entry tier) and the tier their plan grants. A paid tier never
  writes MemberTier: the earned tier goes on being measured, the review does not move a
  member below a tier their membership holds (loyalty.tiers._review_batch), and when the
  membership ends they are back in their earned tier, with a TierChange that says why.
- Tally takes no payments, so it cannot renew a membership by itself: "auto renew" means
  "remind me". Such a membership gets one e-mail before its end asking the member to buy
  the next term at the till or online; without it the membership simply ends.
- The active plans' SKUs are cached in every process like the earning rules
  (loyalty/rules/loader.py, invalidated by any change to a plan or a tier), so a purchase
  without a plan's SKU costs no query to find that out, and a program without plans
  costs nothing at all.
"""

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from dateutil.relativedelta import relativedelta
from django.conf import settings as django_settings
from django.core.mail import EmailMultiAlternatives, get_connection
from django.db import transaction
from django.db.models import Exists, F, OuterRef, Q, Subquery
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from loyalty import ledger, tiers
from loyalty.compiled_query import CompiledQuery
from loyalty.models import (
    Membership,
    MembershipPlan,
    MemberTier,
    Purchase,
    PurchaseLine,
    PurchaseReturn,
    Tier,
    TierChange,
)
from loyalty.money import Money
from loyalty.rules import loader
from loyalty.rules.engine import PlanSpec, normalise
from members.models import Member

logger = logging.getLogger(__name__)

ACTIVE, LAPSED, CANCELLED = (
    Membership.Status.ACTIVE,
    Membership.Status.LAPSED,
    Membership.Status.CANCELLED,
)


# The plans ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanCatalog:
    """Every plan (members keep benefits of a plan taken off sale), and the plans on sale
    by normalised SKU. Empty when the program sells no memberships."""

    by_id: dict[int, PlanSpec]
    for_sale: dict[str, PlanSpec]

    def __bool__(self) -> bool:
        return bool(self.by_id)

    @property
    def grants_tiers(self) -> bool:
        return any(plan.tier is not None for plan in self.by_id.values())

    @property
    def skus(self) -> frozenset[str]:
        """The SKUs of every plan, on sale or not (a return may bring one back)."""
        return frozenset(plan.sku for plan in self.by_id.values())


def _spec(plan: MembershipPlan) -> PlanSpec:
    return PlanSpec(
        id=plan.pk,
        code=plan.code,
        name=plan.name,
        sku=normalise(plan.sku),
        earn_multiplier=plan.earn_multiplier,
        bonus_points=plan.bonus_points,
        fee_earns_points=plan.fee_earns_points,
        tier=plan.tier,
        is_active=plan.is_active,
        term_months=plan.term_months,
    )


def _load_catalog() -> PlanCatalog:
    specs = [_spec(plan) for plan in MembershipPlan.objects.select_related("tier").order_by("pk")]
    return PlanCatalog(
        by_id={spec.id: spec for spec in specs},
        for_sale={spec.sku: spec for spec in specs if spec.is_active},
    )


def plan_catalog() -> PlanCatalog:
    """The plans, cached in this process under the earning rules' generation: no query
    once loaded, until a plan or a tier changes (loyalty/receivers.py)."""
    return loader._cached("plans", _load_catalog, _load_catalog)


def _higher(a: Tier | None, b: Tier | None) -> Tier | None:
    if a is None:
        return b
    if b is None:
        return a
    return b if b.rank > a.rank else a


def effective_tier(earned: Tier | None, plan: PlanSpec | None) -> Tier | None:
    """The tier a member holds: the higher of what they earned and what their plan grants."""
    return _higher(earned, plan.tier if plan is not None else None)


def covering(at: datetime) -> Q:
    """Memberships running at `at` (a cancelled one ended when it was cancelled)."""
    return Q(starts_at__lte=at, ends_at__gt=at) & ~Q(status=CANCELLED)


# Reads --------------------------------------------------------------------------------


def member_plan_at(
    *, member: Member, at: datetime, catalog: PlanCatalog | None = None
) -> PlanSpec | None:
    """The plan whose benefits `member` held at `at`: one query, none when the program
    has no plans."""
    catalog = catalog if catalog is not None else plan_catalog()
    if not catalog or member.pk is None:
        return None
    found = _latest_membership_covering.run(member.pk, at)
    return catalog.by_id.get(found[0].plan_id) if found else None


# Every purchase in a program that sells plans asks this: from SQL compiled once
# (loyalty.compiled_query), as building the query cost more CPU than running it.
_latest_membership_covering = CompiledQuery(
    lambda member_id, at: (
        Membership.objects.filter(covering(at), member_id=member_id)
        .order_by("-starts_at")
        .only("plan_id")[:1]
    ),
    int,
    datetime,
)


def members_plans_at(*, at: dict[int, datetime], catalog: PlanCatalog) -> dict[int, PlanSpec]:
    """`member_plan_at` for many members, each at their own moment ({member pk: at}), in
    one query (none when the program has no plans). Members without a plan are left out."""
    if not catalog or not at:
        return {}
    rows = (
        Membership.objects.filter(
            member_id__in=list(at), starts_at__lte=max(at.values()), ends_at__gt=min(at.values())
        )
        .exclude(status=CANCELLED)
        .order_by("-starts_at")
        .values_list("member_id", "plan_id", "starts_at", "ends_at")
    )
    latest: dict[int, int] = {}  # the plan of the latest-starting membership covering `at`
    for member_id, plan_id, starts_at, ends_at in rows:
        if member_id not in latest and starts_at <= at[member_id] < ends_at:
            latest[member_id] = plan_id
    found = {pk: catalog.by_id.get(plan_id) for pk, plan_id in latest.items()}
    return {pk: spec for pk, spec in found.items() if spec is not None}


@dataclass(frozen=True)
class MembershipNow:
    """A member's running membership, as the portal and the till show it."""

    membership: Membership  # the term running now
    plan: MembershipPlan
    until: datetime  # the end of the chain: renewals already bought included
    auto_renew: bool

    @property
    def tier(self) -> Tier | None:
        return self.plan.tier

    @property
    def advantages(self) -> list[str]:
        return plan_advantages(self.plan)


CURRENT, UNTIL, RENEW = "current_membership_id", "membership_until", "membership_auto_renew"


def _no_plans() -> bool:
    """Whether the program is known to have no plan, and so no membership (a membership's
    plan is PROTECTed): known when this process keeps the catalog (a purchase loads it)."""
    catalog = loader.kept("plans")
    return catalog is not None and not catalog.by_id


def with_membership(queryset, *, now: datetime | None = None):
    """Members with their running membership annotated (its id, the end of its chain and
    whether it reminds to renew), so a page or the till's summary learns it in the query
    that reads the member anyway: no query of its own for members without one. A program
    known to have no plan has no memberships: nothing to annotate (membership_now knows)."""
    if _no_plans():
        return queryset
    return _membership_annotated(queryset, now=now or timezone.now())


def _membership_annotated(queryset, *, now: datetime):
    current = Membership.objects.filter(covering(now), member_id=OuterRef("pk")).order_by(
        "-starts_at", "-pk"
    )
    chain = (
        Membership.objects.filter(member_id=OuterRef("pk"), ends_at__gt=now)
        .exclude(status=CANCELLED)
        .order_by("-ends_at", "-pk")
    )
    return queryset.annotate(
        **{
            CURRENT: Subquery(current.values("pk")[:1]),
            UNTIL: Subquery(chain.values("ends_at")[:1]),
            RENEW: Subquery(chain.values("auto_renew")[:1]),
        }
    )


# The till's lookup by card, as `with_membership(...).filter(card_number=...)` reads it,
# from SQL compiled once (loyalty.compiled_query): building the three subqueries cost
# Django ~3 ms of CPU a lookup, PostgreSQL a fraction of that.
_members_by_card = CompiledQuery(
    lambda card: Member.objects.select_related("user").filter(card_number=card), str
)
_members_by_card_with_membership = CompiledQuery(
    lambda card, now: _membership_annotated(
        Member.objects.select_related("user").filter(card_number=card), now=now
    ),
    str,
    datetime,
)


def member_by_card(card_number: str) -> Member | None:
    """The member with this card, read as `with_membership` reads members, in one query."""
    if _no_plans():
        found = _members_by_card.run(card_number)
    else:
        found = _members_by_card_with_membership.run(card_number, timezone.now())
    return found[0] if found else None


def membership_now(*, member: Member, now: datetime | None = None) -> MembershipNow | None:
    """The member's membership running now, with the end of its chain. For a member read
    through `with_membership`: no query without a membership, one with; otherwise one."""
    if member.pk is None or _no_plans():
        return None
    if hasattr(member, CURRENT):
        if getattr(member, CURRENT) is None:
            return None
        current = Membership.objects.select_related("plan__tier").get(pk=getattr(member, CURRENT))
        return MembershipNow(
            membership=current,
            plan=current.plan,
            until=getattr(member, UNTIL) or current.ends_at,
            auto_renew=bool(getattr(member, RENEW)),
        )
    now = now or timezone.now()
    rows = list(
        Membership.objects.filter(member_id=member.pk, ends_at__gt=now)
        .exclude(status=CANCELLED)
        .select_related("plan__tier")
        .order_by("starts_at", "pk")
    )
    current = next((m for m in rows if m.starts_at <= now), None)
    if current is None:
        return None
    last = rows[-1]
    return MembershipNow(
        membership=current, plan=current.plan, until=last.ends_at, auto_renew=last.auto_renew
    )


def member_memberships(*, member: Member):
    return (
        Membership.objects.filter(member=member)
        .select_related("plan", "purchase", "staff")
        .order_by("-starts_at", "-pk")
    )


# Words --------------------------------------------------------------------------------


def _date(value: datetime) -> str:
    return tiers.date_text(value)


def plan_advantages(plan: MembershipPlan, *, entry: Tier | None = None, settings=None) -> list[str]:
    """What a plan adds over the free tiers, in words, most valuable first."""
    from loyalty.templatetags.ledger import points as points_text

    lines = []
    tier = plan.tier if plan.tier_id else None
    if tier is not None and (entry is None or tier.rank > entry.rank):
        if settings is not None and tier.threshold > 0:
            lines.append(
                _("%(tier)s status at once, without the %(amount)s it normally takes")
                % {"tier": tier.name, "amount": tiers.measure_text(settings, tier.threshold)}
            )
        else:
            lines.append(_("%(tier)s status at once") % {"tier": tier.name})
    if plan.earn_multiplier > 1:
        extra = plan.earn_multiplier - 1
        if tier is not None:
            lines.append(
                _(
                    "+%(extra)s× points on every purchase on top of %(tier)s's %(m)s×: "
                    "%(total)s× the base points"
                )
                % {
                    "extra": tiers.multiplier_text(extra),
                    "tier": tier.name,
                    "m": tiers.multiplier_text(tier.earn_multiplier),
                    "total": tiers.multiplier_text(tier.earn_multiplier + extra),
                }
            )
        else:
            lines.append(
                _("+%(extra)s× points on every purchase, on top of your tier's multiplier")
                % {"extra": tiers.multiplier_text(extra)}
            )
    if plan.bonus_points:
        lines.append(
            _("%(n)s bonus points when you join and each time you renew")
            % {"n": points_text(plan.bonus_points)}
        )
    lines.extend(plan.perk_lines)
    return lines


@dataclass(frozen=True)
class PlanOffer:
    plan: MembershipPlan
    fee: Money
    advantages: list[str]


def plans_offer(*, table: tiers.TierTable | None = None, settings=None) -> list[PlanOffer]:
    """The plans on sale with what each adds over the free tiers (one query)."""
    settings = settings or ledger.program_settings()
    entry = table.entry if table is not None else None
    return [
        PlanOffer(
            plan,
            Money.of(plan.fee, settings.currency),
            plan_advantages(plan, entry=entry, settings=settings),
        )
        for plan in MembershipPlan.objects.filter(is_active=True).select_related("tier")
    ]


# Writes -------------------------------------------------------------------------------


class MembershipError(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def _length(start: datetime, months: int) -> datetime:
    return start + relativedelta(months=months)


def _chain_end(member_id: int, at: datetime) -> Membership | None:
    """The member's last term still running (or starting) after `at`, if any."""
    return (
        Membership.objects.filter(member_id=member_id, ends_at__gt=at)
        .exclude(status=CANCELLED)
        .order_by("-ends_at", "-pk")
        .first()
    )


def _tier_moved(
    *, member_id: int, before: Tier | None, after: Tier | None, plan_name: str, event: str,
    at: datetime, reason: str = "", staff=None, extra: dict | None = None,
) -> TierChange | None:  # fmt: skip
    """Record a move of the tier the member holds caused by their plan (start or end)."""
    if (before.pk if before else None) == (after.pk if after else None):
        return None
    return TierChange.objects.create(
        member_id=member_id, from_tier=before, to_tier=after, cause=TierChange.Cause.PLAN,
        reason=reason, staff=staff, at=at,
        details={"event": event, "plan": plan_name, **(extra or {})},
    )  # fmt: skip


MAX_TERMS = 10  # at once, on one line: a typo at the till must not sell a century


def plan_lines_check(lines: Iterable, catalog: PlanCatalog) -> None:
    """A membership is sold in whole terms, up to MAX_TERMS at once: refuse a plan line
    with another quantity (before anything is written)."""
    from loyalty.purchases import PlanQuantityInvalid

    for index, line in enumerate(lines):
        plan = catalog.for_sale.get(normalise(line.sku))
        if plan is None:
            continue
        quantity = Decimal(line.quantity)
        if quantity != quantity.to_integral():
            raise PlanQuantityInvalid(
                _("%(plan)s is sold in whole terms: a quantity of %(q)s cannot be bought.")
                % {"plan": plan.name, "q": line.quantity},
                errors={f"lines[{index}].quantity": [_("Use a whole number of terms.")]},
            )
        if quantity > MAX_TERMS:
            raise PlanQuantityInvalid(
                _("%(plan)s is sold for at most %(n)s terms at once.")
                % {"plan": plan.name, "n": MAX_TERMS},
                errors={
                    f"lines[{index}].quantity": [
                        _("At most %(n)s terms at once.") % {"n": MAX_TERMS}
                    ]
                },
            )


def memberships_from_purchase(
    *, purchase: Purchase, lines: list[PurchaseLine], catalog: PlanCatalog
) -> list[Membership]:
    """Start or extend the member's membership for each plan line of a purchase (one term
    per unit), inside purchase_record's transaction, after its lines are written. The
    member's accounts are locked by the caller, so two tills selling the same member a
    plan queue up and chain their terms. Idempotent with the purchase: a receipt is
    recorded once, and a line buys at most one term row (unique purchase_line).
    Costs nothing when no line has a plan's SKU (the SKUs are cached)."""
    bought = [
        (line, catalog.for_sale[normalise(line.sku)])
        for line in lines
        if normalise(line.sku) in catalog.for_sale
    ]
    if not bought:
        return []
    at = purchase.occurred_at
    previous = _chain_end(purchase.member_id, at)
    before = None
    if previous is None or previous.starts_at > at:
        before = tiers.member_tier(member=purchase.member, at=at)
    start = max(at, previous.ends_at) if previous is not None else at
    created = []
    for line, plan in bought:
        months = plan.term_months * int(line.quantity)
        membership = Membership.objects.create(
            member_id=purchase.member_id, plan_id=plan.id, starts_at=start,
            ends_at=_length(start, months), months=months, source=Membership.Source.PURCHASE,
            purchase=purchase, purchase_line=line, renewed_from=previous,
        )  # fmt: skip
        created.append(membership)
        previous, start = membership, membership.ends_at
    first = created[0]
    if first.starts_at <= at:  # nothing was running: the plan's tier applies from now
        plan = catalog.by_id[first.plan_id]
        _tier_moved(
            member_id=purchase.member_id, before=before, after=_higher(before, plan.tier),
            plan_name=plan.name, event="started", at=at,
            extra={"until": created[-1].ends_at.isoformat()},
        )  # fmt: skip
    return created


def _returned_end(membership: Membership, kept: Decimal, bought: Decimal, now: datetime):
    """Where a term bought as `bought` units ends once only `kept` of them are kept."""
    if kept <= 0:
        return max(membership.starts_at, min(now, membership.ends_at))
    term = membership.months / bought  # months per unit
    if kept == kept.to_integral() and term == int(term):
        full = _length(membership.starts_at, int(kept * term))
    else:  # a part of a unit: in proportion to the time bought
        whole = _length(membership.starts_at, membership.months) - membership.starts_at
        full = membership.starts_at + whole * float(kept / bought)
    return max(min(full, membership.ends_at), min(now, membership.ends_at))


def memberships_on_return(
    *,
    purchase_return: PurchaseReturn,
    wanted: list[tuple[PurchaseLine, Decimal]],
    returned_before: dict[int, Decimal],
    catalog: PlanCatalog | None = None,
    now: datetime | None = None,
) -> list[Membership]:
    """A return of plan lines shortens the terms they bought in proportion (all of a line:
    cancelled), and later terms of the chain move up by as much. The member's tier follows
    at once, with a TierChange that names the return. The points the plan gave (its bonus
    on that line) are taken back by the return itself, like any line's points.
    Runs in purchase_return's transaction, with the member's accounts locked; costs no
    query unless a returned line has a plan's SKU."""
    catalog = catalog if catalog is not None else plan_catalog()
    lines = [(line, qty) for line, qty in wanted if normalise(line.sku) in catalog.skus]
    if not lines:
        return []
    by_line = {
        m.purchase_line_id: m
        for m in Membership.objects.select_for_update()
        .filter(purchase_line__in=[line.pk for line, _qty in lines])
        .exclude(status=CANCELLED)
    }
    if not by_line:
        return []
    now = now or timezone.now()
    purchase = purchase_return.purchase
    member = purchase.member
    before = tiers.member_tier(member=member, at=now)
    changed = []
    for line, qty in lines:
        membership = by_line.get(line.pk)
        if membership is None or membership.ends_at <= now:
            continue  # already over: the return takes back only the points
        kept = line.quantity - returned_before.get(line.pk, Decimal(0)) - qty
        old_end = membership.ends_at
        new_end = _returned_end(membership, kept, line.quantity, now)
        membership.ends_at = new_end
        membership.end_reason = _("Return %(r)s of purchase %(p)s") % {
            "r": purchase_return.return_id,
            "p": purchase.receipt_id,
        }
        if kept <= 0:
            membership.status, membership.ended_at = CANCELLED, now
        elif new_end <= now:
            membership.status, membership.ended_at = LAPSED, now
        membership.save(update_fields=["ends_at", "status", "ended_at", "end_reason"])
        shift = old_end - new_end
        if shift:  # renewals queued after this term start earlier by as much
            Membership.objects.filter(
                member_id=member.pk, starts_at__gte=old_end, starts_at__gt=now, status=ACTIVE
            ).exclude(pk=membership.pk).update(
                starts_at=F("starts_at") - shift, ends_at=F("ends_at") - shift
            )
        changed.append(membership)
    if not changed:
        return []
    after = tiers.member_tier(member=member, at=now)
    plan = catalog.by_id.get(changed[0].plan_id)
    if plan is not None:
        _tier_moved(
            member_id=member.pk, before=before, after=after, plan_name=plan.name,
            event="returned", at=now, extra={"return_id": purchase_return.return_id},
        )  # fmt: skip
    return changed


@transaction.atomic(durable=True)
def membership_grant(
    *,
    member: Member,
    plan: MembershipPlan,
    months: int,
    reason: str,
    staff,
    now: datetime | None = None,
) -> Membership:
    """Staff give a member `months` of a plan (goodwill, a prize, a correction) with a
    reason kept for audit. Chained like a purchase: it starts when the running membership
    ends, or now. No bonus points: those come with a purchase."""
    reason = (reason or "").strip()
    if not reason:
        raise MembershipError(_("Give a reason: it is kept with the membership."))
    if months < 1:
        raise MembershipError(_("Grant at least one month."))
    now = now or timezone.now()
    ledger.member_accounts_lock(member)  # the order purchases lock in: one chain at a time
    previous = _chain_end(member.pk, now)
    before = tiers.member_tier(member=member, at=now)
    start = max(now, previous.ends_at) if previous is not None else now
    membership = Membership.objects.create(
        member=member, plan=plan, starts_at=start, ends_at=_length(start, months), months=months,
        source=Membership.Source.STAFF, staff=staff, reason=reason, renewed_from=previous,
    )  # fmt: skip
    if start <= now:
        _tier_moved(
            member_id=member.pk, before=before, after=_higher(before, plan.tier),
            plan_name=plan.name, event="started", at=now, staff=staff,
            extra={"until": membership.ends_at.isoformat()},
        )  # fmt: skip
    return membership


@transaction.atomic(durable=True)
def membership_cancel(
    *, membership: Membership, reason: str, staff, now: datetime | None = None
) -> list[Membership]:
    """Staff end a membership now, with the renewals that follow it, and a reason the
    member reads with the tier change. The member is back in their earned tier at once.
    A term already over cannot be cancelled."""
    reason = (reason or "").strip()
    if not reason:
        raise MembershipError(_("Give a reason: the member will read it."))
    now = now or timezone.now()
    member = membership.member
    ledger.member_accounts_lock(member)
    rows = list(
        Membership.objects.select_for_update()
        .filter(member_id=member.pk, status=ACTIVE, ends_at__gt=now)
        .filter(Q(pk=membership.pk) | Q(starts_at__gte=membership.starts_at))
        .order_by("starts_at", "pk")
    )
    if not any(m.pk == membership.pk for m in rows):
        raise MembershipError(_("This membership has already ended."))
    before = tiers.member_tier(member=member, at=now)
    for m in rows:
        m.status, m.ended_at, m.ended_by, m.end_reason = CANCELLED, now, staff, reason
        m.ends_at = max(m.starts_at, min(now, m.ends_at))
    Membership.objects.bulk_update(
        rows, ["status", "ended_at", "ended_by", "end_reason", "ends_at"]
    )
    after = tiers.member_tier(member=member, at=now)
    _tier_moved(
        member_id=member.pk, before=before, after=after, plan_name=membership.plan.name,
        event="cancelled", at=now, reason=reason, staff=staff,
    )  # fmt: skip
    return rows


@transaction.atomic(durable=True)
def membership_reminders_set(*, member: Member, on: bool, now: datetime | None = None) -> int:
    """The member turns renewal reminders on or off for their running membership."""
    now = now or timezone.now()
    return Membership.objects.filter(member=member, status=ACTIVE, ends_at__gt=now).update(
        auto_renew=on
    )


# The periodic job ---------------------------------------------------------------------


@dataclass(slots=True)
class RenewalsResult:
    lapsed: int = 0  # terms that ended and were closed
    tiers_restored: int = 0  # members back in their earned tier
    reminded: int = 0  # renewal reminders e-mailed

    def __iadd__(self, other: "RenewalsResult") -> "RenewalsResult":
        self.lapsed += other.lapsed
        self.tiers_restored += other.tiers_restored
        self.reminded += other.reminded
        return self


def memberships_renew(
    *,
    now: datetime | None = None,
    batch_size: int | None = None,
    progress: Callable[[int, int, RenewalsResult], None] | None = None,
) -> RenewalsResult:
    """The periodic job: close the terms that have ended (status lapsed; members whose
    chain ended return to their earned tier, with a TierChange saying the membership
    ended) and e-mail a renewal reminder to members whose membership ends within its
    plan's notice days (once per term, when it reminds to renew).

    Set-based and idempotent: due terms are picked by an indexed query, `batch_size` at a
    time (settings.JOBS_BATCH_SIZE by default), each batch in its own transaction with a
    constant number of queries; a second run finds nothing due."""
    now = now or timezone.now()
    batch_size = batch_size or django_settings.JOBS_BATCH_SIZE
    catalog = plan_catalog()
    result = RenewalsResult()
    if not catalog:
        if progress:
            progress(0, 0, result)
        return result
    lapse_due = Membership.objects.filter(status=ACTIVE, ends_at__lte=now)
    remind_due = _reminders_due(now, catalog)
    total = lapse_due.count() + remind_due.count()
    done = 0
    if progress:
        progress(done, total, result)
    table = tiers.TierTable.load()
    for ids in _batches(lapse_due, batch_size):
        with transaction.atomic(durable=True):
            result += _lapse_batch(ids, now=now, table=table, catalog=catalog)
        done += len(ids)
        if progress:
            progress(done, total, result)
    for ids in _batches(remind_due, batch_size):
        with transaction.atomic(durable=True):
            result += _remind_batch(ids, now=now)
        done += len(ids)
        if progress:
            progress(done, total, result)
    return result


def _batches(queryset, size: int):
    """The ids of `queryset` in pk order, `size` at a time (keyset paging: one index
    query per batch, and rows changed by an earlier batch are never read twice)."""
    last = 0
    while True:
        ids = list(queryset.filter(pk__gt=last).order_by("pk").values_list("pk", flat=True)[:size])
        if not ids:
            return
        yield ids
        last = ids[-1]


def _lapse_batch(ids: list[int], *, now, table: tiers.TierTable, catalog) -> RenewalsResult:
    """Close a batch of ended terms in 4 queries: lock and read them, mark them lapsed,
    read the members' other terms and earned tiers, write the tier changes."""
    rows = list(
        Membership.objects.select_for_update(skip_locked=True)
        .filter(pk__in=ids, status=ACTIVE, ends_at__lte=now)
        .values_list("pk", "member_id", "plan_id", "ends_at")
    )
    if not rows:
        return RenewalsResult()
    Membership.objects.filter(pk__in=[r[0] for r in rows]).update(
        status=LAPSED, ended_at=F("ends_at")
    )
    member_ids = {member_id for _pk, member_id, _plan, _end in rows}
    others: dict[int, list[tuple[datetime, datetime]]] = {}
    for member_id, starts_at, ends_at in (
        Membership.objects.filter(member_id__in=member_ids, ends_at__gt=F("starts_at"))
        .exclude(status=CANCELLED)
        .exclude(pk__in=[r[0] for r in rows])
        .filter(ends_at__gt=min(r[3] for r in rows))
        .values_list("member_id", "starts_at", "ends_at")
    ):
        others.setdefault(member_id, []).append((starts_at, ends_at))
    earned = {
        member_id: table.held(tier_id)
        for member_id, tier_id in MemberTier.objects.filter(member_id__in=member_ids).values_list(
            "member_id", "tier_id"
        )
    }
    # Per member, only the last term that ended counts: earlier ones were followed by it.
    last: dict[int, tuple[int, datetime]] = {}
    for _pk, member_id, plan_id, ends_at in rows:
        if member_id not in last or ends_at > last[member_id][1]:
            last[member_id] = (plan_id, ends_at)
    changes = []
    for member_id, (plan_id, ends_at) in last.items():
        if any(start <= ends_at < end for start, end in others.get(member_id, ())):
            continue  # a renewal follows on: the membership goes on
        plan = catalog.by_id.get(plan_id)
        held = earned.get(member_id, table.entry)
        paid = table.by_pk.get(plan.tier.pk) if plan is not None and plan.tier else None
        if paid is None or (held is not None and held.rank >= paid.rank):
            continue  # the tier they earned is as good: nothing changes for them
        changes.append(
            TierChange(
                member_id=member_id,
                from_tier=paid,
                to_tier=held,
                cause=TierChange.Cause.PLAN,
                at=ends_at,
                details={"event": "ended", "plan": plan.name},
            )
        )
    TierChange.objects.bulk_create(changes)
    return RenewalsResult(lapsed=len(rows), tiers_restored=len(changes))


def _reminders_due(now: datetime, catalog: PlanCatalog):
    """Terms that end within their plan's notice days, are the last of their chain, ask
    for a reminder and have not had one, of members with an active login."""
    plans = MembershipPlan.objects.filter(pk__in=list(catalog.by_id)).values_list(
        "pk", "renewal_notice_days"
    )
    window = Q()
    for plan_id, days in plans:
        window |= Q(plan_id=plan_id, ends_at__lte=now + timedelta(days=days))
    if not window:
        return Membership.objects.none()
    followed = Membership.objects.filter(
        member_id=OuterRef("member_id"), starts_at__gte=OuterRef("ends_at")
    ).exclude(status=CANCELLED)
    return (
        Membership.objects.filter(
            window, status=ACTIVE, auto_renew=True, reminded_at__isnull=True, ends_at__gt=now,
            member__user__is_active=True,
        )
        .exclude(Exists(followed))
    )  # fmt: skip


def _remind_batch(ids: list[int], *, now) -> RenewalsResult:
    """Mark and e-mail a batch in one transaction: if sending fails, nothing is marked and
    the next run tries again (the pattern of loyalty/notices.py)."""
    rows = list(
        Membership.objects.select_for_update(of=("self",), skip_locked=True)
        .filter(pk__in=ids, reminded_at__isnull=True, status=ACTIVE)
        .select_related("member__user", "plan__tier")
        .order_by("pk")
    )
    if not rows:
        return RenewalsResult()
    Membership.objects.filter(pk__in=[m.pk for m in rows]).update(reminded_at=now)
    program = ledger.program_settings()
    with translation.override(django_settings.LANGUAGE_CODE):
        portal_url = django_settings.SITE_URL + reverse("loyalty:dashboard")
        messages = [_reminder(m, program, portal_url) for m in rows]
    get_connection().send_messages(messages)
    return RenewalsResult(reminded=len(messages))


def _reminder(membership: Membership, program, portal_url: str) -> EmailMultiAlternatives:
    plan = membership.plan
    context = {
        "member": membership.member,
        "plan": plan,
        "ends_on": timezone.localtime(membership.ends_at).date(),
        "advantages": plan_advantages(plan),
        "fee": Money.of(plan.fee, program.currency),
        "program": program,
        "portal_url": portal_url,
    }
    subject = " ".join(
        render_to_string("loyalty/email/membership_renewal_subject.txt", context).split()
    )
    message = EmailMultiAlternatives(
        subject,
        render_to_string("loyalty/email/membership_renewal.txt", context),
        to=[membership.member.user.email],
    )
    message.attach_alternative(
        render_to_string("loyalty/email/membership_renewal.html", context), "text/html"
    )
    return message


# The review ---------------------------------------------------------------------------


def paid_floors(*, first: int, last: int, now: datetime) -> dict[int, int]:
    """{member id: rank of the tier their running plan grants} for members first..last:
    the review never moves them below it. One query; none when no plan grants a tier."""
    if not plan_catalog().grants_tiers:
        return {}
    floors: dict[int, int] = {}
    for member_id, rank in Membership.objects.filter(
        covering(now), member_id__gte=first, member_id__lte=last, plan__tier__isnull=False
    ).values_list("member_id", "plan__tier__rank"):
        floors[member_id] = max(rank, floors.get(member_id, -1))
    return floors
