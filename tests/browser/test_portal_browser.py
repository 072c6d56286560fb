import re

import pytest
from django.core import mail

from loyalty import services
from loyalty.ledger import Cause
from members.models import Member

pytestmark = pytest.mark.browser
PASSWORD = "correct-horse-battery-42"


@pytest.mark.django_db(transaction=True)
def test_shopper_signs_up_verifies_and_sees_points_on_a_phone(live_server, page, screenshot):
    page.goto(live_server.url)
    page.get_by_role("link", name="Join for free").click()
    page.get_by_label("Email").fill("browser.shopper@example.com")
    page.get_by_label("Password:", exact=True).fill(PASSWORD)
    page.get_by_label("Password (again):").fill(PASSWORD)
    page.get_by_role("button", name="Sign Up").click()
    page.wait_for_url(re.compile(r".*/accounts/confirm-email/"))

    assert len(mail.outbox) == 1
    link = re.search(r"https?://\S+/accounts/confirm-email/\S+/", mail.outbox[0].body).group(0)
    page.goto(live_server.url + re.sub(r"^https?://[^/]+", "", link))
    page.get_by_role("button", name="Confirm").click()
    page.wait_for_url(re.compile(r".*/dashboard/"))

    member = Member.objects.get(user__email="browser.shopper@example.com")
    services.points_credit(
        member=member, points=2500, description="Purchase R-77", cause=Cause(source="api")
    )
    page.get_by_role("button", name="Log out").click()

    page.goto(live_server.url + "/accounts/login/")
    page.get_by_label("Email").fill("browser.shopper@example.com")
    page.get_by_label("Password:", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Sign In").click()
    page.wait_for_url(re.compile(r".*/dashboard/"))

    assert page.get_by_test_id("balance-points").inner_text() == "2,500"
    assert page.get_by_test_id("balance-value").inner_text() == "worth 25.00 EUR"
    assert page.get_by_role("link", name="Earned: Purchase R-77").is_visible()
    screenshot("dashboard-phone")

    page.get_by_role("link", name="My card").click()
    assert page.get_by_test_id("card-number").inner_text().replace(" ", "") == member.card_number
    assert page.locator(".qr svg").is_visible()
    screenshot("card-phone")


@pytest.mark.django_db(transaction=True)
def test_history_pages_through_with_htmx_without_reloading(live_server, page, member, screenshot):
    cause = Cause(source="api")
    for i in range(25):
        services.points_credit(member=member, points=10, description=f"Purchase R-{i}", cause=cause)
    page.context.add_cookies([_session_cookie(live_server, member.user)])
    page.goto(live_server.url + "/history/")
    assert page.get_by_text("Page 1 of 2").is_visible()
    page.evaluate("window.__marker = 'still here'")
    page.get_by_role("link", name="Older →").click()
    page.get_by_text("Page 2 of 2").wait_for()
    assert page.evaluate("window.__marker") == "still here"  # swapped in place by htmx
    assert page.url.endswith("?page=2")
    assert page.get_by_role("link", name="Earned: Purchase R-0").is_visible()
    screenshot("history-page-2")


def _session_cookie(live_server, user):
    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore

    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = settings.AUTHENTICATION_BACKENDS[0]
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.save()
    return {
        "name": settings.SESSION_COOKIE_NAME,
        "value": session.session_key,
        "url": live_server.url,
    }


def test_swagger_ui_loads_offline_from_local_assets(live_server, page):
    requested = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(live_server.url + "/api/docs/")
    page.get_by_text("Tally POS API").first.wait_for()
    page.get_by_text("/api/v1/purchases/quote").first.wait_for()
    outside = [url for url in requested if not url.startswith(live_server.url)]
    assert outside == [], f"the docs fetched from elsewhere: {outside}"


@pytest.mark.django_db(transaction=True)
def test_member_sees_the_campaign_in_the_breakdown_and_the_tier_bar_move(
    live_server, page, member, store, screenshot
):
    """Issue 4's story on a phone: staff's "double points on fragrance for VIB and above",
    a progress bar that moves with a purchase, and points expiring soon announced."""
    from datetime import timedelta
    from decimal import Decimal

    from django.utils import timezone

    from loyalty.models import EarningRule, RuleKind, RuleTarget
    from loyalty.purchases import LineIn
    from loyalty.rules import services as rule_services
    from tests.loyalty.tiers_helpers import buy, make_three_tiers

    _insider, vib, _rouge = make_three_tiers()
    rule = EarningRule(
        code="fragrance-weekend", name="Fragrance weekend", kind=RuleKind.MULTIPLIER,
        target=RuleTarget.CATEGORY, target_values="fragrance", multiplier=Decimal(2),
        starts_at=timezone.now() - timedelta(hours=1), ends_at=timezone.now() + timedelta(days=2),
        min_tier=vib,
    )  # fmt: skip
    rule.full_clean()
    rule_services.earning_rule_save(rule=rule)
    buy(member, store, "260.00")
    page.context.add_cookies([_session_cookie(live_server, member.user)])

    page.goto(live_server.url + "/dashboard/")
    assert page.get_by_test_id("tier-name").inner_text() == "Insider"
    assert "90.00 EUR more" in page.get_by_test_id("tier-goal").inner_text()
    assert "VIB" in page.get_by_test_id("tier-goal").inner_text()
    assert page.locator("progress#tier-progress").get_attribute("value") == "260.00"

    perfume = LineIn(sku="PERFUME-50", category="fragrance", quantity=Decimal(1),
                     unit_price=Decimal("100.00"))  # fmt: skip
    buy(member, store, "100.00", lines=[perfume])  # crosses 350: VIB at once
    buy(member, store, "100.00", lines=[perfume])  # VIB now: the campaign applies
    page.reload()
    assert page.get_by_test_id("tier-name").inner_text() == "VIB"
    assert "Rouge" in page.get_by_test_id("tier-goal").inner_text()
    assert page.locator("progress#tier-progress").get_attribute("value") == "460.00"
    assert page.get_by_text("2× on Fragrance weekend").first.is_visible()
    screenshot("dashboard-tier-phone")

    page.get_by_role("link", name="Tiers").first.click()
    assert page.get_by_role("heading", name="Rouge").first.is_visible()
    screenshot("tiers-phone")
