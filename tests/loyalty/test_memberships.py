"""Paid memberships ("Plus"): bought at the till through the POS API or granted by staff,
their tier and extra multiplier, returns, the renewals job, the portal and the summary."""

import json
import re
import uuid
from datetime import timedelta
from decimal import Decimal
from itertools import pairwise

import pytest
from django.contrib.auth.models import Permission
from django.core import mail
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone, translation
from rest_framework.test import APIClient

from loyalty import explain, jobs, memberships, selectors, tiers
from loyalty.models import (
    JournalEntry,
    Membership,
    MembershipPlan,
    MemberTier,
    Purchase,
    Tier,
    TierChange,
)
from members.models import Member
from tests.concurrency import run_at_once
from tests.factories import MemberFactory, StaffFactory, UserFactory
from tests.loyalty.tiers_helpers import buy, make_three_tiers, months

PLUS_SKU = "PLUS-1Y"


@pytest.fixture(autouse=True)
def english():
    with translation.override("en"):
        yield


@pytest.fixture
def three_tiers(db):
    return make_three_tiers()


@pytest.fixture
def plus(three_tiers):
    """Plus: 49 EUR a year, VIB at once, +0.5× on top of the tier, 200 bonus points."""
    return MembershipPlan.objects.create(
        code="plus", name="Plus", sku=PLUS_SKU, fee=Decimal("49.00"), term_months=12,
        tier=three_tiers[1], earn_multiplier=Decimal("1.5"), bonus_points=200,
        perks="Free gift wrapping",
    )  # fmt: skip


def post(client, path, payload, key=None):
    return client.post(
        f"/api/v1/{path}", data=json.dumps(payload), content_type="application/json",
        HTTP_IDEMPOTENCY_KEY=key or str(uuid.uuid4()),
    )  # fmt: skip


def basket(member, receipt, lines, at=None):
    total = sum(Decimal(line["unit_price"]) * Decimal(line["quantity"]) for line in lines)
    return {
        "card_number": member.card_number, "receipt_id": receipt,
        "occurred_at": (at or timezone.now()).isoformat(), "currency": "EUR",
        "total": str(total.quantize(Decimal("0.01"))), "lines": lines,
    }  # fmt: skip


def plus_line(quantity="1"):
    return {"sku": PLUS_SKU, "category": "membership", "quantity": quantity, "unit_price": "49.00"}


def goods(amount="100.00", sku="SERUM-30"):
    return {"sku": sku, "category": "skincare", "quantity": "1", "unit_price": amount}


def balance(member):
    return selectors.member_balance(member=member).points


def tier_of(member, at=None):
    tier = tiers.member_tier(member=member, at=at)
    return tier.code if tier else None


def text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def renewals(now):
    return jobs.job_run("membership_renewals", now=now)


# Buying at the till -------------------------------------------------------------------


@pytest.mark.django_db
def test_the_plan_fee_does_not_count_as_tier_spend(plus, api_client, member):
    basket_ = basket(member, "R-FEE", [plus_line(), goods("51.00")])
    assert post(api_client, "purchases", basket_).status_code == 201
    settings = selectors.program_settings()
    since = tiers.window_start(timezone.now(), settings)
    assert tiers.member_qualification(member=member, since=since, settings=settings)[0] == (
        Decimal("51.00")
    )


