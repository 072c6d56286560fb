"""Tiers: qualification, the upgrade at once on a purchase, returns, the periodic review."""

import json
import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import transaction
from django.utils import timezone, translation

from loyalty import tiers
from loyalty.ledger import program_settings
from loyalty.models import MemberTier, TierBasis, TierChange
from loyalty.purchases import LineIn
from loyalty.rules import loader as rules_loader
from tests.factories import MemberFactory
from tests.loyalty.tiers_helpers import buy, give_back, make_three_tiers, months


@pytest.fixture
def three_tiers(db):
    return make_three_tiers()


@pytest.fixture(autouse=True)
def english():
    """Words are asserted in English, whatever language an earlier test left active."""
    with translation.override("en"):
        yield


def tier_of(member):
    tier = tiers.member_tier(member=member)
    return tier.code if tier else None


def qualification(member, now=None):
    settings = program_settings()
    since = tiers.window_start(now or timezone.now(), settings)
    return tiers.member_qualification(member=member, since=since, settings=settings)[0]


# Upgrade at once ----------------------------------------------------------------------


@pytest.mark.django_db
def test_everyone_starts_in_the_entry_tier_without_a_row(three_tiers, member):
    assert tier_of(member) == "insider"
    assert not MemberTier.objects.exists()
    assert not TierChange.objects.exists()


@pytest.mark.django_db
def test_crossing_the_threshold_upgrades_at_once_straight_to_the_highest_tier(
    three_tiers, member, store
):
    buy(member, store, "200.00")
    assert tier_of(member) == "insider"
    purchase = buy(member, store, "900.00")  # 1,100 in the window: past VIB and Rouge at once
    assert tier_of(member) == "rouge"
    change = TierChange.objects.get()
    assert purchase.tier_change.pk == change.pk
    assert (change.from_tier.code, change.to_tier.code, change.cause) == (
        "insider", "rouge", TierChange.Cause.PURCHASE,
    )  # fmt: skip
    assert tiers.tier_change_text(change) == (
        "Welcome to Rouge: 1,100.00 EUR in the last 12 months reached the 1,000.00 EUR it needs."
    )
    state = MemberTier.objects.get(member=member)
    assert state.guaranteed_until == state.since + months(12)


@pytest.mark.django_db
def test_crossing_the_threshold_through_the_pos_api(three_tiers, member, api_client):
    payload = {
        "card_number": member.card_number, "receipt_id": "R-API-1",
        "occurred_at": timezone.now().isoformat(), "currency": "EUR", "total": "360.00",
        "lines": [{"sku": "EDP", "category": "fragrance", "quantity": "1", "unit_price": "360"}],
    }  # fmt: skip
    response = api_client.post(
        "/api/v1/purchases", data=json.dumps(payload), content_type="application/json",
        HTTP_IDEMPOTENCY_KEY=str(uuid.uuid4()),
    )  # fmt: skip
    assert response.status_code == 201, response.content
    assert tier_of(member) == "vib"
    summary = api_client.get(f"/api/v1/members/{member.card_number}").json()
    assert summary["tier"] == {"code": "vib", "name": "VIB"}
    assert summary["tier_progress"]["next_tier"] == {"code": "rouge", "name": "Rouge"}
    assert summary["tier_progress"]["needed"] == "640.00"
    assert summary["tier_progress"]["earn_multiplier"] == "1.25"
    assert summary["tier_progress"]["text"].startswith("Spend 640.00 EUR more by ")


@pytest.mark.django_db
def test_upgrade_check_costs_one_query_or_two_when_moving_up(
    postgres_only,
    three_tiers,
    member,
    store,
    django_assert_num_queries,
    django_capture_on_commit_callbacks,
):
    settings = program_settings()
    with django_capture_on_commit_callbacks(execute=True):
        assert rules_loader.tiers_active()  # known to every till once committed
    buy(member, store, "100.00")
    with transaction.atomic(), django_assert_num_queries(1):
        assert tiers.tier_upgrade_check(member=member, settings=settings) is None
    buy(member, store, "100.00")
    MemberTier.objects.all().delete()
    TierChange.objects.all().delete()
    buy(member, store, "100.00")  # 300: still Insider
    # Qualify without going through purchase_record, then let the check find it.
    settings.tier_window_months = 24
    settings.save()
    three_tiers[1].threshold = 250
    with django_capture_on_commit_callbacks(execute=True):
        three_tiers[1].save()
    with django_capture_on_commit_callbacks(execute=True):
        assert rules_loader.tiers_active()
    with transaction.atomic(), django_assert_num_queries(2):
        change = tiers.tier_upgrade_check(member=member, settings=settings)
    assert change.to_tier.code == "vib"
    assert tier_of(member) == "vib"


