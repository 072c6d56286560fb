# ruff: noqa: E501  (the tables read best one case per line)
"""Earning rules in the database, the POS API, the portal and the back office: rules staff
set up change what tills credit, within caps and cool-downs, and every credit says why."""

import json
import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone

from loyalty import selectors
from loyalty.models import (
    ActivityEvent,
    CapPeriod,
    EarningRule,
    JournalEntry,
    MemberTier,
    Purchase,
    RuleAward,
    RuleKind,
    RuleTarget,
    Tier,
)
from loyalty.rules import loader, services
from tests.concurrency import run_at_once
from tests.factories import MemberFactory, StaffFactory, StoreFactory

NOW = timezone.now


def make_rule(stores=(), **fields) -> EarningRule:
    """A rule as the back office saves it: validated, through the service."""
    fields.setdefault("code", f"rule-{uuid.uuid4().hex[:8]}")
    fields.setdefault("name", fields["code"])
    rule = EarningRule(**fields)
    rule.full_clean()
    services.earning_rule_save(rule=rule)
    rule.stores.set(stores)
    return rule


def make_tiers():
    return (
        Tier.objects.create(code="insider", name="Insider", rank=0, threshold=0),
        Tier.objects.create(code="vib", name="VIB", rank=1, threshold=100000),
        Tier.objects.create(
            code="rouge", name="Rouge", rank=2, threshold=200000, earn_multiplier=Decimal("1.5")
        ),
    )


def put_in_tier(member, tier):
    MemberTier.objects.create(member=member, tier=tier, since=NOW())


def post(client, path, payload, key=None):
    return client.post(
        f"/api/v1/{path}", data=json.dumps(payload), content_type="application/json",
        HTTP_IDEMPOTENCY_KEY=key or str(uuid.uuid4()),
    )  # fmt: skip


def event(client, member, type, at, key=None):
    response = post(
        client, "events",
        {"card_number": member.card_number, "type": type, "occurred_at": at.isoformat()}, key,
    )  # fmt: skip
    assert response.status_code == 201, response.content
    return response.json()["points_earned"]


def basket(member, receipt="R-1", **overrides):
    payload = {
        "card_number": member.card_number, "receipt_id": receipt,
        "occurred_at": NOW().isoformat(), "currency": "EUR", "total": "49.90",
        "lines": [
            {"sku": "SHAMPOO", "category": "hair", "quantity": "2", "unit_price": "12.45"},
            {"sku": "PERFUME", "category": "Fragrance", "quantity": "1", "unit_price": "25.00"},
        ],
    }  # fmt: skip
    payload.update(overrides)
    return payload