@pytest.mark.django_db
def test_buying_plus_at_the_till_starts_a_membership_with_its_tier(plus, api_client, member):
    assert tier_of(member) == "insider"
    response = post(api_client, "purchases", basket(member, "R-1", [plus_line()]))
    assert response.status_code == 201, response.content
    body = response.json()
    # The fee earns no purchase points (it buys the plan's benefits); the bonus is on its line.
    assert body["points_earned"] == 200
    assert body["lines"] == [{"sku": PLUS_SKU, "points": 200}]
    kinds = {item["kind"]: item for item in body["breakdown"]}
    assert kinds["plan_fee"]["description"] == "No points on the Plus membership fee"
    assert kinds["plan_bonus"]["description"] == "Plus membership bonus"
    assert kinds["plan_bonus"]["points"] == 200
    assert body["points_balance"] == balance(member) == 200

    membership = Membership.objects.get()
    purchase = Purchase.objects.get()
    assert (membership.member, membership.plan, membership.status) == (member, plus, "active")
    assert membership.source == "purchase" and membership.purchase == purchase
    assert membership.starts_at == purchase.occurred_at
    assert membership.ends_at == purchase.occurred_at + months(12)
    assert tier_of(member) == "vib"
    assert not MemberTier.objects.filter(member=member).exists()  # the earned tier is untouched
    change = TierChange.objects.get(member=member)
    assert (change.cause, change.from_tier.code, change.to_tier.code) == ("plan", "insider", "vib")
    until = tiers.date_text(membership.ends_at)
    assert tiers.tier_change_text(change) == f"Welcome to Plus: you hold VIB until {until}."


@pytest.mark.django_db
def test_quote_equals_credit_with_the_plans_multiplier(plus, api_client, member):
    post(api_client, "purchases", basket(member, "R-1", [plus_line()]))
    payload = basket(member, "R-2", [goods("100.00")])
    quote = api_client.post("/api/v1/purchases/quote", payload, format="json").json()
    body = post(api_client, "purchases", payload).json()
    assert quote["points"] == body["points_earned"] == 100 + 25 + 50
    assert quote["breakdown"] == body["breakdown"]
    lines = [(item["description"], item["points"]) for item in body["breakdown"]]
    assert lines == [
        ("1 point(s) per EUR paid", 100), ("VIB tier: 1.25× points", 25), ("Plus member 1.5×", 50),
    ]  # fmt: skip
    entry = JournalEntry.objects.filter(member=member).order_by("-pk").first()
    assert "Plus member 1.5×: +50" in explain.entry_rules_summary(entry)
    assert balance(member) == 200 + 175


@pytest.mark.django_db
def test_a_basket_that_buys_the_plan_earns_its_benefits_from_the_next_purchase(
    plus, api_client, member
):
    body = post(api_client, "purchases", basket(member, "R-1", [plus_line(), goods()])).json()
    # Base 100 on the goods at Insider, the bonus on the plan's line; no 1.5× yet.
    assert body["lines"] == [{"sku": PLUS_SKU, "points": 200}, {"sku": "SERUM-30", "points": 100}]
    assert body["points_earned"] == 300


@pytest.mark.django_db
def test_paid_benefits_are_clearly_more_than_the_free_tiers_give(plus, store, api_client):
    """A Plus member who earned nothing beats a free Rouge member (1,000 EUR a year)."""
    rouge, plus_member, insider = MemberFactory(), MemberFactory(), MemberFactory()
    buy(rouge, store, "1000.00")
    assert tier_of(rouge) == "rouge"
    post(api_client, "purchases", basket(plus_member, "P-1", [plus_line()]))
    earned = {}
    for name, who in [("rouge", rouge), ("plus", plus_member), ("insider", insider)]:
        earned[name] = post(api_client, "purchases", basket(who, f"S-{name}", [goods()])).json()[
            "points_earned"
        ]
    assert earned == {"rouge": 150, "plus": 175, "insider": 100}
    # ... and what the tiers page says Plus adds, in words.
    settings = selectors.program_settings()
    words = memberships.plan_advantages(
        plus, entry=Tier.objects.get(code="insider"), settings=settings
    )
    assert words[:3] == [
        "VIB status at once, without the 350.00 EUR it normally takes",
        "+0.5× points on every purchase on top of VIB's 1.25×: 1.75× the base points",
        "200 bonus points when you join and each time you renew",
    ]


@pytest.mark.django_db
def test_a_plan_must_give_more_than_the_free_tiers(three_tiers, plus):
    insider = three_tiers[0]
    plan = MembershipPlan(code="meh", name="Meh", sku="MEH", fee=Decimal(10), tier=insider)
    with pytest.raises(ValidationError, match="more than the free tiers"):
        plan.full_clean()
    for bad, field in [
        (MembershipPlan(code="a", name="A", sku="X", fee=Decimal(0), bonus_points=1), "fee"),
        (MembershipPlan(code="b", name="B", sku="X", fee=1, term_months=0, bonus_points=1),
         "term_months"),
        # The SKU of a plan on sale, as another till would type it.
        (MembershipPlan(code="c", name="C", sku="plus_1y", fee=1, bonus_points=1), "sku"),
    ]:  # fmt: skip
        with pytest.raises(ValidationError) as caught:
            bad.full_clean()
        assert field in caught.value.message_dict