@pytest.mark.django_db
def test_upgrade_check_never_overwrites_a_tier_changed_meanwhile(three_tiers, member, store):
    """The write is a compare-and-set: a stale read retries instead of overwriting."""
    buy(member, store, "400.00")  # VIB
    staff = MemberFactory().user
    tiers.member_tier_set(member=member, tier=three_tiers[2], reason="Goodwill", staff=staff)
    with transaction.atomic():
        assert tiers.tier_upgrade_check(member=member) is None  # Rouge is higher than reached
    assert tier_of(member) == "rouge"


@pytest.mark.django_db
def test_spend_is_money_paid_less_what_returns_gave_back(three_tiers, member, store):
    settings = program_settings()
    buy(member, store, "300.00")  # 300 points at 1 point per EUR
    assert qualification(member) == Decimal("300.00")
    # 100 EUR of which 50 points (0.50 EUR) paid with points: 99.50 EUR of money.
    purchase = buy(
        member, store, "100.00",
        lines=[LineIn(sku="A", quantity=Decimal(2), unit_price=Decimal("30.00")),
               LineIn(sku="B", quantity=Decimal(1), unit_price=Decimal("40.00"))],
        redeem_points=50,
    )  # fmt: skip
    assert qualification(member) == Decimal("399.50")
    give_back(purchase, lines=[("A", Decimal(1))])  # 30 of the 100 returned: 30% of 99.50
    assert qualification(member) == Decimal("369.65")
    give_back(purchase)  # the rest
    assert qualification(member) == Decimal("300.00")
    assert tiers.members_qualification(
        since=tiers.window_start(timezone.now(), settings), settings=settings
    ) == {member.pk: Decimal("300.00")}


@pytest.mark.django_db
def test_qualifying_points_are_points_earned_less_points_returned(three_tiers, member, store):
    settings = program_settings()
    settings.tier_basis = TierBasis.POINTS
    settings.save()
    purchase = buy(
        member, store, "400.00",
        lines=[LineIn(sku="A", quantity=Decimal(1), unit_price=Decimal("100.00")),
               LineIn(sku="B", quantity=Decimal(1), unit_price=Decimal("300.00"))],
    )  # fmt: skip
    assert qualification(member) == Decimal(purchase.points_earned) == Decimal(400)
    assert tier_of(member) == "vib"
    give_back(purchase, lines=[("A", Decimal(1))])
    assert qualification(member) == Decimal(300)


@pytest.mark.django_db
def test_purchases_older_than_the_window_do_not_count(three_tiers, member, store):
    buy(member, store, "500.00", at=timezone.now() - months(13))
    assert qualification(member) == 0
    assert tier_of(member) == "insider"


@pytest.mark.django_db
def test_a_return_that_undoes_qualification_does_not_move_the_member_down_at_once(
    three_tiers, member, store
):
    purchase = buy(member, store, "400.00")
    assert tier_of(member) == "vib"
    give_back(purchase)
    assert qualification(member) == 0
    assert tier_of(member) == "vib"  # kept: only the review moves members down
    assert tiers.tiers_review(now=timezone.now() + timedelta(days=1)).down == 0
    assert tier_of(member) == "vib"
    # Once the guaranteed period is over, the review takes the tier back.
    result = tiers.tiers_review(now=timezone.now() + months(12) + timedelta(days=1))
    assert (result.down, tier_of(member)) == (1, "insider")


# The review ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_downgrade_waits_for_the_guaranteed_period_and_drops_one_level_per_review(
    three_tiers, member, store
):
    buy(member, store, "1200.00")
    assert tier_of(member) == "rouge"
    start = timezone.now()
    assert tiers.tiers_review(now=start + months(6)).down == 0
    assert tiers.tiers_review(now=start + months(11)).down == 0
    assert tier_of(member) == "rouge"

    later = start + months(12) + timedelta(days=1)  # nothing bought for a year
    assert tiers.tiers_review(now=later).down == 1
    assert tier_of(member) == "vib"  # one level, not straight to Insider
    change = TierChange.objects.order_by("-at").first()
    assert (change.cause, change.from_tier.code, change.to_tier.code) == ("review", "rouge", "vib")
    assert tiers.tier_change_text(change) == (
        "Moved from Rouge to VIB at the review: after its guaranteed period, 0.00 EUR in the "
        "last 12 months was below the 1,000.00 EUR Rouge needs."
    )
    # VIB is guaranteed for its own period from the downgrade on.
    assert tiers.tiers_review(now=later + months(6)).down == 0
    assert tier_of(member) == "vib"
    assert tiers.tiers_review(now=later + months(12) + timedelta(days=1)).down == 1
    assert tier_of(member) == "insider"


