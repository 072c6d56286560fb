# ruff: noqa: E501  (the tables read best one case per line)
"""The earning rules engine, table by table: pure, no database. Each case is a basket (or
an activity), the rules in force and the member's context; it checks the total, the points
on each line and the breakdown a member reads."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace

import pytest
from django.utils import timezone
from hypothesis import given, settings
from hypothesis import strategies as st

from loyalty.models import CapPeriod, ProgramSettings, Rounding, RuleKind, RuleTarget
from loyalty.rules.engine import (
    Basket,
    Context,
    Line,
    Ruleset,
    RuleSpec,
    Usage,
    evaluate,
    evaluate_activity,
    period_bounds,
    split,
)

SAT = datetime(2026, 6, 13, 12, 0, tzinfo=UTC)  # a Saturday noon
WEEKEND = {"starts_at": datetime(2026, 6, 13, tzinfo=UTC), "ends_at": datetime(2026, 6, 15, tzinfo=UTC)}  # fmt: skip
INSIDER = SimpleNamespace(pk=1, code="insider", name="Insider", rank=0, earn_multiplier=Decimal(1))
VIB = SimpleNamespace(pk=2, code="vib", name="VIB", rank=1, earn_multiplier=Decimal("1.25"))
ROUGE = SimpleNamespace(pk=3, code="rouge", name="Rouge", rank=2, earn_multiplier=Decimal("1.5"))
PLAIN_VIB = SimpleNamespace(pk=2, code="vib", name="VIB", rank=1, earn_multiplier=Decimal(1))
HALF = SimpleNamespace(pk=4, code="half", name="Half", rank=0, earn_multiplier=Decimal("0.5"))


def program(rate="1", rounding=Rounding.DOWN):
    return ProgramSettings(earn_rate=Decimal(rate), rounding=rounding, currency="EUR")


def rule(id, kind, name=None, **fields):
    if "values" in fields:
        fields["values"] = frozenset(fields["values"])
    for key in ("multiplier", "threshold"):
        if key in fields:
            fields[key] = Decimal(fields[key])
    return RuleSpec(id=id, code=f"rule-{id}", version=1, kind=kind, name=name or f"Rule {id}", **fields)  # fmt: skip


def line(sku, category, price, quantity="1"):
    return Line(sku, category, Decimal(quantity), Decimal(price))


def basket(*lines, paid=None, at=SAT, store=1):
    total = sum((ln.amount for ln in lines), Decimal(0))
    return Basket(lines, Decimal(paid) if paid is not None else total, at, store)


def run(b, rules=(), settings=None, **context):
    return evaluate(b, Context(**context), Ruleset(tuple(rules)), settings=settings or program())


def lines_of(earning):
    return [(item["rule"], item["points"]) for item in earning.breakdown]


HAIR = line("SHAMPOO", "hair", "12.45", "2")
PERFUME = line("PERFUME-50", "fragrance", "25.00")
GIFT = line("GIFT-50", "gift-cards", "50.00")
FRAGRANCE_2X = rule(10, RuleKind.MULTIPLIER, "Fragrance weekend", target=RuleTarget.CATEGORY, values={"fragrance"}, multiplier="2", **WEEKEND)  # fmt: skip
NO_GIFT_CARDS = rule(5, RuleKind.EXCLUSION, "Gift cards", target=RuleTarget.CATEGORY, values={"gift_cards"})  # fmt: skip
PERFUME_3X = rule(11, RuleKind.MULTIPLIER, "Perfume of the month", target=RuleTarget.SKU, values={"perfume_50"}, multiplier="3")  # fmt: skip
SPEND_100 = rule(20, RuleKind.BASKET_BONUS, "Spend 100", threshold="100", points=500)
WELCOME = rule(30, RuleKind.FIRST_PURCHASE, "Welcome", points=200)


# name, basket, rules, context, total, line points, breakdown
CASES = [
    ("base only: the program rate on money paid", basket(HAIR, PERFUME), [], {}, 49, [24, 25], [("base", 49)]),
    ("exclusion: gift cards earn nothing", basket(GIFT, HAIR), [NO_GIFT_CARDS], {}, 24, [0, 24], [("base", 24), ("rule-5", 0)]),
    ("exclusion matching nothing is not shown", basket(HAIR), [NO_GIFT_CARDS], {}, 24, [24], [("base", 24)]),
    ("SKU multiplier 3× adds twice the base", basket(PERFUME, HAIR), [PERFUME_3X], {}, 99, [75, 24], [("base", 49), ("rule-11", 50)]),
    ("category campaign inside its window", basket(HAIR, PERFUME), [FRAGRANCE_2X], {}, 74, [24, 50], [("base", 49), ("rule-10", 25)]),
    ("campaign before its start gives nothing", basket(HAIR, PERFUME, at=datetime(2026, 6, 12, 23, 59, tzinfo=UTC)), [FRAGRANCE_2X], {}, 49, [24, 25], [("base", 49)]),
    ("campaign at its end moment gives nothing", basket(HAIR, PERFUME, at=WEEKEND["ends_at"]), [FRAGRANCE_2X], {}, 49, [24, 25], [("base", 49)]),
    ("campaign at its start moment applies", basket(PERFUME, at=WEEKEND["starts_at"]), [FRAGRANCE_2X], {}, 50, [50], [("base", 25), ("rule-10", 25)]),
    ("multipliers add up: 1 + 1 + 2 = 4×", basket(PERFUME), [FRAGRANCE_2X, PERFUME_3X], {}, 100, [100], [("base", 25), ("rule-10", 25), ("rule-11", 50)]),
    ("whole-basket multiplier", basket(HAIR, PERFUME), [rule(12, RuleKind.MULTIPLIER, target=RuleTarget.BASKET, multiplier="2")], {}, 98, [48, 50], [("base", 49), ("rule-12", 49)]),
    ("exclusion beats any multiplier", basket(GIFT, PERFUME), [NO_GIFT_CARDS, rule(12, RuleKind.MULTIPLIER, multiplier="2")], {}, 50, [0, 50], [("base", 25), ("rule-5", 0), ("rule-12", 25)]),
    ("categories match whatever case or separator", basket(line("X", "Gift Cards", "10"), line("Y", "GIFT-CARDS", "10"), line("Z", "toys", "10")), [NO_GIFT_CARDS], {}, 10, [0, 0, 10], [("base", 10), ("rule-5", 0)]),
    ("basket bonus just below the amount", basket(line("A", "hair", "99.99")), [SPEND_100], {}, 99, [99], [("base", 99)]),
    ("basket bonus at the amount", basket(line("A", "hair", "60"), line("B", "hair", "40")), [SPEND_100], {}, 600, [360, 240], [("base", 100), ("rule-20", 500)]),
    ("excluded items don't count towards the amount", basket(GIFT, line("A", "hair", "60")), [NO_GIFT_CARDS, SPEND_100], {}, 60, [0, 60], [("base", 60), ("rule-5", 0)]),
    ("points used to pay don't count towards the amount", basket(line("A", "hair", "110"), paid="95"), [SPEND_100], {}, 95, [95], [("base", 95)]),
    ("category basket bonus counts only its lines", basket(line("A", "fragrance", "80"), line("B", "hair", "80")), [rule(21, RuleKind.BASKET_BONUS, target=RuleTarget.CATEGORY, values={"fragrance"}, threshold="75", points=100)], {}, 260, [180, 80], [("base", 160), ("rule-21", 100)]),
    ("redemption spread: excluded lines stay excluded", basket(GIFT, line("P", "fragrance", "50"), paid="80"), [NO_GIFT_CARDS, FRAGRANCE_2X], {}, 80, [0, 80], [("base", 40), ("rule-5", 0), ("rule-10", 40)]),
    ("first purchase bonus", basket(HAIR, PERFUME), [WELCOME], {"first_purchase": True}, 249, [124, 125], [("base", 49), ("rule-30", 200)]),
    ("no first purchase bonus after the first", basket(HAIR, PERFUME), [WELCOME], {"first_purchase": False}, 49, [24, 25], [("base", 49)]),
    ("first purchase paid fully with points still welcomed", basket(PERFUME, paid="0"), [WELCOME], {"first_purchase": True}, 200, [200], [("base", 0), ("rule-30", 200)]),
    ("first purchase of only excluded items spreads the bonus", basket(GIFT), [NO_GIFT_CARDS, WELCOME], {"first_purchase": True}, 200, [200], [("base", 0), ("rule-5", 0), ("rule-30", 200)]),
    ("tier multiplier on the base", basket(HAIR, PERFUME), [], {"tier": VIB}, 61, [30, 31], [("base", 49), ("tier", 12)]),
    ("a tier earning less than the base never leaves a line negative", basket(line("A", "x", "1"), line("B", "x", "1"), line("C", "x", "1")), [], {"tier": HALF}, 1, [1, 0, 0], [("base", 3), ("tier", -2)]),
    ("too little paid for an extra point shows no campaign line", basket(line("P", "fragrance", "0.50"), line("A", "hair", "10")), [FRAGRANCE_2X], {}, 10, [0, 10], [("base", 10)]),
    ("tier multiplier 1 shows nothing", basket(HAIR, PERFUME), [], {"tier": INSIDER}, 49, [24, 25], [("base", 49)]),
    ("tier bonus is on base only, not on campaigns", basket(PERFUME), [FRAGRANCE_2X], {"tier": ROUGE}, 62, [62], [("base", 25), ("tier", 12), ("rule-10", 25)]),
    ("min tier: VIB and above, member is Insider", basket(PERFUME), [rule(13, RuleKind.MULTIPLIER, multiplier="2", min_tier_rank=1)], {"tier": INSIDER}, 25, [25], [("base", 25)]),
    ("min tier: VIB and above, member is VIB", basket(PERFUME), [rule(13, RuleKind.MULTIPLIER, multiplier="2", min_tier_rank=1)], {"tier": PLAIN_VIB}, 50, [50], [("base", 25), ("rule-13", 25)]),
    ("min tier: VIB and above, member is Rouge", basket(PERFUME), [rule(13, RuleKind.MULTIPLIER, multiplier="2", min_tier_rank=1)], {"tier": ROUGE}, 62, [62], [("base", 25), ("tier", 12), ("rule-13", 25)]),
    ("min tier: a member with no tier", basket(PERFUME), [rule(13, RuleKind.MULTIPLIER, multiplier="2", min_tier_rank=1)], {}, 25, [25], [("base", 25)]),
    ("store limit: another store", basket(PERFUME, store=1), [rule(14, RuleKind.MULTIPLIER, multiplier="2", store_ids=frozenset({2}))], {}, 25, [25], [("base", 25)]),
    ("store limit: its store", basket(PERFUME, store=2), [rule(14, RuleKind.MULTIPLIER, multiplier="2", store_ids=frozenset({2, 3}))], {}, 50, [50], [("base", 25), ("rule-14", 25)]),
    ("switched-off rule gives nothing", basket(PERFUME), [rule(15, RuleKind.MULTIPLIER, multiplier="2", is_active=False)], {}, 25, [25], [("base", 25)]),
    ("points cap cuts the rest of the allowance", basket(PERFUME), [rule(16, RuleKind.MULTIPLIER, multiplier="2", cap_points=30)], {"usage": {16: Usage(points=20, times=1)}}, 35, [35], [("base", 25), ("rule-16", 10)]),
    ("points cap reached shows why nothing came", basket(PERFUME), [rule(16, RuleKind.MULTIPLIER, multiplier="2", cap_points=30)], {"usage": {16: Usage(points=30, times=2)}}, 25, [25], [("base", 25), ("rule-16", 0)]),
    ("times cap reached", basket(line("A", "hair", "100")), [rule(22, RuleKind.BASKET_BONUS, threshold="100", points=500, cap_times=1, cap_period=CapPeriod.MONTH)], {"usage": {22: Usage(points=500, times=1)}}, 100, [100], [("base", 100), ("rule-22", 0)]),
    ("times cap not yet reached", basket(line("A", "hair", "100")), [rule(22, RuleKind.BASKET_BONUS, threshold="100", points=500, cap_times=2)], {"usage": {22: Usage(points=500, times=1)}}, 600, [600], [("base", 100), ("rule-22", 500)]),
    ("everything at once", basket(GIFT, PERFUME, HAIR, line("B", "hair", "60")), [NO_GIFT_CARDS, FRAGRANCE_2X, PERFUME_3X, SPEND_100, WELCOME], {"tier": VIB, "first_purchase": True}, 911, [0, 266, 189, 456], [("base", 109), ("rule-5", 0), ("tier", 27), ("rule-10", 25), ("rule-11", 50), ("rule-20", 500), ("rule-30", 200)]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("b", "rules", "context", "total", "line_points", "breakdown"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_rules_table(b, rules, context, total, line_points, breakdown):
    earning = run(b, rules, **context)
    assert lines_of(earning) == breakdown
    assert earning.points == total
    assert earning.line_points == line_points
    assert sum(earning.line_points) == total


# rate, rounding, basket, rules → total: each step rounds once, by the program's rule
ROUNDING = [
    ("1", Rounding.DOWN, basket(*[line(f"S{i}", "x", "0.99") for i in range(3)]), [], 2),
    ("1", Rounding.NEAREST, basket(*[line(f"S{i}", "x", "0.99") for i in range(3)]), [], 3),
    ("1", Rounding.UP, basket(*[line(f"S{i}", "x", "0.99") for i in range(3)]), [], 3),
    ("1", Rounding.DOWN, basket(line("P", "fragrance", "25.50")), [rule(1, RuleKind.MULTIPLIER, multiplier="1.5")], 25 + 12),
    ("1", Rounding.NEAREST, basket(line("P", "fragrance", "25.50")), [rule(1, RuleKind.MULTIPLIER, multiplier="1.5")], 26 + 13),
    ("1", Rounding.UP, basket(line("P", "fragrance", "25.50")), [rule(1, RuleKind.MULTIPLIER, multiplier="1.5")], 26 + 13),
    ("0.5", Rounding.DOWN, basket(line("P", "fragrance", "25.50")), [rule(1, RuleKind.MULTIPLIER, multiplier="2")], 12 + 12),
    ("0", Rounding.UP, basket(line("P", "fragrance", "25.50")), [rule(1, RuleKind.MULTIPLIER, multiplier="2")], 0),
    ("2", Rounding.DOWN, basket(line("P", "x", "0.333", "3")), [], 1),
]  # fmt: skip


@pytest.mark.parametrize(("rate", "rounding", "b", "rules", "total"), ROUNDING)
def test_rounding_follows_the_program_once_per_rule(rate, rounding, b, rules, total):
    earning = run(b, rules, settings=program(rate, rounding))
    assert earning.points == total
    assert sum(earning.line_points) == total


@pytest.mark.parametrize(
    ("multiplier", "rounding", "tier_points"),
    [("1.25", Rounding.DOWN, 12), ("1.25", Rounding.NEAREST, 12), ("1.25", Rounding.UP, 13),
     ("1.5", Rounding.DOWN, 24), ("2", Rounding.DOWN, 49)],
)  # fmt: skip
def test_tier_multiplier_rounds_by_the_program_rule(multiplier, rounding, tier_points):
    tier = SimpleNamespace(pk=9, code="t", name="T", rank=1, earn_multiplier=Decimal(multiplier))
    earning = run(basket(line("A", "hair", "49.00")), settings=program("1", rounding), tier=tier)
    assert lines_of(earning) == [("base", 49), ("tier", tier_points)]


def test_breakdown_items_carry_rule_version_and_wording():
    earning = run(basket(PERFUME), [FRAGRANCE_2X], tier=ROUGE)
    base, tier, campaign = earning.breakdown
    assert base["description"] == "1 point(s) per EUR paid"
    assert tier["description"] == "Rouge tier: 1.5× points"
    assert campaign == {
        "rule": "rule-10", "rule_id": 10, "version": 1, "kind": "multiplier",
        "name": "Fragrance weekend", "multiplier": "2", "points": 25,
        "description": "2× on Fragrance weekend",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("rules", "context", "words"),
    [
        ([NO_GIFT_CARDS], {}, "No points on Gift cards"),
        ([SPEND_100], {}, "Spend 100: bonus for paying 100.00 EUR or more"),
        ([WELCOME], {"first_purchase": True}, "Welcome: first purchase bonus"),
        ([rule(16, RuleKind.MULTIPLIER, "Double", multiplier="2", cap_points=30)],
         {"usage": {16: Usage(points=20)}}, "2× on Double (up to your limit)"),
        ([rule(16, RuleKind.MULTIPLIER, "Double", multiplier="2", cap_points=30)],
         {"usage": {16: Usage(points=30)}}, "2× on Double (limit reached)"),
    ],
)  # fmt: skip
def test_every_breakdown_line_reads_as_a_sentence(rules, context, words):
    b = basket(GIFT, line("A", "hair", "100"))
    assert words in [item["description"] for item in run(b, rules, **context).breakdown]


# Activities ---------------------------------------------------------------------------

REVIEW = rule(40, RuleKind.ACTIVITY, "Product review", event_type="product_review", points=50)
REVIEW_WEEK = rule(41, RuleKind.ACTIVITY, "Review week", event_type="product_review", points=25, **WEEKEND)  # fmt: skip
CHECK_IN = rule(42, RuleKind.ACTIVITY, "Store check-in", event_type="check_in", points=10, cooldown=timedelta(hours=24))  # fmt: skip
DAILY = rule(43, RuleKind.ACTIVITY, "App visit", event_type="app_open", points=5, cap_times=2, cap_period=CapPeriod.DAY)  # fmt: skip
REFERRAL = rule(44, RuleKind.ACTIVITY, "Referral", event_type="referral", points=300, cap_points=1000)  # fmt: skip
VIB_BIRTHDAY = rule(45, RuleKind.ACTIVITY, "VIB birthday", event_type="birthday", points=250, min_tier_rank=1, store_ids=frozenset({7}))  # fmt: skip

ACTIVITIES = [
    ("a review earns", "product_review", [REVIEW], {}, 50),
    ("types match whatever case or separator", "Product-Review", [REVIEW], {}, 50),
    ("other activities earn nothing", "app_download", [REVIEW], {}, 0),
    ("two rules for one activity add up", "product_review", [REVIEW, REVIEW_WEEK], {}, 75),
    ("a campaign outside its window", "product_review", [REVIEW_WEEK], {"at": SAT + timedelta(days=3)}, 0),
    ("cool-down: 23 hours after the last", "check_in", [CHECK_IN], {"usage": {42: Usage(points=10, times=1, recent=(SAT - timedelta(hours=23),))}}, 0),
    ("cool-down: the last was long ago", "check_in", [CHECK_IN], {"usage": {42: Usage(points=10, times=1)}}, 10),
    ("cool-down works both ways (offline events arrive late)", "check_in", [CHECK_IN], {"usage": {42: Usage(recent=(SAT + timedelta(hours=2),))}}, 0),
    ("times cap: second of the day", "app_open", [DAILY], {"usage": {43: Usage(points=5, times=1)}}, 5),
    ("times cap: third of the day", "app_open", [DAILY], {"usage": {43: Usage(points=10, times=2)}}, 0),
    ("points cap leaves part", "referral", [REFERRAL], {"usage": {44: Usage(points=900, times=3)}}, 100),
    ("min tier and store: both right", "birthday", [VIB_BIRTHDAY], {"tier": VIB, "store": 7}, 250),
    ("min tier: too low", "birthday", [VIB_BIRTHDAY], {"tier": INSIDER, "store": 7}, 0),
    ("store: another one", "birthday", [VIB_BIRTHDAY], {"tier": VIB, "store": 8}, 0),
]  # fmt: skip


@pytest.mark.parametrize(
    ("event_type", "rules", "context", "points"),
    [case[1:] for case in ACTIVITIES],
    ids=[case[0] for case in ACTIVITIES],
)
def test_activity_table(event_type, rules, context, points):
    at, store = context.pop("at", SAT), context.pop("store", 1)
    earning = evaluate_activity(
        event_type, at=at, store_id=store, context=Context(**context), ruleset=Ruleset(tuple(rules))
    )
    assert earning.points == points
    assert sum(a.points for a in earning.awards) == points


def test_once_only_awards_carry_a_slot_the_database_can_refuse():
    once_a_day = rule(50, RuleKind.ACTIVITY, event_type="check_in", points=5, cap_times=1, cap_period=CapPeriod.DAY)  # fmt: skip
    earning = evaluate_activity("check_in", at=SAT, store_id=1, context=Context(), ruleset=Ruleset((once_a_day,)))  # fmt: skip
    assert [(a.rule_id, a.points, a.slot) for a in earning.awards] == [(50, 5, "day:2026-06-13")]
    first = run(basket(PERFUME), [WELCOME], first_purchase=True)
    assert [a.slot for a in first.awards] == ["ever"]


# Periods and splitting ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("period", "at", "start", "end"),
    [
        (CapPeriod.DAY, "2026-06-13T22:30:00+00:00", "2026-06-14T00:00:00+03:00", "2026-06-15T00:00:00+03:00"),
        (CapPeriod.WEEK, "2026-06-13T12:00:00+00:00", "2026-06-08T00:00:00+03:00", "2026-06-15T00:00:00+03:00"),
        (CapPeriod.MONTH, "2026-12-31T20:59:00+00:00", "2026-12-01T00:00:00+03:00", "2027-01-01T00:00:00+03:00"),
        (CapPeriod.YEAR, "2026-12-31T21:00:00+00:00", "2027-01-01T00:00:00+03:00", "2028-01-01T00:00:00+03:00"),
    ],
)  # fmt: skip
def test_cap_periods_are_calendar_periods_in_the_program_time_zone(period, at, start, end):
    with timezone.override("Europe/Istanbul"):
        bounds = period_bounds(period, datetime.fromisoformat(at))
    assert bounds == (datetime.fromisoformat(start), datetime.fromisoformat(end))
    assert period_bounds(CapPeriod.EVER, SAT) is None


def test_day_periods_keep_their_true_length_across_a_clock_change():
    with timezone.override("Europe/Berlin"):
        start, end = period_bounds(CapPeriod.DAY, datetime(2026, 3, 29, 12, tzinfo=UTC))
    assert end.astimezone(UTC) - start.astimezone(UTC) == timedelta(hours=23)


@pytest.mark.parametrize(
    ("points", "weights", "shares"),
    [(10, ["1", "1", "1"], [4, 3, 3]), (7, ["0", "0"], [4, 3]), (-5, ["1", "4"], [-1, -4]),
     (0, ["1"], [0]), (100, ["24.90", "25.00"], [50, 50]), (3, [], [])],
)  # fmt: skip
def test_split_is_exact(points, weights, shares):
    assert split(points, [Decimal(w) for w in weights]) == shares


money = st.decimals(min_value=0, max_value=5000, places=2)
lines_st = st.lists(
    st.builds(
        Line,
        sku=st.sampled_from(["PERFUME-50", "GIFT-50", "SHAMPOO", "X"]),
        category=st.sampled_from(["fragrance", "gift-cards", "hair", ""]),
        quantity=st.decimals(min_value=Decimal("0.001"), max_value=20, places=3),
        unit_price=money,
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=200, deadline=None)
@given(
    lines=lines_st,
    used=st.integers(min_value=0, max_value=10),
    rounding=st.sampled_from(list(Rounding)),
    rate=st.sampled_from(["0", "0.5", "1", "3"]),
    tier=st.sampled_from([None, INSIDER, VIB, ROUGE, HALF]),
    first=st.booleans(),
    redeem_share=st.decimals(min_value=0, max_value=1, places=2),
)
def test_any_basket_line_points_add_up_and_never_go_negative(
    lines, used, rounding, rate, tier, first, redeem_share
):
    rules = [NO_GIFT_CARDS, FRAGRANCE_2X, PERFUME_3X, SPEND_100, WELCOME,
             rule(16, RuleKind.MULTIPLIER, multiplier="1.75", cap_points=25)]  # fmt: skip
    total = sum(ln.amount for ln in lines)
    b = basket(*lines, paid=total * (1 - redeem_share))
    earning = run(
        b, rules, settings=program(rate, rounding), tier=tier, first_purchase=first,
        usage={16: Usage(points=used)},
    )  # fmt: skip
    assert sum(earning.line_points) == earning.points == sum(i["points"] for i in earning.breakdown)
    assert all(p >= 0 for p in earning.line_points)
    assert all(p == 0 for p, ln in zip(earning.line_points, lines, strict=True)
               if ln.category == "gift-cards" and not first)  # fmt: skip
    assert sum(a.points for a in earning.awards if a.rule_id == 16) <= 25 - min(used, 25)