@pytest.mark.django_db
def test_replaying_the_purchase_does_not_extend_the_membership_twice(plus, api_client, member):
    key, payload = str(uuid.uuid4()), basket(member, "R-1", [plus_line()])
    first = post(api_client, "purchases", payload, key=key)
    again = post(api_client, "purchases", payload, key=key)
    assert again.status_code == 201 and again["Idempotent-Replayed"] == "true"
    assert again.content == first.content
    other_key = post(api_client, "purchases", payload)
    assert other_key.status_code == 409 and other_key.json()["code"] == "duplicate_receipt"
    membership = Membership.objects.get()
    assert membership.ends_at == membership.starts_at + months(12)
    assert balance(member) == 200
    assert TierChange.objects.filter(member=member).count() == 1


@pytest.mark.django_db
def test_buying_again_extends_from_the_current_end(plus, api_client, member):
    post(api_client, "purchases", basket(member, "R-1", [plus_line()]))
    first = Membership.objects.get()
    body = post(api_client, "purchases", basket(member, "R-2", [plus_line("2")])).json()
    assert body["points_earned"] == 400  # the bonus for each term bought
    second = Membership.objects.exclude(pk=first.pk).get()
    assert second.renewed_from == first
    assert (second.starts_at, second.ends_at) == (first.ends_at, first.ends_at + months(24))
    assert TierChange.objects.filter(member=member).count() == 1  # nothing changed today
    summary = api_client.get(f"/api/v1/members/{member.card_number}").json()
    assert summary["membership"]["plan"] == {"code": "plus", "name": "Plus"}
    assert summary["membership"]["ends_at"] == second.ends_at.isoformat().replace("+00:00", "Z")


@pytest.mark.django_db
def test_a_plan_is_sold_in_whole_terms(plus, api_client, member):
    response = post(api_client, "purchases", basket(member, "R-1", [plus_line("1.5")]))
    assert response.status_code == 400
    assert response.json()["code"] == "validation_error"
    assert response.json()["errors"] == {"lines[0].quantity": ["Use a whole number of terms."]}
    too_many = post(api_client, "purchases", basket(member, "R-1", [plus_line("11")]))
    assert too_many.status_code == 400
    assert too_many.json()["detail"] == "Plus is sold for at most 10 terms at once."
    quote = api_client.post(
        "/api/v1/purchases/quote", basket(member, "R-1", [plus_line("0.5")]), format="json"
    )
    assert quote.status_code == 400
    assert not Purchase.objects.exists() and not Membership.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_tills_selling_plus_to_one_member_at_once_chain_the_terms(
    postgres_only, plus, api_key, member
):
    def sell(i):
        client = APIClient(HTTP_AUTHORIZATION=f"Api-Key {api_key[1]}")
        return post(client, "purchases", basket(member, f"C-{i}", [plus_line()])).status_code

    staff = StaffFactory()

    def grant(_i):
        return memberships.membership_grant(member=member, plan=plus, months=12, reason="Prize",
                                            staff=staff)  # fmt: skip

    assert run_at_once(sell, count=4) == [201] * 4
    assert isinstance(run_at_once(grant, count=2)[0], Membership)
    terms = list(Membership.objects.order_by("starts_at"))
    assert len(terms) == 6
    for before, after in pairwise(terms):
        assert after.starts_at == before.ends_at and after.renewed_from == before
    assert terms[-1].ends_at == terms[0].starts_at + months(72)
    assert TierChange.objects.filter(member=member).count() == 1
    assert balance(member) == 4 * 200


