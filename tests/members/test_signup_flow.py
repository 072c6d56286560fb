import re

import pytest
from django.core import mail
from django.urls import reverse

from loyalty import services
from loyalty.ledger import program_settings
from members.models import Member

PASSWORD = "correct-horse-battery-42"


def _verification_link(message) -> str:
    return re.search(r"https?://[^/\s]+(/accounts/confirm-email/\S+/)", message.body).group(1)


@pytest.mark.django_db
def test_signup_verify_login_shows_balance_and_money_value(client, api_cause):
    settings = program_settings()
    settings.point_value = "0.05"
    settings.currency = "TRY"
    settings.save()

    response = client.post(
        reverse("account_signup"),
        {
            "email": "Ayse@Example.com",
            "password1": PASSWORD,
            "password2": PASSWORD,
            "first_name": "Ayşe",
            "last_name": "Kaya",
            "marketing_consent": "on",
        },
    )
    assert response.status_code == 302
    member = Member.objects.get(user__email="ayse@example.com")
    assert len(member.card_number) == 13
    assert member.marketing_consent is True

    # Not verified yet: the dashboard is out of reach.
    assert client.get(reverse("loyalty:dashboard")).status_code == 302
    assert len(mail.outbox) == 1
    link = _verification_link(mail.outbox[0])
    response = client.post(link)
    assert response.status_code == 302

    services.points_credit(member=member, points=1234, description="Purchase R-1", cause=api_cause)
    client.logout()
    response = client.post(
        reverse("account_login"), {"login": "ayse@example.com", "password": PASSWORD}
    )
    assert response.status_code == 302
    assert response.url == reverse("loyalty:dashboard")

    page = client.get(reverse("loyalty:dashboard")).content.decode()
    assert "1,234" in page
    assert "61.70 TRY" in page  # 1234 × 0.05
    assert "Earned: Purchase R-1" in page
    assert "Hello, Ayşe K." in page


@pytest.mark.django_db
def test_login_is_refused_until_email_is_verified(client):
    client.post(
        reverse("account_signup"),
        {"email": "new@example.com", "password1": PASSWORD, "password2": PASSWORD},
    )
    client.logout()
    response = client.post(
        reverse("account_login"), {"login": "new@example.com", "password": PASSWORD}
    )
    assert response.status_code == 302
    assert "confirm-email" in response.url or "verification" in response.url
    assert client.get(reverse("loyalty:dashboard")).status_code == 302


@pytest.mark.django_db
def test_password_reset_mail_links_to_a_working_form(client, member):
    response = client.post(reverse("account_reset_password"), {"email": member.user.email})
    assert response.status_code == 302
    assert len(mail.outbox) == 1
    path = re.search(
        r"https?://[^/\s]+(/accounts/password/reset/key/\S+/)", mail.outbox[0].body
    ).group(1)
    response = client.get(path, follow=True)
    assert response.status_code == 200
    assert b"password1" in response.content


@pytest.mark.django_db
def test_signup_with_existing_email_creates_no_second_member(client, member):
    before = Member.objects.count()
    client.post(
        reverse("account_signup"),
        {"email": member.user.email, "password1": PASSWORD, "password2": PASSWORD},
    )
    assert Member.objects.count() == before