@pytest.mark.django_db
def test_running_the_review_twice_the_same_day_changes_nothing(three_tiers, member, store):
    at = timezone.now() + months(12) + timedelta(days=1)
    buy(member, store, "1200.00")  # Rouge, then nothing for a year: moves down at `at`
    kept = MemberFactory()
    buy(kept, store, "400.00")
    buy(kept, store, "400.00", at=at - timedelta(days=2))  # still VIB at `at`: renewed
    missed = MemberFactory()
    buy(missed, store, "300.00", at=at - timedelta(days=3))  # Insider...
    three_tiers[1].threshold = 250  # ...until staff lower VIB: the review moves them up
    three_tiers[1].save()

    first = tiers.tiers_review(now=at)
    assert (first.down, first.up, first.renewed) == (1, 1, 1)
    assert (tier_of(member), tier_of(kept), tier_of(missed)) == ("vib", "vib", "vib")

    def snapshot():
        states = MemberTier.objects.order_by("pk")
        return (
            list(states.values_list("pk", "tier_id", "since", "guaranteed_until")),
            TierChange.objects.count(),
        )

    before = snapshot()
    second = tiers.tiers_review(now=at + timedelta(hours=3))
    assert (second.down, second.up, second.renewed) == (0, 0, 0)
    assert snapshot() == before


@pytest.mark.django_db
def test_review_applies_upgrades_missed_after_staff_lower_a_threshold(three_tiers, member, store):
    buy(member, store, "300.00")
    assert tier_of(member) == "insider"
    three_tiers[1].threshold = 250  # saved: nobody moves at once...
    three_tiers[1].save()
    assert tier_of(member) == "insider"
    result = tiers.tiers_review()  # ...the next review does
    assert (result.up, tier_of(member)) == (1, "vib")
    change = TierChange.objects.get()
    assert (change.cause, change.from_tier.code) == ("review", "insider")
    assert tiers.tiers_review().up == 0


@pytest.mark.django_db
def test_review_renews_the_guarantee_of_members_who_still_qualify(three_tiers, member, store):
    buy(member, store, "400.00")
    at = timezone.now() + months(12) + timedelta(days=1)
    buy(member, store, "380.00", at=at - timedelta(days=30))
    result = tiers.tiers_review(now=at)
    assert (result.renewed, result.down) == (1, 0)
    assert MemberTier.objects.get().guaranteed_until == at + months(12)
    assert TierChange.objects.count() == 1  # a renewal is not a change


@pytest.mark.django_db
def test_a_retired_tier_moves_its_members_down_one_level_at_their_review(
    three_tiers, member, store
):
    buy(member, store, "1200.00")
    three_tiers[2].is_active = False
    three_tiers[2].save()
    assert tier_of(member) == "rouge"
    tiers.tiers_review(now=timezone.now() + months(12) + timedelta(days=1))
    assert tier_of(member) == "vib"


@pytest.mark.django_db
def test_review_without_tiers_does_nothing(member, store):
    buy(member, store, "5000.00")
    assert tiers.tiers_review() == tiers.ReviewResult()
    assert tier_of(member) is None


@pytest.mark.django_db
@pytest.mark.parametrize("members", [4, 40])
def test_review_query_count_depends_on_batches_not_members(
    three_tiers, store, members, django_assert_max_num_queries
):
    for i in range(members):
        buy(MemberFactory(), store, "1200.00" if i % 2 else "400.00")
    at = timezone.now() + months(12) + timedelta(days=1)
    # Per batch: the batch's ids, tier rows, qualification, 2 bulk updates, the insert and
    # the log, plus savepoints; fixed costs: settings, tiers, member count.
    with django_assert_max_num_queries(20):
        result = tiers.tiers_review(now=at, batch_size=100)
    assert result.down == members


@pytest.mark.django_db
def test_review_logs_its_progress(three_tiers, store, caplog):
    for _ in range(5):
        buy(MemberFactory(), store, "400.00")
    caplog.set_level("INFO", logger="loyalty.tiers")
    tiers.tiers_review(now=timezone.now() + months(12) + timedelta(days=1), batch_size=2)
    lines = [r.getMessage() for r in caplog.records if r.name == "loyalty.tiers"]
    assert lines[-1] == "review: 5/5 members, 5 down, 0 up"
    assert "review: 2/5 members, 2 down, 0 up" in lines


# Concurrency --------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_purchase_racing_the_review_keeps_the_tier_it_earns(postgres_only, store):
    """Members whose VIB guarantee has ended, with nothing bought in the window, buy 400
    while the review runs: whichever goes first, each ends in VIB, and the log agrees."""
    from tests.concurrency import run_at_once

    vib = make_three_tiers()[1]
    members = [MemberFactory() for _ in range(6)]
    now = timezone.now()
    for m in members:
        buy(m, store, "400.00", at=now - months(13))  # VIB then; out of the window now
        MemberTier.objects.create(
            member=m, tier=vib, since=now - months(13), guaranteed_until=now - months(1)
        )
    work = [lambda m=m: buy(m, store, "400.00") for m in members]
    work.append(lambda: tiers.tiers_review(batch_size=2))
    results = run_at_once(lambda i: work[i](), count=len(work))
    assert not [r for r in results if isinstance(r, Exception)], results
    for m in members:
        assert tier_of(m) == "vib"
        log = [
            (c.from_tier.code, c.to_tier.code)
            for c in TierChange.objects.filter(member=m).order_by("at", "id")
        ]
        assert log in ([], [("vib", "insider"), ("insider", "vib")]), log