# Returns ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_returning_the_plan_cancels_the_membership_and_says_why(plus, api_client, member):
    purchase_id = post(
        api_client, "purchases", basket(member, "R-1", [plus_line(), goods()])
    ).json()["id"]
    response = post(
        api_client, f"purchases/{purchase_id}/returns",
        {"return_id": "RT-1", "lines": [{"sku": PLUS_SKU, "quantity": "1"}]},
    )  # fmt: skip
    assert response.status_code == 201, response.content
    assert response.json()["points_reversed"] == 200  # the bonus goes back with the plan
    assert balance(member) == 100
    membership = Membership.objects.get()
    assert membership.status == "cancelled"
    assert membership.end_reason == "Return RT-1 of purchase R-1"
    assert tier_of(member) == "insider"
    change = TierChange.objects.filter(member=member).first()
    assert tiers.tier_change_text(change) == (
        "Your Plus membership was returned (RT-1): you are now in Insider."
    )
    summary = api_client.get(f"/api/v1/members/{member.card_number}").json()
    assert summary["membership"] is None and summary["tier"]["code"] == "insider"


@pytest.mark.django_db
def test_returning_one_of_two_terms_shortens_the_membership_and_moves_renewals_up(
    plus, api_client, member
):
    first_id = post(api_client, "purchases", basket(member, "R-1", [plus_line("2")])).json()["id"]
    post(api_client, "purchases", basket(member, "R-2", [plus_line()]))
    bought, renewal = Membership.objects.order_by("starts_at")
    assert renewal.starts_at == bought.starts_at + months(24)
    response = post(
        api_client, f"purchases/{first_id}/returns",
        {"return_id": "RT-1", "lines": [{"sku": PLUS_SKU, "quantity": "1"}]},
    )  # fmt: skip
    assert response.json()["points_reversed"] == 200
    bought.refresh_from_db()
    renewal.refresh_from_db()
    assert (bought.status, bought.ends_at) == ("active", bought.starts_at + months(12))
    assert renewal.starts_at == bought.ends_at
    assert tier_of(member) == "vib"  # still a member: no tier change
    assert TierChange.objects.filter(member=member).count() == 1


# Staff --------------------------------------------------------------------------------


@pytest.fixture
def staff_client(client, db):
    client.force_login(StaffFactory())
    return client


@pytest.mark.django_db
def test_staff_grant_a_membership_with_a_reason_and_cancel_it(plus, staff_client, member):
    url = reverse("admin:loyalty_member_grant_membership", args=[member.pk])
    page = staff_client.get(reverse("admin:members_member_change", args=[member.pk]))
    assert url in page.content.decode() and "No paid membership." in page.content.decode()
    refused = staff_client.post(url, {"plan": plus.pk, "reason": " "})
    assert refused.status_code == 200 and not Membership.objects.exists()
    response = staff_client.post(
        url, {"plan": plus.pk, "months": "3", "reason": "Sorry for the wait"}
    )
    assert response.status_code == 302
    granted = Membership.objects.get()
    assert (granted.source, granted.reason, granted.months) == ("staff", "Sorry for the wait", 3)
    assert granted.staff.is_staff and granted.ends_at == granted.starts_at + months(3)
    assert tier_of(member) == "vib"
    assert balance(member) == 0  # bonus points come with a purchase only

    cancel = reverse("admin:loyalty_membership_cancel", args=[granted.pk])
    assert (
        cancel
        in staff_client.get(
            reverse("admin:loyalty_membership_change", args=[granted.pk])
        ).content.decode()
    )
    assert staff_client.post(cancel, {"reason": "Granted by mistake"}).status_code == 302
    granted.refresh_from_db()
    assert granted.status == "cancelled" and granted.ended_by == granted.staff
    assert tier_of(member) == "insider"
    change = TierChange.objects.filter(member=member).first()
    assert tiers.tier_change_text(change) == (
        "Your Plus membership was cancelled by our team: Granted by mistake. "
        "You are now in Insider."
    )