def quote_of(client, payload):
    response = client.post("/api/v1/purchases/quote", payload, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def buy(client, payload):
    response = post(client, "purchases", payload)
    assert response.status_code == 201, response.content
    return response.json()


def balance(member):
    return selectors.member_points(member=member)[0]


def said(breakdown):
    return [(item["description"], item["points"]) for item in breakdown]


def weekend_campaign(**fields):
    return make_rule(
        code="fragrance-weekend", name="Fragrance weekend", kind=RuleKind.MULTIPLIER,
        target=RuleTarget.CATEGORY, target_values="fragrance", multiplier=Decimal(2),
        starts_at=NOW() - timedelta(hours=1), ends_at=NOW() + timedelta(days=2), **fields,
    )  # fmt: skip


# The back office refuses nonsense ------------------------------------------------------

NONSENSE = [
    ({"kind": RuleKind.MULTIPLIER}, "multiplier", "Give the multiplier"),
    ({"kind": RuleKind.MULTIPLIER, "multiplier": Decimal(-2)}, "multiplier", "cannot be negative"),
    ({"kind": RuleKind.MULTIPLIER, "multiplier": Decimal(1)}, "multiplier", "more than 1"),
    ({"kind": RuleKind.MULTIPLIER, "multiplier": 2, "starts_at": NOW(), "ends_at": NOW() - timedelta(hours=1)}, "ends_at", "end must come after the start"),
    ({"kind": RuleKind.MULTIPLIER, "multiplier": 2, "target": RuleTarget.CATEGORY}, "target_values", "at least one category"),
    ({"kind": RuleKind.MULTIPLIER, "multiplier": 2, "target_values": "fragrance"}, "target_values", "whole basket"),
    ({"kind": RuleKind.BASKET_BONUS, "points": 500}, "threshold", "amount a basket must reach"),
    ({"kind": RuleKind.BASKET_BONUS, "points": 500, "threshold": Decimal(0)}, "threshold", "more than 0"),
    ({"kind": RuleKind.BASKET_BONUS, "threshold": Decimal(100)}, "points", "Give the points"),
    ({"kind": RuleKind.EXCLUSION, "target": RuleTarget.SKU, "target_values": "GIFT", "points": 5}, "points", "does not give fixed points"),
    ({"kind": RuleKind.EXCLUSION, "target": RuleTarget.SKU, "target_values": "GIFT", "cap_points": 5}, "cap_points", "needs no limit"),
    ({"kind": RuleKind.FIRST_PURCHASE, "points": 100, "threshold": Decimal(5)}, "threshold", "Only basket bonuses"),
    ({"kind": RuleKind.ACTIVITY, "points": 50}, "event_type", "Name the activity"),
    ({"kind": RuleKind.ACTIVITY, "points": 50, "event_type": "sign_up"}, "cap_times", "signs up once"),
    ({"kind": RuleKind.ACTIVITY, "points": 50, "event_type": "review", "multiplier": 2}, "multiplier", "Only multipliers"),
    ({"kind": RuleKind.BASKET_BONUS, "points": 5, "threshold": 10, "cooldown_hours": 24}, "cooldown_hours", "Cool-downs are for activities"),
    ({"kind": RuleKind.ACTIVITY, "points": 5, "event_type": "check_in", "cap_times": 0}, "cap_times", "0 would give nothing"),
]  # fmt: skip


@pytest.mark.django_db
@pytest.mark.parametrize(("fields", "field", "words"), NONSENSE)
def test_rules_that_make_no_sense_are_refused_next_to_the_field_to_fix(fields, field, words):
    rule = EarningRule(code="x", name="X", **fields)
    with pytest.raises(ValidationError) as refused:
        rule.full_clean()
    assert words in " ".join(refused.value.message_dict[field])


@pytest.mark.django_db
def test_the_database_refuses_a_multiplier_that_takes_points_away():
    with pytest.raises(IntegrityError), transaction.atomic():
        EarningRule.objects.create(code="x", name="X", multiplier=Decimal("0.5"))


# Loading rules: one query, cached across processes --------------------------------------


@pytest.mark.django_db
def test_the_ruleset_loads_in_one_query_however_many_rules(django_assert_max_num_queries, store):
    vib = make_tiers()[1]
    others = [StoreFactory() for _ in range(3)]
    for i in range(30):
        make_rule(
            kind=RuleKind.MULTIPLIER, multiplier=2, target=RuleTarget.SKU, target_values=f"S{i}",
            stores=[store, *others] if i % 3 == 0 else others if i % 3 == 1 else [],
            min_tier=vib if i % 2 else None,
        )  # fmt: skip
    make_rule(kind=RuleKind.MULTIPLIER, multiplier=2, starts_at=NOW() + timedelta(days=1))
    make_rule(kind=RuleKind.MULTIPLIER, multiplier=2, is_active=False)
    with django_assert_max_num_queries(1):
        ruleset = loader.active_ruleset(NOW(), store)
    assert len(ruleset.rules) == 20  # other stores' rules, tomorrow's and the switched-off left out
    assert {r.min_tier_rank for r in ruleset.rules} == {None, 1}
    assert all(r.store_ids in (frozenset(), frozenset({store.pk, *[s.pk for s in others]}))
               for r in ruleset.rules)  # fmt: skip


@pytest.mark.django_db(transaction=True)
def test_processes_keep_the_rules_until_any_change_anywhere(
    shared_cache, store, django_assert_num_queries
):
    rule = make_rule(kind=RuleKind.MULTIPLIER, multiplier=2, name="Double")
    loader.active_ruleset(NOW(), store)  # read and committed: kept
    with django_assert_num_queries(0):
        assert [r.name for r in loader.active_ruleset(NOW(), store).rules] == ["Double"]
    rule.name = "Double days"
    services.earning_rule_save(rule=rule)
    with django_assert_num_queries(1):
        [spec] = loader.active_ruleset(NOW(), store).rules
    assert (spec.name, spec.version) == ("Double days", 2)
    rule.stores.set([StoreFactory()])  # now only in another store
    assert loader.active_ruleset(NOW(), store).rules == ()
    # Another process saved a rule: only the token in the shared cache tells this one.
    loader.active_ruleset(NOW(), store)
    EarningRule.objects.filter(pk=rule.pk).update(name="Changed elsewhere")
    cache.set(loader.GENERATION_KEY, "another process's change")
    rule.stores.clear()
    with django_assert_num_queries(1):
        assert [r.name for r in loader.active_ruleset(NOW(), store).rules] == ["Changed elsewhere"]


@pytest.mark.django_db
def test_rules_read_inside_a_transaction_are_not_kept_for_others(store):
    """A rolled-back rule must not live on in the process that read it."""
    with pytest.raises(RuntimeError), transaction.atomic():
        make_rule(kind=RuleKind.MULTIPLIER, multiplier=2)
        assert len(loader.active_ruleset(NOW(), store).rules) == 1
        raise RuntimeError("rolled back")
    assert loader.active_ruleset(NOW(), store).rules == ()


@pytest.mark.django_db
def test_a_members_use_of_capped_rules_is_one_query(member, django_assert_num_queries):
    daily = make_rule(
        kind=RuleKind.ACTIVITY,
        event_type="check_in",
        points=5,
        cap_times=3,
        cap_period=CapPeriod.DAY,
    )
    cooled = make_rule(kind=RuleKind.ACTIVITY, event_type="visit", points=5, cooldown_hours=24)
    capped = make_rule(kind=RuleKind.MULTIPLIER, multiplier=2, cap_points=100)
    free = make_rule(kind=RuleKind.ACTIVITY, event_type="like", points=1)
    at = timezone.make_aware(timezone.datetime(2026, 6, 13, 12))
    for rule, when, points in [
        (daily, at - timedelta(hours=2), 5), (daily, at - timedelta(days=1), 5),
        (cooled, at - timedelta(hours=30), 5), (cooled, at - timedelta(hours=3), 5),
        (capped, at - timedelta(days=300), 40), (capped, at - timedelta(days=3), 25),
        (free, at, 1),
    ]:  # fmt: skip
        RuleAward.objects.create(rule=rule, member=member, points=points, occurred_at=when)
    specs = loader.active_ruleset(at).rules
    with django_assert_num_queries(1):
        usage = loader.member_usage(member=member, rules=specs, at=at)
    assert (usage[daily.pk].times, usage[daily.pk].points) == (1, 5)  # today only
    assert usage[cooled.pk].recent == (at - timedelta(hours=3),)
    assert usage[capped.pk].points == 65  # for as long as the rule runs
    assert free.pk not in usage
    with django_assert_num_queries(0):
        assert (
            loader.member_usage(member=member, rules=[s for s in specs if s.id == free.pk], at=at)
            == {}
        )


@pytest.mark.django_db
def test_a_members_tier_comes_free_with_the_member_row(django_assert_num_queries):
    from members.models import Member

    insider, vib, _rouge = make_tiers()
    held, new = MemberFactory(), MemberFactory()
    put_in_tier(held, vib)
    rows = {m.pk: m for m in Member.objects.select_related("tier_state__tier")}
    with django_assert_num_queries(0):
        assert loader.member_tier(rows[held.pk]) == vib
    assert loader.member_tier(rows[new.pk]) == insider  # no row yet: the entry tier
    assert loader.member_tier(Member.objects.get(pk=new.pk)) == insider  # the plain way


@pytest.mark.django_db
def test_every_change_gets_a_new_version():
    rule = make_rule(kind=RuleKind.MULTIPLIER, multiplier=2)
    assert rule.version == 1
    rule.multiplier = Decimal(3)
    services.earning_rule_save(rule=rule)
    services.earning_rule_end(rule=rule)
    rule.refresh_from_db()
    assert rule.version == 3
    assert rule.ends_at <= NOW()


# Activities through the POS API -------------------------------------------------------


@pytest.mark.django_db
def test_reviews_earn_up_to_the_daily_limit(api_client, member):
    make_rule(name="Product review", kind=RuleKind.ACTIVITY, event_type="product_review",
              points=50, cap_times=2, cap_period=CapPeriod.DAY)  # fmt: skip
    day = NOW() - timedelta(days=2)
    assert [
        event(api_client, member, "product-review", day + timedelta(minutes=i)) for i in range(3)
    ] == [50, 50, 0]
    assert event(api_client, member, "product_review", day + timedelta(days=1)) == 50
    assert balance(member) == 150
    assert list(
        ActivityEvent.objects.order_by("occurred_at").values_list("points_earned", flat=True)
    ) == [50, 50, 0, 50]
    entry = JournalEntry.objects.filter(member=member).first()
    assert entry.description == "Product review"
    assert RuleAward.objects.filter(member=member).count() == 3


@pytest.mark.django_db
def test_check_ins_wait_out_the_cool_down(api_client, member):
    make_rule(name="Store check-in", kind=RuleKind.ACTIVITY, event_type="check_in", points=10,
              cooldown_hours=24)  # fmt: skip
    t0 = NOW() - timedelta(days=3)
    assert event(api_client, member, "check_in", t0) == 10
    assert event(api_client, member, "check_in", t0 + timedelta(hours=23)) == 0
    assert event(api_client, member, "check_in", t0 - timedelta(hours=2)) == 0  # sent late, offline
    assert event(api_client, member, "check_in", t0 + timedelta(hours=25)) == 10
    assert balance(member) == 20


@pytest.mark.django_db
def test_a_points_cap_gives_what_is_left_then_nothing(api_client, member):
    make_rule(name="Referral", kind=RuleKind.ACTIVITY, event_type="referral", points=300,
              cap_points=500)  # fmt: skip
    assert [
        event(api_client, member, "referral", NOW() - timedelta(hours=3 - i)) for i in range(3)
    ] == [300, 200, 0]


@pytest.mark.django_db
def test_a_resent_event_credits_once(api_client, member):
    make_rule(kind=RuleKind.ACTIVITY, event_type="app_download", points=75)
    at = NOW() - timedelta(minutes=5)
    assert event(api_client, member, "app_download", at, key="k-1") == 75
    assert event(api_client, member, "app_download", at, key="k-1") == 75  # the replay
    assert balance(member) == 75


@pytest.mark.django_db
def test_activity_rules_for_a_tier_and_above(api_client):
    _insider, vib, _rouge = make_tiers()
    make_rule(name="VIB birthday", kind=RuleKind.ACTIVITY, event_type="birthday", points=250,
              min_tier=vib, cap_times=1, cap_period=CapPeriod.YEAR)  # fmt: skip
    insider_member, vib_member = MemberFactory(), MemberFactory()
    put_in_tier(vib_member, vib)
    assert event(api_client, insider_member, "birthday", NOW()) == 0
    assert event(api_client, vib_member, "birthday", NOW()) == 250
    assert event(api_client, vib_member, "birthday", NOW()) == 0  # once a year


@pytest.mark.django_db
def test_sign_up_bonus_once_whichever_way_a_member_joins(api_client):
    make_rule(name="Welcome bonus", kind=RuleKind.ACTIVITY, event_type="sign_up", points=100,
              cap_times=1, cap_period=CapPeriod.EVER)  # fmt: skip
    enrolled = post(api_client, "members", {"email": "new@example.com"})
    assert enrolled.status_code == 201, enrolled.content
    assert enrolled.json()["points_balance"] == 100
    from members.models import Member

    member = Member.objects.get(card_number=enrolled.json()["card_number"])
    assert event(api_client, member, "sign-up", NOW()) == 0  # a till sending it too: no second
    assert balance(member) == 100
    web = MemberFactory()  # web sign-up goes through the same enrolment
    assert balance(web) == 100
    entry = JournalEntry.objects.get(member=web)
    assert entry.description == "Welcome bonus"
    assert RuleAward.objects.filter(member=web, entry=entry, slot="ever").exists()


@pytest.mark.django_db(transaction=True)
def test_eight_tills_checking_in_at_once_give_one_award(postgres_only, api_key, member):
    from rest_framework.test import APIClient

    make_rule(kind=RuleKind.ACTIVITY, event_type="check_in", points=10, cap_times=1,
              cap_period=CapPeriod.DAY)  # fmt: skip
    at = NOW() - timedelta(minutes=1)

    def check_in(i):
        client = APIClient(HTTP_AUTHORIZATION=f"Api-Key {api_key[1]}")
        return event(client, member, "check_in", at + timedelta(seconds=i))

    try:
        assert sorted(run_at_once(check_in)) == [0] * 7 + [10]
        assert balance(member) == 10
        assert RuleAward.objects.count() == 1
    finally:
        loader.rules_changed()


# Purchases through the POS API ----------------------------------------------------------


@pytest.mark.django_db
def test_fragrance_weekend_for_vib_and_above(api_client):
    insider, vib, rouge = make_tiers()
    weekend_campaign(min_tier=vib)
    members = {tier.code: MemberFactory() for tier in (insider, vib, rouge)}
    for tier in (vib, rouge):
        put_in_tier(members[tier.code], tier)
    earned = {}
    for code, member in members.items():
        payload = basket(member, receipt=f"R-{code}")
        quote = quote_of(api_client, payload | {"receipt_id": None})
        body = buy(api_client, payload)
        assert (quote["points"], quote["lines"], quote["breakdown"]) == (
            body["points_earned"],
            body["lines"],
            body["breakdown"],
        )  # the quote is what the till then credits
        earned[code] = said(body["breakdown"])
    assert earned == {
        "insider": [("1 point(s) per EUR paid", 49)],
        "vib": [("1 point(s) per EUR paid", 49), ("2× on Fragrance weekend", 25)],
        "rouge": [("1 point(s) per EUR paid", 49), ("Rouge tier: 1.5× points", 24),
                  ("2× on Fragrance weekend", 25)],
    }  # fmt: skip
    purchase = Purchase.objects.get(member=members["vib"])
    assert [line.points for line in purchase.lines.all()] == [24, 50]
    assert purchase.breakdown[1]["rule"] == "fragrance-weekend"
    assert purchase.breakdown[1]["version"] == 1


@pytest.mark.django_db
def test_gift_cards_earn_nothing_even_when_paid_partly_with_points(api_client, member, api_cause):
    from loyalty import services as ledger_services

    make_rule(name="Gift cards", kind=RuleKind.EXCLUSION, target=RuleTarget.CATEGORY,
              target_values="gift-cards")  # fmt: skip
    ledger_services.points_credit(
        member=member, points=1000, description="Earlier", cause=api_cause
    )
    body = buy(api_client, basket(member, total="100.00", redeem_points=1000, lines=[
        {"sku": "GIFT-50", "category": "gift cards", "quantity": "1", "unit_price": "50.00"},
        {"sku": "SERUM", "category": "skincare", "quantity": "1", "unit_price": "50.00"},
    ]))  # fmt: skip
    assert said(body["breakdown"]) == [
        ("1 point(s) per EUR paid", 45),
        ("No points on Gift cards", 0),
    ]
    assert [line["points"] for line in body["lines"]] == [0, 45]


@pytest.mark.django_db
def test_first_purchase_bonus_only_on_the_first(api_client, member):
    make_rule(name="Welcome", kind=RuleKind.FIRST_PURCHASE, points=200)
    assert buy(api_client, basket(member, receipt="R-1"))["points_earned"] == 249
    assert buy(api_client, basket(member, receipt="R-2"))["points_earned"] == 49
    assert RuleAward.objects.get().slot == "ever"


@pytest.mark.django_db
def test_a_capped_campaign_gives_what_is_left_then_says_so(api_client, member):
    make_rule(name="Double days", kind=RuleKind.MULTIPLIER, multiplier=2, cap_points=60)
    bonuses = [
        said(buy(api_client, basket(member, receipt=f"R-{i}"))["breakdown"])[1] for i in range(3)
    ]
    assert bonuses == [("2× on Double days", 49), ("2× on Double days (up to your limit)", 11),
                       ("2× on Double days (limit reached)", 0)]  # fmt: skip


@pytest.mark.django_db
def test_campaign_only_in_its_stores(api_client, member, store):
    make_rule(name="Opening", kind=RuleKind.MULTIPLIER, multiplier=3, stores=[StoreFactory()])
    assert buy(api_client, basket(member))["points_earned"] == 49
    make_rule(name="Here", kind=RuleKind.MULTIPLIER, multiplier=3, stores=[store])
    assert buy(api_client, basket(member, receipt="R-2"))["points_earned"] == 49 + 99  # 2 × 49.90


@pytest.mark.django_db
def test_a_rule_edited_after_a_purchase_changes_neither_it_nor_its_return(
    api_client, shopper_client, member
):
    rule = weekend_campaign()
    bought = buy(api_client, basket(member))
    purchase = Purchase.objects.get(public_id=bought["id"])
    kept = (purchase.breakdown, [line.points for line in purchase.lines.all()])
    rule.name, rule.multiplier = "Fragrance week", Decimal(5)
    services.earning_rule_save(rule=rule)
    purchase.refresh_from_db()
    assert (purchase.breakdown, [line.points for line in purchase.lines.all()]) == kept
    page = shopper_client.get(reverse("loyalty:entry", args=[purchase.earn_entry.public_id]))
    assert "2× on Fragrance weekend" in page.content.decode()
    returned = post(api_client, f"purchases/{bought['id']}/returns", {
        "return_id": "RT-1", "lines": [{"sku": "PERFUME", "quantity": "1"}]})  # fmt: skip
    assert returned.status_code == 201, returned.content
    assert returned.json()["points_reversed"] == 50  # the perfume's 25 base + 25 campaign
    later = buy(api_client, basket(member, receipt="R-2"))
    assert said(later["breakdown"])[1] == ("5× on Fragrance week", 100)
    assert later["breakdown"][1]["version"] == 2


@pytest.fixture
def shopper_client(client, member):
    client.force_login(member.user)
    return client


@pytest.mark.django_db
def test_the_member_reads_which_rules_gave_what(api_client, shopper_client, member):
    weekend_campaign()
    make_rule(name="Welcome", kind=RuleKind.FIRST_PURCHASE, points=200)
    buy(api_client, basket(member))
    history = shopper_client.get(reverse("loyalty:history")).content.decode()
    assert "2× on Fragrance weekend: +25 · Welcome: first purchase bonus: +200" in history
    entry = JournalEntry.objects.get(member=member)
    detail = shopper_client.get(reverse("loyalty:entry", args=[entry.public_id])).content.decode()
    assert "How these points were earned" in detail
    for words in ("1 point(s) per EUR paid", "2× on Fragrance weekend", "+25", "+200"):
        assert words in detail


@pytest.mark.django_db(transaction=True)
def test_purchase_query_count_with_tiers_caps_and_campaigns(
    shared_cache, api_client, django_assert_max_num_queries
):
    """Every kind of rule at work (the tier, a capped campaign, a first-purchase bonus):
    a purchase stays within a few queries of the bare one, however many rules there are."""
    _insider, vib, _rouge = make_tiers()
    Tier.objects.filter(pk=vib.pk).update(earn_multiplier=Decimal("1.25"))
    loader.rules_changed()
    for i in range(20):
        make_rule(
            kind=RuleKind.MULTIPLIER, multiplier=2, target=RuleTarget.SKU, target_values=f"X{i}"
        )
    make_rule(kind=RuleKind.MULTIPLIER, multiplier=2, cap_points=1000, min_tier=vib)
    make_rule(kind=RuleKind.FIRST_PURCHASE, points=100)
    member = MemberFactory()
    put_in_tier(member, vib)
    buy(api_client, basket(member, receipt="W-1"))  # a till in use: caches warm
    with django_assert_max_num_queries(16) as captured:
        body = buy(api_client, basket(member, receipt="Q-1"))
    assert said(body["breakdown"])[1:] == [
        ("VIB tier: 1.25× points", 12),
        (body["breakdown"][2]["description"], 49),
    ]
    # 12 for the bare purchase, + the member's tier, whether they bought before, their use
    # of the capped campaign, and the award row the cap counts next time.
    assert len(captured) <= 16


@pytest.mark.django_db(transaction=True)
def test_event_query_count(shared_cache, api_client, django_assert_max_num_queries):
    """A till in use: an activity no rule rewards costs what storing it did before rules;
    a rewarded, capped one adds the lock, the member's use of the rule, the credit and
    the award row."""
    make_rule(kind=RuleKind.ACTIVITY, event_type="product_review", points=50, cap_times=2,
              cap_period=CapPeriod.DAY)  # fmt: skip
    member = MemberFactory()
    event(api_client, member, "product_review", NOW() - timedelta(hours=2))  # caches warm
    with django_assert_max_num_queries(6):
        assert event(api_client, member, "app_open", NOW() - timedelta(hours=1)) == 0
    with django_assert_max_num_queries(13):
        assert event(api_client, member, "product_review", NOW() - timedelta(hours=1)) == 50


# The back office ------------------------------------------------------------------------


@pytest.fixture
def staff_client(client):
    client.force_login(StaffFactory())
    return client


def _split(moment):
    local = timezone.localtime(moment)
    return local.strftime("%Y-%m-%d"), local.strftime("%H:%M:%S")


@pytest.mark.django_db
def test_staff_set_up_double_points_on_fragrance_this_weekend_for_vib_and_above(
    staff_client, api_client
):
    _insider, vib, _rouge = make_tiers()
    start, end = NOW() - timedelta(hours=1), NOW() + timedelta(days=2)
    form = {
        "name": "Fragrance weekend", "code": "fragrance-weekend", "kind": "multiplier",
        "is_active": "on", "target": "category", "target_values": "fragrance",
        "multiplier": "2", "starts_at_0": _split(start)[0], "starts_at_1": _split(start)[1],
        "ends_at_0": _split(end)[0], "ends_at_1": _split(end)[1], "min_tier": vib.pk,
        "cap_period": "ever", "_save": "Save",
    }  # fmt: skip
    response = staff_client.post(reverse("admin:loyalty_earningrule_add"), form)
    assert response.status_code == 302, response.content.decode()[:3000]
    rule = EarningRule.objects.get(code="fragrance-weekend")
    assert (rule.version, rule.min_tier, rule.multiplier) == (1, vib, Decimal(2))
    member = MemberFactory()
    put_in_tier(member, vib)
    assert ("2× on Fragrance weekend", 25) in said(buy(api_client, basket(member))["breakdown"])
    purchase = Purchase.objects.get(member=member)
    for page in (
        reverse("admin:loyalty_purchase_change", args=[purchase.pk]),
        reverse("admin:loyalty_journalentry_change", args=[purchase.earn_entry_id]),
    ):
        assert "2× on Fragrance weekend</td><td style='text-align:right'>+25" in (
            staff_client.get(page).content.decode()
        )
    page = staff_client.get(reverse("admin:loyalty_earningrule_change", args=[rule.pk]))
    text = page.content.decode()
    assert "what it would give" in text.lower()
    assert "2× on Fragrance weekend" in text and "+100" in text
    assert "25 points to 1 member" in text
    form["multiplier"] = "3"
    staff_client.post(reverse("admin:loyalty_earningrule_change", args=[rule.pk]), form)
    rule.refresh_from_db()
    assert (rule.version, rule.multiplier) == (2, Decimal(3))


@pytest.mark.django_db
def test_the_add_form_says_what_to_fix(staff_client):
    now = NOW()
    form = {
        "name": "Broken", "code": "broken", "kind": "multiplier", "target": "basket",
        "multiplier": "-2", "starts_at_0": _split(now)[0], "starts_at_1": _split(now)[1],
        "ends_at_0": _split(now - timedelta(days=1))[0], "ends_at_1": "00:00:00",
        "cap_period": "ever",
    }  # fmt: skip
    response = staff_client.post(reverse("admin:loyalty_earningrule_add"), form)
    assert response.status_code == 200
    text = response.content.decode()
    assert "A multiplier cannot be negative." in text
    assert "The end must come after the start." in text
    assert not EarningRule.objects.exists()


@pytest.mark.django_db
def test_staff_list_rules_running_now(staff_client, django_assert_max_num_queries):
    vib = make_tiers()[1]
    make_rule(name="Now", kind=RuleKind.MULTIPLIER, multiplier=2, min_tier=vib)
    make_rule(
        name="Later", kind=RuleKind.MULTIPLIER, multiplier=2, starts_at=NOW() + timedelta(days=1)
    )
    make_rule(
        name="Over",
        kind=RuleKind.MULTIPLIER,
        multiplier=2,
        starts_at=NOW() - timedelta(days=9),
        ends_at=NOW() - timedelta(days=1),
    )
    make_rule(name="Off", kind=RuleKind.MULTIPLIER, multiplier=2, is_active=False)
    url = reverse("admin:loyalty_earningrule_changelist")
    for running, names in [
        ("now", ["Now"]),
        ("later", ["Later"]),
        ("ended", ["Over"]),
        ("off", ["Off"]),
    ]:
        with django_assert_max_num_queries(12):
            response = staff_client.get(url, {"running": running})
        assert [r.name for r in response.context["cl"].result_list] == names
    assert staff_client.get(url, {"kind__exact": "multiplier", "q": "Later"}).status_code == 200
