import pytest
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.urls import reverse

from loyalty import selectors, services
from loyalty.models import EntryKind, JournalEntry, Posting
from members.models import Member
from tests.factories import MemberFactory, StaffFactory, UserFactory


@pytest.fixture
def staff(db):
    return StaffFactory()


@pytest.fixture
def staff_client(client, staff):
    client.force_login(staff)
    return client


def _adjust_url(member):
    return reverse("admin:loyalty_member_adjust", args=[member.pk])


@pytest.mark.django_db
@pytest.mark.parametrize("field", ["email", "phone", "card"])
def test_staff_finds_a_member_by_email_phone_or_card(staff_client, field):
    member = MemberFactory(phone="+905551112233")
    MemberFactory()  # someone else, who must not match
    term = {"email": member.user.email, "phone": "+905551112233", "card": member.card_number}[field]
    response = staff_client.get(reverse("admin:members_member_changelist"), {"q": term})
    assert response.status_code == 200
    assert list(response.context["cl"].result_list) == [member]


@pytest.mark.django_db
def test_staff_adjustment_with_reason_is_posted_and_audited(staff_client, staff, member):
    response = staff_client.post(
        _adjust_url(member), {"points": "250", "reason": "Goodwill for a late delivery"}
    )
    assert response.status_code == 302
    entry = JournalEntry.objects.get(member=member)
    assert entry.kind == EntryKind.ADJUSTMENT
    assert entry.created_by == staff
    assert entry.reason == "Goodwill for a late delivery"
    assert selectors.member_balance(member=member).points == 250
    page = staff_client.get(
        reverse("admin:members_member_change", args=[member.pk])
    ).content.decode()
    assert "Adjusted by our team: Goodwill for a late delivery" in page


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"points": "100", "reason": ""}, "This field is required"),
        ({"points": "100", "reason": "   "}, "This field is required"),
        ({"points": "0", "reason": "typo"}, "other than zero"),
        ({"points": "abc", "reason": "typo"}, "Enter a whole number"),
        ({"points": "-500", "reason": "Duplicate credit"}, "Balance is 0 points; 500 were asked"),
    ],
)
def test_bad_adjustment_is_refused_with_a_message_and_changes_nothing(
    staff_client, member, data, message
):
    response = staff_client.post(_adjust_url(member), data)
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not JournalEntry.objects.exists()
    assert not Posting.objects.exists()


@pytest.mark.django_db
def test_adjustment_needs_the_adjust_permission(client, member):
    clerk = UserFactory(is_staff=True)
    clerk.user_permissions.add(Permission.objects.get(codename="view_member"))
    client.force_login(clerk)
    response = client.post(_adjust_url(member), {"points": "10", "reason": "why not"})
    assert response.status_code == 403
    assert not JournalEntry.objects.exists()

    clerk.user_permissions.add(Permission.objects.get(codename="adjust_points"))
    response = client.post(
        _adjust_url(member), {"points": "10", "reason": "Missing receipt points"}
    )
    assert response.status_code == 302
    assert selectors.member_balance(member=member).points == 10


@pytest.mark.django_db
def test_ledger_entries_are_read_only_in_the_back_office(staff_client, member, api_cause):
    entry = services.points_credit(
        member=member, points=50, description="Purchase", cause=api_cause
    )
    url = reverse("admin:loyalty_journalentry_change", args=[entry.pk])
    page = staff_client.get(url).content.decode()
    assert "Earned: Purchase" in page
    assert 'name="_save"' not in page
    staff_client.post(url, {"description": "changed"})
    entry.refresh_from_db()
    assert entry.description == "Purchase"
    delete = staff_client.post(
        reverse("admin:loyalty_journalentry_delete", args=[entry.pk]), {"post": "yes"}
    )
    assert delete.status_code == 403
    assert reverse("admin:loyalty_journalentry_add") not in page


@pytest.mark.django_db
@pytest.mark.parametrize("n", [2, 40])
def test_member_change_page_query_count_is_fixed(
    staff_client, member, api_cause, django_assert_max_num_queries, n
):
    for i in range(n):
        services.points_credit(
            member=member, points=5, description=f"Purchase {i}", cause=api_cause
        )
    with django_assert_max_num_queries(16):
        response = staff_client.get(reverse("admin:members_member_change", args=[member.pk]))
    assert response.status_code == 200
    with django_assert_max_num_queries(10):
        assert staff_client.get(reverse("admin:members_member_changelist")).status_code == 200


@pytest.mark.django_db
def test_program_settings_open_straight_on_the_one_program(staff_client):
    response = staff_client.get(reverse("admin:loyalty_programsettings_changelist"))
    assert response.status_code == 302
    assert response.url == reverse("admin:loyalty_programsettings_change", args=[1])
    page = staff_client.get(response.url).content.decode()
    assert "value of one point" in page.lower()


@pytest.mark.django_db
def test_seed_demo_is_repeatable_and_prints_the_logins(capsys):
    call_command("seed_demo")
    first = capsys.readouterr().out
    entries = JournalEntry.objects.count()
    call_command("seed_demo")
    assert JournalEntry.objects.count() == entries
    assert "demo@tally.example" in first
    assert "staff@tally.example" in first
    member = Member.objects.get(user__email="demo@tally.example")
    balance = selectors.member_balance(member=member)
    assert balance.points > 0
    assert balance.pending > 0
    assert balance.expiring_soon, "the demo member should have points expiring soon"


@pytest.mark.django_db
@pytest.mark.parametrize("n", [1, 15])
def test_staff_browse_purchases_read_only_with_fixed_queries(
    staff_client, api_client, django_assert_max_num_queries, n
):
    import json
    import uuid

    from django.utils import timezone

    member = MemberFactory()
    for i in range(n):
        api_client.post(
            "/api/v1/purchases",
            data=json.dumps({
                "card_number": member.card_number, "receipt_id": f"R-{i}", "currency": "EUR",
                "occurred_at": timezone.now().isoformat(), "total": "10.00",
                "lines": [{"sku": "SOAP", "quantity": "1", "unit_price": "10.00"}],
            }),
            content_type="application/json", HTTP_IDEMPOTENCY_KEY=str(uuid.uuid4()),
        )  # fmt: skip
    with django_assert_max_num_queries(10):
        page = staff_client.get(reverse("admin:loyalty_purchase_changelist"))
    assert page.status_code == 200
    assert f"R-{n - 1}" in page.content.decode()
    purchase = member.purchases.first()
    detail = staff_client.get(reverse("admin:loyalty_purchase_change", args=[purchase.pk]))
    assert "SOAP" in detail.content.decode()
    assert 'name="_save"' not in detail.content.decode()