@pytest.mark.django_db
def test_granting_and_cancelling_need_their_permissions(plus, client, member):
    user = UserFactory(is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_member"))
    client.force_login(user)
    grant = reverse("admin:loyalty_member_grant_membership", args=[member.pk])
    assert client.post(grant, {"plan": plus.pk, "reason": "x"}).status_code == 403
    user.user_permissions.add(Permission.objects.get(codename="grant_membership"))
    assert client.post(grant, {"plan": plus.pk, "reason": "Prize"}).status_code == 302
    membership = Membership.objects.get()
    cancel = reverse("admin:loyalty_membership_cancel", args=[membership.pk])
    assert client.post(cancel, {"reason": "x"}).status_code == 403
    assert Membership.objects.get().status == "active"


# The renewals job ---------------------------------------------------------------------


@pytest.mark.django_db
def test_the_job_lapses_ended_memberships_and_restores_the_earned_tier_once(
    plus, api_client, member, store
):
    post(api_client, "purchases", basket(member, "R-1", [plus_line()]))
    membership = Membership.objects.get()
    after_end = membership.ends_at + timedelta(hours=3)
    assert tier_of(member, at=after_end) == "insider"  # the benefits stop at the end itself
    run = renewals(after_end)
    assert run.status == "succeeded"
    assert (run.counts["lapsed"], run.counts["tiers_restored"]) == (1, 1)
    membership.refresh_from_db()
    assert (membership.status, membership.ended_at) == ("lapsed", membership.ends_at)
    change = TierChange.objects.filter(member=member).first()
    assert (change.from_tier.code, change.to_tier.code, change.at) == (
        "vib", "insider", membership.ends_at,
    )  # fmt: skip
    assert tiers.tier_change_text(change) == (
        "Your Plus membership ended: you are back in Insider, the tier you earned."
    )
    again = renewals(after_end)
    assert (again.counts["lapsed"], again.counts["tiers_restored"]) == (0, 0)
    assert TierChange.objects.filter(member=member).count() == 2


@pytest.mark.django_db
def test_a_member_who_earned_the_tier_keeps_it_at_the_lapse(plus, api_client, member, store):
    post(api_client, "purchases", basket(member, "R-1", [plus_line()]))
    buy(member, store, "400.00")  # VIB earned by spend
    end = Membership.objects.get().ends_at
    run = renewals(end + timedelta(minutes=1))
    assert (run.counts["lapsed"], run.counts["tiers_restored"]) == (1, 0)
    assert tier_of(member, at=end + timedelta(minutes=1)) == "vib"


@pytest.mark.django_db
def test_a_renewal_carries_the_membership_on_through_the_job(plus, api_client, member):
    post(api_client, "purchases", basket(member, "R-1", [plus_line()]))
    post(api_client, "purchases", basket(member, "R-2", [plus_line()]))
    first, _renewal = Membership.objects.order_by("starts_at")
    run = renewals(first.ends_at + timedelta(days=1))
    assert (run.counts["lapsed"], run.counts["tiers_restored"]) == (1, 0)
    assert tier_of(member, at=first.ends_at + timedelta(days=1)) == "vib"
    assert TierChange.objects.filter(member=member).count() == 1


@pytest.mark.django_db
def test_a_renewal_reminder_is_e_mailed_once_per_term(plus, api_client, member):
    post(api_client, "purchases", basket(member, "R-1", [plus_line()]))
    membership = Membership.objects.get()
    quiet = MemberFactory()  # turned reminders off
    post(api_client, "purchases", basket(quiet, "R-2", [plus_line()]))
    memberships.membership_reminders_set(member=quiet, on=False)
    assert renewals(membership.ends_at - timedelta(days=31)).counts["reminded"] == 0  # too early
    run = renewals(membership.ends_at - timedelta(days=10))
    assert run.counts["reminded"] == 1
    (message,) = mail.outbox
    date = tiers.date_text(membership.ends_at)
    assert message.to == [member.user.email]
    assert message.subject == f"Your Plus membership ends on {date}: renew to keep its benefits"
    assert "buy Plus (49.00 EUR) at the till or online before then" in message.body
    assert "VIB status at once" in message.body
    assert "We never charge you" in message.alternatives[0][0]
    assert renewals(membership.ends_at - timedelta(days=5)).counts["reminded"] == 0
    assert len(mail.outbox) == 1
    # Renewed: the new term is reminded before its own end, the old one never again.
    post(api_client, "purchases", basket(member, "R-3", [plus_line()]))
    renewal = Membership.objects.get(renewed_from=membership)
    assert renewals(renewal.ends_at - timedelta(days=3)).counts["reminded"] == 1
    assert len(mail.outbox) == 2


@pytest.mark.django_db
def test_the_job_costs_the_same_queries_for_3_or_30_memberships(
    plus, django_assert_max_num_queries
):
    counts = []
    for n in (3, 30):
        start = timezone.now() - months(13) - timedelta(days=n)
        members = [MemberFactory() for _ in range(n)]
        for m in members:
            memberships.membership_grant(
                member=m, plan=plus, months=12, reason="Prize", staff=StaffFactory(), now=start
            )
        with django_assert_max_num_queries(40) as captured:
            run = renewals(timezone.now())
        assert run.counts["lapsed"] == n
        counts.append(len(captured))
    assert counts[0] == counts[1], counts


# The review ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_review_does_not_move_a_paid_member_below_the_plans_tier(plus, store, member):
    earned = timezone.now() - months(11)
    buy(member, store, "400.00", at=earned)  # VIB, guaranteed for 12 months
    # The purchase moved the member up; as if that had happened back then:
    MemberTier.objects.filter(member=member, tier__code="vib").update(
        since=earned, guaranteed_until=earned + months(12)
    )
    review_at = timezone.now() + months(2)
    assert [r.member_id for r in tiers.tiers_at_risk(now=review_at - timedelta(days=40))] == [
        member.pk
    ]
    memberships.membership_grant(
        member=member, plan=plus, months=12, reason="Loyal customer", staff=StaffFactory(),
        now=timezone.now() - months(6),
    )  # fmt: skip
    # In two months the guarantee has ended and the purchase has left the 12-month window:
    # a free member would drop to Insider (and be warned before); Plus holds VIB.
    assert list(tiers.tiers_at_risk(now=review_at - timedelta(days=40))) == []
    result = tiers.tiers_review(now=review_at)
    assert (result.down, result.held_by_plan) == (0, 1)
    assert MemberTier.objects.get(member=member).tier.code == "vib"
    # Once Plus has ended, the next review measures again: one level down.
    later = Membership.objects.get().ends_at + timedelta(days=1)
    renewals(later)
    assert tiers.tiers_review(now=later).down == 1
    assert MemberTier.objects.get(member=member).tier.code == "insider"


# What members and cashiers see ------------------------------------------------------------


@pytest.fixture
def shopper_client(client, member):
    client.force_login(member.user)
    return client


@pytest.mark.django_db
def test_dashboard_and_tiers_page_show_the_membership(plus, api_client, shopper_client, member):
    post(api_client, "purchases", basket(member, "R-1", [plus_line()]))
    until = tiers.date_text(Membership.objects.get().ends_at)
    page = text(shopper_client.get(reverse("loyalty:dashboard")).content.decode())
    assert "Your Plus membership" in page
    assert f"Active until {until}." in page
    assert "VIB status at once" in page
    assert "buy Plus again at the till or online" in page
    assert f"VIB comes with your Plus membership, until {until}." in page
    assert "Your next purchase earns 1.75× points." in page
    page = text(shopper_client.get(reverse("loyalty:tiers")).content.decode())
    assert "Paid memberships" in page and "49.00 EUR for 12 months" in page
    assert "Free gift wrapping" in page and "Your membership" in page
    assert "Welcome to Plus: you hold VIB until" in page
    response = shopper_client.post(reverse("loyalty:membership_reminders"), {"on": "0"})
    assert response.status_code == 302
    assert not Membership.objects.get().auto_renew
    assert (
        "Remind me before it ends"
        in shopper_client.get(reverse("loyalty:dashboard")).content.decode()
    )


@pytest.mark.django_db
def test_tiers_page_offers_the_plans_to_a_member_without_one(plus, shopper_client):
    page = text(shopper_client.get(reverse("loyalty:tiers")).content.decode())
    assert "Paid memberships" in page
    assert "VIB status at once, without the 350.00 EUR it normally takes" in page
    assert "Your Plus membership" not in page


@pytest.mark.django_db
def test_pos_summary_carries_the_membership_or_null(plus, api_client, member):
    body = api_client.get(f"/api/v1/members/{member.card_number}").json()
    assert body["membership"] is None
    post(api_client, "purchases", basket(member, "R-1", [plus_line()]))
    body = api_client.get(f"/api/v1/members/lookup?card={member.card_number}").json()
    assert body["membership"]["plan"] == {"code": "plus", "name": "Plus"}
    assert body["tier"] == {"code": "vib", "name": "VIB"}
    assert body["tier_progress"]["earn_multiplier"] == "1.75"


@pytest.mark.django_db
def test_demo_data_has_a_plus_plan_that_beats_the_free_tiers():
    call_command("seed_demo", stdout=open("/dev/null", "w"))  # noqa: SIM115
    call_command("seed_demo", stdout=open("/dev/null", "w"))  # noqa: SIM115
    plan = MembershipPlan.objects.get(code="plus")
    assert (plan.fee, plan.term_months, plan.tier.code) == (Decimal("49.00"), 12, "vib")
    assert (plan.earn_multiplier, plan.bonus_points) == (Decimal("1.5"), 200)
    plan.full_clean()
    deniz = Member.objects.get(user__email="plus@tally.example")
    assert Membership.objects.filter(member=deniz).count() == 1
    later = deniz.purchases.get(receipt_id="R-3042")
    assert later.points_earned == 80 + 20 + 40  # VIB's 1.25× and Plus's extra 0.5×
    assert tier_of(deniz) == "vib"


# Query counts -------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_purchase_without_a_plan_costs_one_query_more_once_plans_exist(
    plus, api_client, member, django_assert_max_num_queries, shared_cache
):
    """The cap of tests/loyalty/test_api_purchases.py (12, programs without plans) plus
    the read of the member's running membership: the plans' SKUs are cached."""
    for receipt in ("W-1", "W-2"):  # the member's accounts and the cached tiers exist
        assert post(api_client, "purchases", basket(member, receipt, [goods()])).status_code == 201
    with django_assert_max_num_queries(13) as captured:
        assert post(api_client, "purchases", basket(member, "Q-1", [goods()])).status_code == 201
    assert not any("loyalty_membershipplan" in q["sql"] for q in captured)


