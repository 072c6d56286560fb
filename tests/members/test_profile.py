"""The member's profile page: name, phone, a birth date set once, consent. A first complete
profile earns the `profile_completed` activity through the rules, once."""

import re
from datetime import date

import pytest
from django.urls import reverse
from django.utils import formats, timezone, translation

from loyalty import selectors
from loyalty.ledger import program_settings
from loyalty.models import CapPeriod, EarningRule, JournalEntry, RuleKind
from loyalty.rules import services as rules_services
from members.models import Member
from members.services import ProfileInvalid, member_profile_update
from members.validators import years_before
from tests.factories import MemberFactory, StaffFactory

PROFILE = reverse("members:profile")


def today():
    return timezone.localdate()


def form(**overrides):
    data = {
        "first_name": "Ayşe",
        "last_name": "Kaya",
        "phone": "+90 555 123 45 67",
        "birth_date": "1990-03-12",
        "marketing_consent": "on",
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


@pytest.fixture
def shopper(client, member):
    client.force_login(member.user)
    return client


def reload(member) -> Member:
    return Member.objects.get(pk=member.pk)


def profile_rule(points=50):
    rule = EarningRule(
        code="profile", name="Complete profile", kind=RuleKind.ACTIVITY,
        event_type="profile_completed", points=points, cap_times=1, cap_period=CapPeriod.EVER,
    )  # fmt: skip
    rule.full_clean()
    return rules_services.earning_rule_save(rule=rule)


@pytest.mark.django_db
def test_the_profile_page_needs_a_login_and_is_linked_from_the_nav(client, shopper):
    assert reverse("account_login") in client.__class__().get(PROFILE).url
    html = shopper.get(PROFILE).content.decode()
    assert f'href="{PROFILE}" aria-current="page"' in html
    # Labelled fields with what a phone needs: the right keyboard and autofill.
    assert '<label for="id_phone">Mobile phone</label>' in html
    assert re.search(r'<input type="tel" name="phone"[^>]*autocomplete="tel"', html)
    assert re.search(r'<input type="date" name="birth_date"[^>]*autocomplete="bday"', html)
    assert 'aria-describedby="id_birth_date_helptext"' in html
    assert "You can set it once; to correct it later, ask our team." in html


@pytest.mark.django_db
def test_a_member_saves_their_profile(shopper, member):
    response = shopper.post(PROFILE, form())
    assert response.status_code == 302 and response.url == PROFILE
    saved = reload(member)
    assert (saved.first_name, saved.last_name) == ("Ayşe", "Kaya")
    assert saved.phone == "+905551234567"  # what was typed, in E.164
    assert saved.birth_date == date(1990, 3, 12)
    assert saved.marketing_consent is True
    page = shopper.get(PROFILE).content.decode()
    assert "Thank you: your profile is complete." in page
    assert formats.date_format(date(1990, 3, 12), "DATE_FORMAT") in page  # shown, not a field
    assert 'name="birth_date"' not in page
    assert "Set once, so that no one can collect a birthday gift twice" in page

    shopper.post(PROFILE, form(phone="0090 555 765 43 21", marketing_consent=None))
    saved = reload(member)
    assert (saved.phone, saved.marketing_consent) == ("+905557654321", False)
    assert "Your profile is saved." in shopper.get(PROFILE).content.decode()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "field, value, error",
    [
        ("phone", "555 123", "Give your number with its country code"),
        ("phone", "+0 555 123 4567", "Give your number with its country code"),
        ("birth_date", "2999-01-01", "A birth date can&#x27;t be in the future."),
        ("birth_date", "tomorrow", "Enter a valid date."),
        ("birth_date", years_before(today(), 12).isoformat(), "at least 13 years old"),
        ("birth_date", "1890-05-01", "more than 120 years ago"),
        ("first_name", "x" * 151, "at most 150 characters"),
    ],
)
def test_bad_input_is_refused_next_to_the_field_and_nothing_is_saved(
    shopper, member, field, value, error
):
    before = reload(member)
    response = shopper.post(PROFILE, form(**{field: value}))
    assert response.status_code == 200
    html = response.content.decode()
    assert error in html
    assert re.search(rf'name="{field}"[^>]*aria-invalid="true"', html)
    after = reload(member)
    assert (after.phone, after.birth_date, after.first_name) == (
        before.phone,
        before.birth_date,
        before.first_name,
    )


