import re
import uuid

import pytest
from django.urls import reverse

from loyalty import services
from tests.factories import MemberFactory


@pytest.fixture
def shopper_client(client, member):
    client.force_login(member.user)
    return client


def _fill_history(member, cause, n):
    for i in range(n):
        services.points_credit(
            member=member, points=10 + i, description=f"Purchase R-{i}", cause=cause
        )
    services.points_redeem(member=member, points=5, description="Coffee voucher", cause=cause)


@pytest.mark.django_db
def test_pages_need_login(client):
    for name in ["loyalty:dashboard", "loyalty:history", "members:card"]:
        response = client.get(reverse(name))
        assert response.status_code == 302
        assert reverse("account_login") in response.url


@pytest.mark.django_db
def test_dashboard_shows_pending_and_expiring_soon(shopper_client, member, api_cause):
    from django.utils import timezone

    services.points_credit(
        member=member,
        points=300,
        description="Old purchase",
        cause=api_cause,
        expires_at=timezone.now() + timezone.timedelta(days=5),
    )
    services.points_credit(
        member=member, points=40, description="Fresh purchase", cause=api_cause, pending_days=14
    )
    page = shopper_client.get(reverse("loyalty:dashboard")).content.decode()
    assert 'data-testid="pending-points">40<' in page
    assert "300 points expire on" in page
    assert "soon: use them before then" in page


@pytest.mark.django_db
def test_dashboard_explains_a_negative_balance_after_a_return(shopper_client, member, api_cause):
    purchase = services.points_credit(member=member, points=100, description="R-9", cause=api_cause)
    services.points_redeem(member=member, points=80, description="Voucher", cause=api_cause)
    services.entry_reverse(entry=purchase, cause=api_cause, description="Return of R-9")
    page = shopper_client.get(reverse("loyalty:dashboard")).content.decode()
    assert 'data-testid="balance-points">-80<' in page
    assert "The next points you earn pay this off first" in page
    assert "Reversed: Return of R-9" in page


@pytest.mark.django_db
def test_empty_dashboard_explains_how_to_earn(shopper_client):
    page = shopper_client.get(reverse("loyalty:dashboard")).content.decode()
    assert 'data-testid="balance-points">0<' in page
    assert "No points yet" in page
    assert "None of your points are due to expire" in page


@pytest.mark.django_db
def test_history_is_paginated_newest_first_and_htmx_gets_a_fragment(
    shopper_client, member, api_cause
):
    _fill_history(member, api_cause, 25)
    first = shopper_client.get(reverse("loyalty:history")).content.decode()
    assert "Redeemed: Coffee voucher" in first
    assert "Page 1 of 2" in first
    fragment = shopper_client.get(
        reverse("loyalty:history") + "?page=2", HTTP_HX_REQUEST="true"
    ).content.decode()
    assert "<html" not in fragment
    assert "Earned: Purchase R-0" in fragment
    assert "Coffee voucher" not in fragment


@pytest.mark.django_db
@pytest.mark.parametrize("n", [3, 60])
def test_dashboard_and_history_query_count_does_not_grow(
    shopper_client, member, api_cause, django_assert_max_num_queries, n
):
    _fill_history(member, api_cause, n)
    with django_assert_max_num_queries(9):
        assert shopper_client.get(reverse("loyalty:dashboard")).status_code == 200
    with django_assert_max_num_queries(7):
        assert shopper_client.get(reverse("loyalty:history")).status_code == 200
    with django_assert_max_num_queries(7):
        assert shopper_client.get(reverse("loyalty:history") + "?page=2").status_code == 200
    with django_assert_max_num_queries(6):
        assert shopper_client.get(reverse("members:card")).status_code == 200


@pytest.mark.django_db
def test_entry_detail_names_the_lots_a_redemption_used(shopper_client, member, api_cause):
    services.points_credit(member=member, points=100, description="Purchase A", cause=api_cause)
    entry = services.points_redeem(member=member, points=30, description="Voucher", cause=api_cause)
    page = shopper_client.get(reverse("loyalty:entry", args=[entry.public_id])).content.decode()
    assert "Redeemed: Voucher" in page
    assert "−30 from points earned on" in page


@pytest.mark.django_db
def test_another_members_entries_are_unreachable_by_url(shopper_client, member, api_cause):
    other = MemberFactory()
    secret = services.points_credit(
        member=other, points=777, description="Other's purchase", cause=api_cause
    )
    assert shopper_client.get(reverse("loyalty:entry", args=[secret.public_id])).status_code == 404
    assert shopper_client.get(reverse("loyalty:entry", args=[uuid.uuid4()])).status_code == 404
    assert shopper_client.get("/history/12345/").status_code == 404
    for url in [reverse("loyalty:dashboard"), reverse("loyalty:history"), reverse("members:card")]:
        page = shopper_client.get(url + f"?member={other.pk}").content.decode()
        assert not re.search(r"(?<!\w)777(?!\w)", page)  # not inside a random CSRF token
        assert "Other&#x27;s purchase" not in page
        assert other.card_number not in page


@pytest.mark.django_db
def test_card_page_shows_card_number_and_qr(shopper_client, member):
    from members.cards import card_number_display

    page = shopper_client.get(reverse("members:card")).content.decode()
    assert card_number_display(member.card_number) in page
    assert "<svg" in page


@pytest.mark.django_db
def test_turkish_visitor_gets_turkish_pages(client):
    page = client.get(reverse("loyalty:home"), HTTP_ACCEPT_LANGUAGE="tr").content.decode()
    assert 'lang="tr"' in page
    assert "Ücretsiz katıl" in page