@pytest.mark.django_db(transaction=True)
def test_buying_the_plan_costs_a_few_queries_more(
    plus, api_client, member, django_assert_max_num_queries, shared_cache
):
    for receipt in ("W-1", "W-2"):
        assert post(api_client, "purchases", basket(member, receipt, [goods()])).status_code == 201
    # + the running chain, the tier before it, the membership row and the tier change.
    with django_assert_max_num_queries(17):
        assert (
            post(api_client, "purchases", basket(member, "Q-1", [plus_line()])).status_code == 201
        )


@pytest.mark.django_db
def test_pages_and_summary_with_a_membership_cost_one_query_more(
    plus, api_client, shopper_client, member, store, django_assert_max_num_queries
):
    """Members without a membership pay nothing: it is read with the member (a subquery);
    with one, its row and plan are one query more. The tiers page lists the plans (1)."""
    for _ in range(5):
        buy(member, store, "10.00")
    urls = [reverse("loyalty:dashboard"), reverse("loyalty:tiers")]
    summary = f"/api/v1/members/{member.card_number}"
    api_client.get(summary)
    for url in urls:
        shopper_client.get(url)
    caps = {urls[0]: 9, urls[1]: 9, summary: 6}
    for url, cap in caps.items():
        client = api_client if url == summary else shopper_client
        with django_assert_max_num_queries(cap):
            assert client.get(url).status_code == 200
    post(api_client, "purchases", basket(member, "R-1", [plus_line()]))
    for url, cap in caps.items():
        client = api_client if url == summary else shopper_client
        with django_assert_max_num_queries(cap + 1):
            assert client.get(url).status_code == 200


