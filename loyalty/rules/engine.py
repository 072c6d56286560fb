"""The earning rules engine: what a basket or an activity earns, and why, in words.

Pure: no database. The loader (loyalty/rules/loader.py) turns EarningRule rows into
RuleSpecs and reads what a member already got from capped rules; the callers credit.

A purchase earns in this order. Every step's points are rounded once for the whole step
(the program's rounding rule), then split over the lines it covers by largest remainder,
so line points always add up to the total, and the same basket always gives the same
points. (Rounding each line separately would rob a basket of many cheap items.)

1. Money paid: the total minus the value of points used to pay is spread over the lines
   in proportion to their amounts; points are earned on money only.
2. Exclusions: lines matched by an "earns no points" rule drop out, and so do lines that
   buy a paid membership plan (unless the plan's fee earns points). They earn nothing in
   any later step and do not count towards basket amounts.
3. Base: the program's earn rate × the money paid for the remaining lines.
4. Tier: a tier multiplier of 1.25 adds 0.25 × the base points; then a paid plan the
   member holds adds its own extra the same way (a 1.5× plan adds 0.5 × the base).
5. Multipliers: an N× rule adds (N − 1) × the earn rate on the money paid for the lines it
   covers. Multipliers add up, they don't multiply: 2× on fragrance plus 3× on a SKU give
   that bottle 1 + 1 + 2 = 4× the base. Each rule is its own breakdown line, and the
   breakdown lines add up to the total: what members can check on their receipt.
6. Fixed bonuses: basket-amount bonuses, then the first-purchase bonus, then a plan's
   bonus points for each term bought on a plan's line (on that line).
7. Caps: each rule's points are cut to what is left of its per-member limit (points or
   times in the period); a cool-down blocks a rule within N hours of its last award.
Rules of a step run in id order. A rule applies when it is switched on, `occurred_at`
lies in [starts_at, ends_at), the store is one of its stores (or it has none), and the
member's tier ranks at least its minimum tier (if it has one).
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_FLOOR, Decimal

from django.utils import timezone

from loyalty.earning import round_points
from loyalty.explain import breakdown_item_text
from loyalty.models import CapPeriod, RuleKind, RuleTarget

PURCHASE_KINDS = frozenset(
    {RuleKind.MULTIPLIER, RuleKind.EXCLUSION, RuleKind.BASKET_BONUS, RuleKind.FIRST_PURCHASE}
)
ONCE_EVER = "ever"


def normalise(value: str) -> str:
    """Categories, SKUs and activity types match whatever case or separator (space, - or _)
    a till uses: "Gift Cards", "gift-cards" and "GIFT_CARDS" are one category."""
    return "_".join(value.casefold().replace("-", " ").replace("_", " ").split())


def plain(number: Decimal) -> str:
    """2.00 → "2", 1.50 → "1.5", 10 → "10" (never "1E+1")."""
    return f"{Decimal(number).normalize():f}"


def period_bounds(period: str, at: datetime) -> tuple[datetime, datetime] | None:
    """The calendar period (in the program's time zone) that `at` falls in; None for ever."""
    if period == CapPeriod.EVER:
        return None
    local = timezone.localtime(at)
    day = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == CapPeriod.DAY:
        start, end = day, day + timedelta(days=1)
    elif period == CapPeriod.WEEK:
        start = day - timedelta(days=day.weekday())
        end = start + timedelta(days=7)
    elif period == CapPeriod.MONTH:
        start = day.replace(day=1)
        end = (start + timedelta(days=32)).replace(day=1)
    elif period == CapPeriod.YEAR:
        start = day.replace(month=1, day=1)
        end = start.replace(year=start.year + 1)
    else:
        raise ValueError(f"unknown cap period {period!r}")
    return start, end  # zoneinfo works out each end's own UTC offset (DST-safe)


def period_key(period: str, at: datetime) -> str:
    """The key of the period `at` falls in: "ever", or the period and its first day
    ("week:2026-06-08"), so two periods never share a key, even after staff change a
    rule's period."""
    bounds = period_bounds(period, at)
    return ONCE_EVER if bounds is None else f"{period}:{bounds[0].date().isoformat()}"


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """One rule as the engine sees it: a frozen snapshot of an EarningRule row."""

    id: int
    code: str
    version: int
    kind: str
    name: str
    target: str = RuleTarget.BASKET
    values: frozenset[str] = frozenset()  # normalised categories or SKUs
    multiplier: Decimal | None = None
    points: int | None = None
    threshold: Decimal | None = None
    event_type: str = ""  # normalised
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    store_ids: frozenset[int] = frozenset()  # empty: every store
    min_tier_rank: int | None = None
    min_tier_name: str = ""
    cap_points: int | None = None
    cap_times: int | None = None
    cap_period: str = CapPeriod.EVER
    cooldown: timedelta | None = None
    is_active: bool = True

    @property
    def limited(self) -> bool:
        """Whether what a member already got must be read: a cap or a cool-down. (A
        first-purchase bonus asks whether the member has bought before instead.)"""
        return bool(self.cap_points is not None or self.cap_times is not None or self.cooldown)

    def live_at(self, at: datetime) -> bool:
        return (
            self.is_active
            and (self.starts_at is None or self.starts_at <= at)
            and (self.ends_at is None or at < self.ends_at)
        )

    def for_store(self, store_id: int | None) -> bool:
        return not self.store_ids or store_id in self.store_ids

    def for_tier(self, tier) -> bool:
        if self.min_tier_rank is None:
            return True
        return tier is not None and tier.rank >= self.min_tier_rank

    def covers(self, line: "Line") -> bool:
        return self.covers_keys(normalise(line.sku), normalise(line.category))

    def covers_keys(self, sku: str, category: str) -> bool:
        """`covers` for a line's already normalised SKU and category."""
        if self.target == RuleTarget.CATEGORY:
            return category in self.values
        if self.target == RuleTarget.SKU:
            return sku in self.values
        return True

    def slot(self, at: datetime) -> str | None:
        """A key unique per member for once-only awards, so the database refuses a second."""
        if self.kind == RuleKind.FIRST_PURCHASE:
            return ONCE_EVER
        if self.cap_times == 1:
            return period_key(self.cap_period, at)
        return None


@dataclass(frozen=True, slots=True)
class Ruleset:
    rules: tuple[RuleSpec, ...] = ()

    def for_purchase(self) -> list[RuleSpec]:
        return [r for r in self.rules if r.kind in PURCHASE_KINDS]

    def for_activity(self, event_type: str) -> list[RuleSpec]:
        wanted = normalise(event_type)
        return [r for r in self.rules if r.kind == RuleKind.ACTIVITY and r.event_type == wanted]


@dataclass(frozen=True, slots=True)
class Line:
    sku: str
    category: str
    quantity: Decimal
    unit_price: Decimal

    @property
    def amount(self) -> Decimal:
        return self.quantity * self.unit_price


@dataclass(frozen=True, slots=True)
class Basket:
    lines: Sequence[Line]
    paid: Decimal  # money actually paid: total minus the value of points used to pay
    occurred_at: datetime
    store_id: int | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    """What a member already got from one rule: in the rule's current cap period, and
    the times of awards near enough to `at` to fall inside its cool-down."""

    points: int = 0
    times: int = 0
    recent: tuple[datetime, ...] = ()


@dataclass(frozen=True, slots=True)
class PlanSpec:
    """A paid membership plan as the engine sees it (loyalty/memberships.py loads them)."""

    id: int
    code: str
    name: str
    sku: str  # normalised
    earn_multiplier: Decimal = Decimal(1)  # extra, on top of the tier's
    bonus_points: int = 0  # per term bought
    fee_earns_points: bool = False
    tier: object | None = None  # the Tier it grants, if any
    is_active: bool = True  # on sale
    term_months: int = 12


@dataclass(frozen=True, slots=True)
class Context:
    tier: object | None = None  # has .pk, .code, .name, .rank, .earn_multiplier
    first_purchase: bool = False
    usage: Mapping[int, Usage] = field(default_factory=dict)
    # The paid plan whose benefits the member holds when the basket is bought, if any.
    membership: PlanSpec | None = None
    # Plans on sale by normalised SKU: a line with one of these SKUs buys a membership.
    plans: Mapping[str, PlanSpec] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Award:
    """Points a rule gave: one RuleAward row, counted by later caps and cool-downs."""

    rule_id: int
    points: int
    slot: str | None


@dataclass(frozen=True, slots=True)
class Earning:
    points: int
    line_points: list[int]
    breakdown: list[dict]
    awards: list[Award] = field(default_factory=list)


def split(points: int, weights: Sequence[Decimal]) -> list[int]:
    """Split `points` over `weights` exactly, by largest remainder (ties: earlier first).
    With no positive weight the points go evenly, earlier lines taking the odd ones."""
    if not weights:
        return []
    if points < 0:
        return [-share for share in split(-points, weights)]
    total = sum(weights)
    if total <= 0:
        weights, total = [Decimal(1)] * len(weights), Decimal(len(weights))
    raw = [points * Decimal(w) / total for w in weights]
    shares = [int(r.to_integral_value(rounding=ROUND_FLOOR)) for r in raw]
    by_remainder = sorted(range(len(raw)), key=lambda i: (raw[i] - shares[i], -i), reverse=True)
    for i in by_remainder[: points - sum(shares)]:
        shares[i] += 1
    return shares


def _limit(rule: RuleSpec, points: int, usage: Usage, at: datetime) -> tuple[int, bool]:
    """`points` cut to the rule's per-member limits; (points, whether a limit bit)."""
    if rule.cap_times is not None and usage.times >= rule.cap_times:
        return 0, True
    if rule.cooldown and any(abs(t - at) < rule.cooldown for t in usage.recent):
        return 0, True
    if rule.cap_points is not None:
        left = max(0, rule.cap_points - usage.points)
        if points > left:
            return left, True
    return points, False


def _item(rule: RuleSpec, points: int, limited: bool = False, **params) -> dict:
    item = {
        "rule": rule.code,
        "rule_id": rule.id,
        "version": rule.version,
        "kind": str(rule.kind),
        "name": rule.name,
        **params,
        "points": points,
    }
    if limited:
        item["limited"] = True
    item["description"] = breakdown_item_text(item)
    return item


class _Tally:
    """Collects each step's points, their split over lines, breakdown lines and awards."""

    def __init__(self, count: int):
        self.line_points = [0] * count
        self.breakdown: list[dict] = []
        self.awards: list[Award] = []

    def spread(self, points: int, weights: dict[int, Decimal]) -> None:
        if points:
            indexes = sorted(weights)
            for i, share in zip(indexes, split(points, [weights[i] for i in indexes]), strict=True):
                self.line_points[i] += share

    def add(self, item: dict, weights: dict[int, Decimal] | None, award: Award | None = None):
        """A breakdown line; its points are split over `weights` (None: the caller does)."""
        if weights is not None:
            self.spread(item["points"], weights)
        self.breakdown.append(item)
        if award is not None and award.points > 0:
            self.awards.append(award)

    def earning(self) -> Earning:
        total = sum(item["points"] for item in self.breakdown)
        if self.line_points and total != sum(self.line_points):
            raise AssertionError("line points must add up to the total")
        return Earning(total, self.line_points, self.breakdown, self.awards)


def evaluate(basket: Basket, context: Context, ruleset: Ruleset, *, settings) -> Earning:
    """Points for a basket, per line, with a breakdown the member and cashier can read.
    `settings` gives earn_rate, rounding and currency (ProgramSettings)."""
    at, rate, rounding = basket.occurred_at, Decimal(settings.earn_rate), settings.rounding
    rules = [
        r
        for r in sorted(ruleset.for_purchase(), key=lambda r: r.id)
        if r.live_at(at) and r.for_store(basket.store_id) and r.for_tier(context.tier)
    ]
    lines = list(basket.lines)
    amounts = [line.amount for line in lines]
    keys = [(normalise(line.sku), normalise(line.category)) for line in lines]
    lines_total = sum(amounts, Decimal(0))
    paid = max(Decimal(0), Decimal(basket.paid))

    def paid_for(indexes: Iterable[int]) -> Decimal:
        # One division per amount asked, so a whole basket's share is exactly `paid`.
        if lines_total <= 0:
            return Decimal(0)
        return paid * sum((amounts[i] for i in indexes), Decimal(0)) / lines_total

    tally = _Tally(len(lines))
    usage = context.usage

    # 2. Exclusions. A plan's fee earns nothing unless the plan says so: it buys the plan's
    # own benefits (its bonus points, its multiplier), and points on it too would be a
    # discount on the fee that a return would then have to claw back.
    excluded: set[int] = set()
    exclusion_items = []
    plan_lines = {i: context.plans[key[0]] for i, key in enumerate(keys) if key[0] in context.plans}
    for plan in {p.id: p for p in plan_lines.values() if not p.fee_earns_points}.values():
        hit = {i for i, p in plan_lines.items() if p.id == plan.id and amounts[i] > 0}
        if hit:
            exclusion_items.append(_plan_item(plan, "plan_fee", 0))
        excluded |= hit
    for rule in (r for r in rules if r.kind == RuleKind.EXCLUSION):
        hit = {i for i, key in enumerate(keys) if rule.covers_keys(*key) and amounts[i] > 0}
        if hit - excluded:
            exclusion_items.append(_item(rule, 0))
        excluded |= hit
    eligible = [i for i in range(len(lines)) if i not in excluded]
    weights = {i: amounts[i] for i in eligible}

    # 3. Base and 4. tier
    base = round_points(rate * paid_for(eligible), rounding) if eligible else 0
    base_item = {
        "rule": "base",
        "rule_id": None,
        "version": None,
        "kind": "base",
        "rate": plain(rate),
        "currency": settings.currency,
        "points": base,
    }
    base_item["description"] = breakdown_item_text(base_item)
    tier, tier_item = context.tier, None
    if tier is not None and base > 0 and Decimal(tier.earn_multiplier) != 1:
        multiplier = Decimal(tier.earn_multiplier)
        tier_item = {
            "rule": "tier",
            "rule_id": tier.pk,
            "version": None,
            "kind": "tier",
            "name": tier.name,
            "multiplier": plain(multiplier),
            "points": max(-base, round_points(multiplier * base, rounding) - base),
        }
        tier_item["description"] = breakdown_item_text(tier_item)
    if tier_item is not None and tier_item["points"] < 0:
        # A tier that earns less than the base: split what is left, so no line goes negative.
        tally.add(base_item, None)
        tally.spread(base + tier_item["points"], weights)
    else:
        tally.add(base_item, weights)
    for item in exclusion_items:
        tally.add(item, None)
    if tier_item is not None:
        tally.add(tier_item, weights if tier_item["points"] >= 0 else None)

    # 4b. A paid plan's extra multiplier, on the base like the tier's: 1.5 adds 0.5 × base.
    plan = context.membership
    if plan is not None and base > 0 and Decimal(plan.earn_multiplier) > 1:
        multiplier = Decimal(plan.earn_multiplier)
        extra = round_points(multiplier * base, rounding) - base
        if extra > 0:
            tally.add(_plan_item(plan, "plan", extra, multiplier=plain(multiplier)), weights)

    # 5. Multipliers
    for rule in (r for r in rules if r.kind == RuleKind.MULTIPLIER):
        covered = [i for i in eligible if rule.covers_keys(*keys[i]) and amounts[i] > 0]
        if not covered:
            continue
        raw = round_points((rule.multiplier - 1) * rate * paid_for(covered), rounding)
        if raw == 0:
            continue  # too little paid on these lines for an extra point
        points, limited = _limit(rule, raw, usage.get(rule.id, Usage()), at)
        tally.add(
            _item(rule, points, limited, multiplier=plain(rule.multiplier)),
            {i: amounts[i] for i in covered},
            Award(rule.id, points, rule.slot(at)),
        )

    # 6. Fixed bonuses: basket amount, then first purchase
    currency = settings.currency
    for rule in (r for r in rules if r.kind == RuleKind.BASKET_BONUS):
        covered = [i for i in eligible if rule.covers_keys(*keys[i])]
        if not covered or paid_for(covered) < rule.threshold:
            continue
        points, limited = _limit(rule, rule.points, usage.get(rule.id, Usage()), at)
        tally.add(
            _item(rule, points, limited, threshold=f"{rule.threshold:.2f}", currency=currency),
            {i: amounts[i] for i in covered},
            Award(rule.id, points, rule.slot(at)),
        )
    if context.first_purchase:
        for rule in (r for r in rules if r.kind == RuleKind.FIRST_PURCHASE):
            points, limited = _limit(rule, rule.points, usage.get(rule.id, Usage()), at)
            # A basket of only excluded items still gets the welcome: spread it over all lines.
            tally.add(
                _item(rule, points, limited),
                weights or dict(enumerate(amounts)),
                Award(rule.id, points, rule.slot(at)),
            )
    # 6b. A plan's bonus points, per term bought, on the plan's own line: a return of that
    # line takes them back in proportion, like any line's points.
    for i, bought in sorted(plan_lines.items()):
        terms = int(lines[i].quantity.to_integral_value(rounding=ROUND_FLOOR))
        if bought.bonus_points and terms > 0:
            tally.add(
                _plan_item(bought, "plan_bonus", bought.bonus_points * terms, terms=terms), {i: 1}
            )
    return tally.earning()


def _plan_item(plan: PlanSpec, kind: str, points: int, **params) -> dict:
    item = {
        "rule": f"plan:{plan.code}",
        "rule_id": None,
        "plan_id": plan.id,
        "version": None,
        "kind": kind,
        "name": plan.name,
        **params,
        "points": points,
    }
    item["description"] = breakdown_item_text(item)
    return item


def evaluate_activity(
    event_type: str,
    *,
    at: datetime,
    store_id: int | None,
    context: Context,
    ruleset: Ruleset,
) -> Earning:
    """Points for an activity (sign-up, review, check-in…): the sum of every activity rule
    for this type that applies, each within its caps and cool-down."""
    tally = _Tally(0)
    for rule in sorted(ruleset.for_activity(event_type), key=lambda r: r.id):
        if not (rule.live_at(at) and rule.for_store(store_id) and rule.for_tier(context.tier)):
            continue
        points, limited = _limit(rule, rule.points, context.usage.get(rule.id, Usage()), at)
        tally.add(_item(rule, points, limited), None, Award(rule.id, points, rule.slot(at)))
    return tally.earning()
