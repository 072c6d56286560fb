"""Tiers as people see them: the goal gradient in the portal, warnings, the back office
preview before a threshold changes, the POS summary and the demo data."""

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone, translation

from loyalty import tiers
from loyalty.ledger import program_settings
from loyalty.models import MemberTier, Tier, TierChange
from members.models import Member
from tests.factories import MemberFactory, StaffFactory, UserFactory
from tests.loyalty.tiers_helpers import buy, give_back, make_three_tiers, months


@pytest.fixture
def three_tiers(db):
    return make_three_tiers()


@pytest.fixture(autouse=True)
def english():
    """Words are asserted in English, whatever language an earlier test left active."""
    with translation.override("en"):
        yield


@pytest.fixture
def shopper_client(client, member):
    client.force_login(member.user)
    return client


@pytest.fixture
def staff_client(client, db):
    client.force_login(StaffFactory())
    return client


def text(html: str) -> str:
    """The page's words, tags dropped and spaces squeezed, as a reader meets them."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def vib_at_risk(member, store):
    """VIB reached 11.5 months ago: the guarantee ends in about two weeks and the purchase
    that earned it leaves the window before then."""
    earned = timezone.now() - months(12) + timedelta(days=15)
    buy(member, store, "400.00", at=earned)
    # The purchase moved the member up; as if that had happened back then:
    MemberTier.objects.filter(member=member).update(
        since=earned, guaranteed_until=earned + months(12)
    )
    TierChange.objects.filter(member=member).update(at=earned)
    buy(member, store, "100.00")  # counts at the review, but 100 < 350


# The portal ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_dashboard_shows_the_goal_gradient_to_the_next_tier(
    three_tiers, shopper_client, member, store
):
    buy(member, store, "260.00")
    html = shopper_client.get(reverse("loyalty:dashboard")).content.decode()
    assert 'data-testid="tier-name">Insider<' in html
    assert re.search(r'<progress id="tier-progress" max="350.00" value="260.00"', html)
    assert 'aria-describedby="tier-progress-text"' in html
    by = tiers.date_text(timezone.now() + months(12))
    page = text(html)
    assert f"Spend 90.00 EUR more by {by} to reach VIB." in page
    assert "260.00 EUR of 350.00 EUR in the last 12 months" in page
    assert "Your next purchase earns 1× points." in page
    assert "What VIB gives" in page
    assert "1.25× points on every purchase" in page
    assert "250 points on your birthday" in page
    assert "Free standard shipping" in page


@pytest.mark.django_db
def test_dashboard_progress_moves_with_a_purchase_and_shows_the_new_multiplier(
    three_tiers, shopper_client, member, store
):
    buy(member, store, "400.00")
    html = shopper_client.get(reverse("loyalty:dashboard")).content.decode()
    page = text(html)
    assert 'data-testid="tier-name">VIB<' in html
    assert "Your next purchase earns 1.25× points." in page
    assert "to reach Rouge." in page
    assert "VIB is yours until at least" in page


@pytest.mark.django_db
def test_top_tier_and_no_tiers_have_their_own_helpful_states(shopper_client, member, store, db):
    page = shopper_client.get(reverse("loyalty:dashboard")).content.decode()
    assert 'data-testid="tier-none"' in page
    assert "no tiers yet" in shopper_client.get(reverse("loyalty:tiers")).content.decode()
    make_three_tiers()
    buy(member, store, "1500.00")
    page = text(shopper_client.get(reverse("loyalty:dashboard")).content.decode())
    assert "You have reached our top tier" in page
    assert "<progress" not in page


@pytest.mark.django_db
def test_member_at_risk_is_warned_with_what_keeps_the_tier(
    three_tiers, shopper_client, member, store
):
    vib_at_risk(member, store)
    state = MemberTier.objects.get(member=member)
    page = text(shopper_client.get(reverse("loyalty:dashboard")).content.decode())
    deadline = tiers.date_text(state.guaranteed_until)
    assert (
        f"Spend 250.00 EUR more by {deadline} to keep VIB. "
        "Otherwise the review then moves you to Insider."
    ) in page
    (risk,) = tiers.tiers_at_risk()
    assert (risk.member_id, risk.tier.code, risk.drop_to.code) == (member.pk, "vib", "insider")
    assert risk.needed == Decimal("250.00")
    # Buying enough before the review keeps the tier, and the warning goes.
    buy(member, store, "250.00")
    assert list(tiers.tiers_at_risk()) == []
    assert "to keep VIB" not in shopper_client.get(reverse("loyalty:dashboard")).content.decode()


@pytest.mark.django_db
def test_tiers_page_lists_benefits_history_and_what_a_return_does(
    three_tiers, shopper_client, member, store
):
    purchase = buy(member, store, "400.00")
    give_back(purchase)
    html = shopper_client.get(reverse("loyalty:tiers")).content.decode()
    assert f'href="{reverse("loyalty:tiers")}" aria-current="page"' in html  # in the nav
    page = text(html)
    for name in ["Insider", "VIB", "Rouge"]:
        assert f'data-testid="tier-{name.lower()}"' in html
    assert "Everyone starts here." in page
    assert "All tiers and benefits" not in page  # no link to the page itself
    assert "From 1,000.00 EUR spent in 12 months." in page
    assert "Access to exclusive rewards" in page
    assert "never moves you down at once" in page
    assert "Welcome to VIB: 400.00 EUR in the last 12 months reached the 350.00 EUR" in page
    assert 'data-testid="tier-name">VIB<' in html  # the return did not take it away


@pytest.mark.django_db
@pytest.mark.parametrize("n", [2, 30])
def test_tier_pages_query_counts_do_not_grow(
    three_tiers, shopper_client, member, store, django_assert_max_num_queries, n
):
    vib_at_risk(member, store)  # the costliest case: a warning to compute
    for _ in range(n):
        buy(member, store, "10.00")
    # The dashboard's 7 + tiers, the member's standing, and what is kept at the review.
    with django_assert_max_num_queries(10):
        assert shopper_client.get(reverse("loyalty:dashboard")).status_code == 200
    with django_assert_max_num_queries(10):
        assert shopper_client.get(reverse("loyalty:tiers")).status_code == 200


# The POS summary ----------------------------------------------------------------------


@pytest.mark.django_db
def test_pos_summary_carries_tier_and_progress_with_fixed_queries(
    three_tiers, api_client, member, store, django_assert_max_num_queries
):
    assert api_client.get(f"/api/v1/members/{member.card_number}").json()["tier"] == {
        "code": "insider", "name": "Insider",
    }  # fmt: skip
    vib_at_risk(member, store)
    with django_assert_max_num_queries(7):
        body = api_client.get(f"/api/v1/members/{member.card_number}").json()
    progress = body["tier_progress"]
    assert body["tier"] == {"code": "vib", "name": "VIB"}
    assert (progress["basis"], progress["unit"], progress["qualification"]) == (
        "spend", "EUR", "500.00",
    )  # fmt: skip
    assert (progress["at_risk"], progress["keep_needed"]) == (True, "250.00")
    assert progress["text"].endswith("to keep VIB. Otherwise the review then moves you to Insider.")


@pytest.mark.django_db
def test_pos_summary_without_tiers_has_no_progress(api_client, member):
    body = api_client.get(f"/api/v1/members/{member.card_number}").json()
    assert (body["tier"], body["tier_progress"]) == (None, None)


# The back office ----------------------------------------------------------------------


def _tier_post(tier, **changes):
    data = {
        "name": tier.name, "code": tier.code, "rank": tier.rank, "is_active": "on",
        "threshold": str(tier.threshold), "guaranteed_months": tier.guaranteed_months,
        "earn_multiplier": str(tier.earn_multiplier), "birthday_points": tier.birthday_points,
        "perks": tier.perks,
    }  # fmt: skip
    data.update(changes)
    return data


@pytest.mark.django_db
def test_admin_previews_who_would_move_before_a_threshold_change_is_saved(
    three_tiers, staff_client, store
):
    vib = three_tiers[1]
    for amount in ["300.00", "280.00", "100.00"]:
        buy(MemberFactory(), store, amount)
    high = MemberFactory()
    buy(high, store, "400.00")  # VIB now
    url = reverse("admin:loyalty_tier_change", args=[vib.pk])

    # Lowering VIB to 250: two members would move up. Nothing is saved by the preview.
    page = staff_client.post(url, _tier_post(vib, threshold="250", _preview="1")).content.decode()
    assert "2 members would move up." in text(page)
    assert "0 members would move down one level" in text(page)
    assert Tier.objects.get(pk=vib.pk).threshold == 350

    # Raising VIB to 500: the VIB member no longer qualifies but is guaranteed for now.
    page = staff_client.post(url, _tier_post(vib, threshold="500")).content.decode()
    assert "What the next review would do with this change" in page  # Save showed it first
    assert "1 more member would no longer qualify" in text(page)
    assert Tier.objects.get(pk=vib.pk).threshold == 350
    token = re.search(r'name="_previewed" value="([^"]+)"', page).group(1)

    # Saving what was previewed applies it, and nobody moves until the review.
    response = staff_client.post(url, _tier_post(vib, threshold="500", _previewed=token))
    assert response.status_code == 302
    assert Tier.objects.get(pk=vib.pk).threshold == 500
    assert tiers.member_tier(member=high).code == "vib"
    assert TierChange.objects.filter(cause="review").count() == 0


@pytest.mark.django_db
def test_a_new_tier_is_previewed_before_it_is_added(three_tiers, staff_client, store):
    buy(MemberFactory(), store, "1300.00")
    url = reverse("admin:loyalty_tier_add")
    data = {
        "name": "Noir", "code": "noir", "rank": 3, "is_active": "on", "threshold": "1200",
        "guaranteed_months": 12, "earn_multiplier": "2", "birthday_points": 0, "perks": "",
    }  # fmt: skip
    page = staff_client.post(url, data).content.decode()
    assert "1 member would move up." in text(page)
    assert not Tier.objects.filter(code="noir").exists()
    token = re.search(r'name="_previewed" value="([^"]+)"', page).group(1)
    assert staff_client.post(url, {**data, "_previewed": token}).status_code == 302
    assert Tier.objects.filter(code="noir").exists()


@pytest.mark.django_db
def test_tier_back_office_lists_open_with_fixed_queries(
    three_tiers, staff_client, store, django_assert_max_num_queries
):
    for amount in ["400.00", "1200.00", "500.00"]:
        buy(MemberFactory(), store, amount)
    for name in ["tier_changelist", "tierchange_changelist", "tierwarning_changelist", "tier_add"]:
        with django_assert_max_num_queries(12):
            assert staff_client.get(reverse(f"admin:loyalty_{name}")).status_code == 200
    page = staff_client.get(reverse("admin:loyalty_tierchange_changelist")).content.decode()
    assert "Welcome to Rouge" in page


@pytest.mark.django_db
def test_admin_refuses_thresholds_out_of_rank_order(three_tiers, staff_client):
    vib = three_tiers[1]
    url = reverse("admin:loyalty_tier_change", args=[vib.pk])
    page = staff_client.post(url, _tier_post(vib, threshold="1200", _preview="1")).content
    assert "Higher tiers need higher thresholds" in page.decode()
    assert Tier.objects.get(pk=vib.pk).threshold == 350


@pytest.mark.django_db
def test_admin_member_page_shows_tier_and_its_history_with_fixed_queries(
    three_tiers, staff_client, store, django_assert_max_num_queries
):
    member = MemberFactory()
    buy(member, store, "400.00")
    buy(member, store, "700.00")
    url = reverse("admin:members_member_change", args=[member.pk])
    with django_assert_max_num_queries(18):
        page = text(staff_client.get(url).content.decode())
    assert "Rouge" in page
    assert "Welcome to Rouge: 1,100.00 EUR" in page
    assert "Welcome to VIB: 400.00 EUR" in page


@pytest.mark.django_db
def test_staff_change_a_members_tier_with_a_reason_the_member_reads(
    three_tiers, client, member, store
):
    staff = UserFactory(is_staff=True)
    staff.user_permissions.add(
        Permission.objects.get(codename="change_member"),
        Permission.objects.get(codename="set_tier"),
    )
    client.force_login(staff)
    url = reverse("admin:loyalty_member_set_tier", args=[member.pk])
    refused = client.post(url, {"tier": three_tiers[2].pk, "reason": ""})
    assert refused.status_code == 200 and not TierChange.objects.exists()
    response = client.post(url, {"tier": three_tiers[2].pk, "reason": "Store opening guest"})
    assert response.status_code == 302
    change = TierChange.objects.get()
    assert (change.cause, change.staff, change.to_tier.code) == ("staff", staff, "rouge")
    client.force_login(member.user)
    page = text(client.get(reverse("loyalty:tiers")).content.decode())
    assert "Moved to Rouge by our team: Store opening guest" in page


@pytest.mark.django_db
def test_changing_a_members_tier_needs_the_permission(three_tiers, client, member):
    staff = UserFactory(is_staff=True)
    client.force_login(staff)
    url = reverse("admin:loyalty_member_set_tier", args=[member.pk])
    assert client.post(url, {"tier": three_tiers[2].pk, "reason": "x"}).status_code == 403
    assert not TierChange.objects.exists()


# Demo data ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_seed_demo_creates_tiers_once_and_a_progress_bar_to_look_at():
    call_command("seed_demo")
    call_command("seed_demo")
    assert list(Tier.objects.values_list("code", "threshold")) == [
        ("insider", Decimal("0.00")), ("vib", Decimal("350.00")), ("rouge", Decimal("1000.00")),
    ]  # fmt: skip
    member = Member.objects.get(user__email="demo@tally.example")
    progress = tiers.tier_progress(member=member, settings=program_settings())
    assert (progress.tier.code, progress.next_tier.code) == ("insider", "vib")
    assert 0 < progress.qualification < progress.next_tier.threshold


@pytest.mark.django_db
def test_tier_card_reads_in_turkish(three_tiers, shopper_client, member, store):
    from django.conf import settings

    buy(member, store, "260.00")
    shopper_client.cookies[settings.LANGUAGE_COOKIE_NAME] = "tr"
    html = shopper_client.get(reverse("loyalty:dashboard")).content.decode()
    page = text(html)
    assert "Seviyeniz" in page
    assert "90,00 EUR daha harcayın." in page
    assert "VIB seviyesine ulaşmak için" in page
    assert re.search(r'<progress id="tier-progress" max="350.00" value="260.00"', html)