def test_programs_without_plans_pay_nothing_for_memberships_on_the_summary(
    db, api_client, member, django_assert_max_num_queries
):
    api_client.get(f"/api/v1/members/{member.card_number}")
    with django_assert_max_num_queries(7) as captured:
        assert api_client.get(f"/api/v1/members/{member.card_number}").json()["membership"] is None
    assert not any(q["sql"].startswith('SELECT "loyalty_membership') for q in captured)


@pytest.mark.django_db(transaction=True)
def test_a_tills_lookup_without_plans_or_tiers_reads_only_the_member_and_points(
    api_client, member, django_assert_num_queries, shared_cache
):
    """A till in use (a purchase has read the plans and tiers into the process), a program
    with neither: the lookup reads the member, their points and what expires next, nothing
    about memberships or tiers. Once staff add a plan and the member buys it, it shows."""
    assert post(api_client, "purchases", basket(member, "W-1", [goods()])).status_code == 201
    summary = f"/api/v1/members/{member.card_number}"
    api_client.get(summary)
    with django_assert_num_queries(3) as captured:
        body = api_client.get(summary).json()
    assert (body["membership"], body["tier"], body["points_balance"]) == (None, None, 100)
    assert not any(word in q["sql"] for q in captured for word in ("membership", "_tier"))

    tiers_ = make_three_tiers()
    MembershipPlan.objects.create(
        code="plus", name="Plus", sku=PLUS_SKU, fee=Decimal("49.00"), term_months=12,
        tier=tiers_[1],
    )  # fmt: skip
    assert post(api_client, "purchases", basket(member, "W-2", [plus_line()])).status_code == 201
    body = api_client.get(summary).json()
    assert body["membership"]["plan"]["code"] == "plus"
    assert body["tier"]["code"] == tiers_[1].code