@pytest.mark.django_db
def test_a_phone_another_member_uses_is_refused(shopper, member):
    MemberFactory(phone="+905551234567")
    html = shopper.post(PROFILE, form()).content.decode()
    assert "Another member already uses this number." in html
    assert reload(member).phone is None


@pytest.mark.django_db
def test_the_birth_date_is_set_once_then_only_staff_change_it(shopper, member, client):
    shopper.post(PROFILE, form(birth_date="1990-03-12"))
    # A crafted form with another date changes nothing: the field is no longer offered.
    shopper.post(PROFILE, form(birth_date="1990-11-24"))
    assert reload(member).birth_date == date(1990, 3, 12)
    # And the service refuses it outright.
    with pytest.raises(ProfileInvalid) as refused:
        member_profile_update(
            member=reload(member), first_name="A", last_name="K", phone=None,
            marketing_consent=False, birth_date=date(1990, 11, 24),
        )  # fmt: skip
    assert "already set" in refused.value.errors["birth_date"]
    assert reload(member).birth_date == date(1990, 3, 12)

    # Staff correct it in the back office.
    client.force_login(StaffFactory())
    url = reverse("admin:members_member_change", args=[member.pk])
    assert 'name="birth_date"' in client.get(url).content.decode()
    saved = reload(member)
    response = client.post(
        url,
        {
            "user": saved.user_id, "first_name": saved.first_name, "last_name": saved.last_name,
            "phone": saved.phone, "birth_date": "1990-11-24", "marketing_consent": "on",
        },
    )  # fmt: skip
    assert response.status_code == 302, response.content.decode()[:3000]
    assert reload(member).birth_date == date(1990, 11, 24)
    # The back office checks the date too.
    response = client.post(url, {"user": saved.user_id, "birth_date": "2999-01-01"})
    assert "A birth date can&#x27;t be in the future." in response.content.decode()


@pytest.mark.django_db
def test_completing_the_profile_earns_the_rule_once(shopper, member):
    profile_rule(points=50)
    shopper.post(PROFILE, form(phone=None))  # not complete yet: no phone
    assert selectors.member_points(member=member) == (0, 0)
    assert reload(member).profile_completed_at is None

    shopper.post(PROFILE, form())
    assert selectors.member_points(member=member) == (50, 0)
    entry = JournalEntry.objects.get(member=member)
    assert entry.description == "Complete profile"
    assert entry.details["activity"] == "profile_completed"
    completed_at = reload(member).profile_completed_at
    assert completed_at is not None

    # Saving again, or emptying a field and completing it again, earns nothing more.
    shopper.post(PROFILE, form(phone="+905550000001"))
    shopper.post(PROFILE, form(phone=None))
    shopper.post(PROFILE, form(phone="+905550000002"))
    assert selectors.member_points(member=member) == (50, 0)
    assert reload(member).profile_completed_at == completed_at
    history = shopper.get(reverse("loyalty:history")).content.decode()
    assert "Earned: Complete profile" in history


@pytest.mark.django_db
def test_without_a_rule_completing_the_profile_gives_nothing_and_no_error(shopper, member):
    assert shopper.post(PROFILE, form()).status_code == 302
    assert reload(member).profile_completed_at is not None
    assert not JournalEntry.objects.exists()


@pytest.mark.django_db
def test_the_profile_page_in_turkish(shopper, member):
    with translation.override("tr"):
        shopper.cookies["django_language"] = "tr"
        html = shopper.get(PROFILE, HTTP_ACCEPT_LANGUAGE="tr").content.decode()
    assert "Profilim" in html and "Doğum tarihi" in html


@pytest.mark.django_db
def test_the_profile_page_costs_few_queries(shopper, member, django_assert_max_num_queries):
    profile_rule()
    program_settings()  # the program exists
    with django_assert_max_num_queries(5):
        assert shopper.get(PROFILE).status_code == 200
    # The save, with the first completion's points (and the member's first ledger accounts).
    with django_assert_max_num_queries(35):
        assert shopper.post(PROFILE, form()).status_code == 302