@pytest.mark.django_db
def test_membership_words_are_in_turkish_too(plus, api_client, member):
    post(api_client, "purchases", basket(member, "R-1", [plus_line()]))
    body = post(api_client, "purchases", basket(member, "R-2", [goods()])).json()
    renewals(Membership.objects.get().ends_at + timedelta(days=1))
    with translation.override("tr"):
        assert explain.breakdown_item_text(body["breakdown"][-1]) == "Plus üyesi 1,5×"
        assert tiers.tier_change_text(TierChange.objects.filter(member=member).first()) == (
            "Plus üyeliğiniz sona erdi: kazandığınız seviye olan Insider seviyesine döndünüz."
        )


@pytest.mark.django_db
def test_staff_set_up_a_plan_in_the_back_office(plus, staff_client, api_client, member):
    add = reverse("admin:loyalty_membershipplan_add")
    form = {
        "name": "Gold", "code": "gold", "is_active": "on", "sku": "GOLD-1Y", "fee": "99.00",
        "term_months": "12", "tier": "", "earn_multiplier": "2", "bonus_points": "0",
        "perks": "", "renewal_notice_days": "30",
    }  # fmt: skip
    clash = staff_client.post(add, form | {"sku": "plus 1y"})
    assert clash.status_code == 200
    assert "The plan Plus on sale already uses this SKU." in clash.content.decode()
    assert staff_client.post(add, form).status_code == 302
    # The tills see the new plan at once (the cached plans are reloaded).
    gold = {"sku": "gold-1y", "category": "", "quantity": "1", "unit_price": "99.00"}
    body = post(api_client, "purchases", basket(member, "R-1", [gold])).json()
    assert Membership.objects.get(member=member).plan.code == "gold"
    assert body["points_earned"] == 0  # no bonus; the fee earns nothing
    post(api_client, "purchases", basket(member, "R-2", [goods()]))
    assert Purchase.objects.get(receipt_id="R-2").points_earned == 200  # 2×, no tier
    for url in ["admin:loyalty_membershipplan_changelist", "admin:loyalty_membership_changelist"]:
        assert staff_client.get(reverse(url)).status_code == 200
    page = staff_client.get(reverse("admin:members_member_change", args=[member.pk]))
    assert "Gold" in text(page.content.decode()) and "running" in page.content.decode()
