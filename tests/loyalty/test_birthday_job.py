"""Birthday gifts: on their birthday (program time zone; 29 February on the 28th in other
years) members get their tier's birthday points and the birthday rules' points, once a
year however often the job runs, a day late after an outage, told by e-mail, explained
in their history; set-based, in a constant number of queries per batch."""

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core import mail
from django.core.mail.backends.base import BaseEmailBackend
from django.core.management import call_command
from django.db import connection, transaction
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import formats, timezone, translation
from django_celery_beat.models import PeriodicTask

from loyalty import birthdays, db_copy, jobs, selectors
from loyalty.explain import entry_rules_summary
from loyalty.ledger import Cause, program_settings, system_account
from loyalty.models import (
    Account,
    AccountKind,
    BirthdayGift,
    CapPeriod,
    EarningRule,
    JobRun,
    JournalEntry,
    Membership,
    MembershipPlan,
    MemberTier,
    RuleAward,
    RuleKind,
    Tier,
)
from loyalty.rules import services as rules_services
from loyalty.tiers import TierTable
from members.models import Member
from members.services import member_create
from tests.concurrency import run_at_once
from tests.factories import MemberFactory, StaffFactory

TILL = Cause(source="api", client="test-till")


def at(day: date, hour: int = 6) -> datetime:
    """`hour` o'clock on `day` in the program's time zone."""
    return datetime.combine(day, time(hour), tzinfo=timezone.get_current_timezone())


def born(member, birth_date: date, joined: date = date(2020, 1, 1)) -> Member:
    Member.objects.filter(pk=member.pk).update(birth_date=birth_date, created_at=at(joined, 0))
    member.refresh_from_db()
    return member


def till_member() -> Member:
    """Enrolled at the till: no login, no e-mail address."""
    return member_create(first_name="Deniz")


def give(now, **options):
    return birthdays.birthday_gifts_give(now=now, **options)


def points(member) -> int:
    return selectors.member_points(member=member)[0]


@pytest.fixture
def tiers(db):
    return (
        Tier.objects.create(code="insider", name="Insider", rank=0, threshold=0),
        Tier.objects.create(
            code="vib", name="VIB", rank=1, threshold=350, birthday_points=250,
            earn_multiplier=Decimal("1.25"),
        ),
        Tier.objects.create(
            code="rouge", name="Rouge", rank=2, threshold=1000, birthday_points=500,
        ),
    )  # fmt: skip


def in_tier(member, tier):
    MemberTier.objects.create(member=member, tier=tier, since=at(date(2026, 1, 1)))
    return member


def birthday_rule(points=100, **fields):
    rule = EarningRule(
        code=fields.pop("code", "birthday"), name=fields.pop("name", "Birthday bonus"),
        kind=RuleKind.ACTIVITY, event_type="birthday", points=points, cap_times=1,
        cap_period=CapPeriod.YEAR, **fields,
    )  # fmt: skip
    rule.full_clean()
    return rules_services.earning_rule_save(rule=rule)


TODAY = date(2027, 3, 15)


@pytest.mark.django_db
def test_the_tier_gives_its_birthday_points_once_a_year(tiers):
    _insider, vib, rouge = tiers
    ayse = born(in_tier(MemberFactory(), vib), date(1990, 3, 15))
    can = born(in_tier(MemberFactory(), rouge), date(1985, 3, 15))
    not_today = born(in_tier(MemberFactory(), vib), date(1990, 3, 16))

    first = give(at(TODAY))
    assert (first.members, first.points) == (2, 750)
    assert (points(ayse), points(can), points(not_today)) == (250, 500, 0)
    gift = BirthdayGift.objects.get(member=ayse)
    assert (gift.year, gift.birthday, gift.points) == (2027, TODAY, 250)

    again = give(at(TODAY, 18))  # the same day, later: nothing
    assert (again.members, again.points) == (0, 0)
    # Tomorrow the 15th is still in the catch-up window: only the 16th's birthday is new.
    tomorrow = give(at(TODAY + timedelta(days=1)))
    assert (tomorrow.members, points(not_today)) == (1, 250)
    assert (points(ayse), points(can)) == (250, 500)
    assert BirthdayGift.objects.filter(member=ayse).count() == 1

    next_year = give(at(TODAY.replace(year=2028)), catch_up_days=1)
    assert next_year.members == 2 and points(ayse) == 500


@pytest.mark.django_db
def test_a_missed_run_gives_the_gift_a_day_late_but_never_twice(tiers):
    _insider, vib, _rouge = tiers
    ayse = born(in_tier(MemberFactory(), vib), date(1990, 3, 15))
    # The server was down on the 15th: the run on the 16th catches up.
    assert give(at(TODAY + timedelta(days=1))).members == 1
    assert BirthdayGift.objects.get(member=ayse).birthday == TODAY
    assert give(at(TODAY + timedelta(days=2))).members == 0
    assert points(ayse) == 250


@pytest.mark.django_db
def test_a_birthday_older_than_the_catch_up_window_is_let_go(tiers):
    _insider, vib, _rouge = tiers
    ayse = born(in_tier(MemberFactory(), vib), date(1990, 3, 15))
    late = TODAY + timedelta(days=birthdays.CATCH_UP_DAYS)
    assert give(at(late)).members == 0
    assert points(ayse) == 0


@pytest.mark.django_db
def test_a_member_who_joined_after_their_birthday_waits_for_the_next(tiers):
    _insider, vib, _rouge = tiers
    newcomer = born(in_tier(MemberFactory(), vib), date(1990, 3, 14), joined=TODAY)
    assert give(at(TODAY)).members == 0
    assert points(newcomer) == 0


@pytest.mark.django_db
@pytest.mark.parametrize(
    "birth_date, run_on, celebrated",
    [
        (date(2004, 2, 29), date(2027, 2, 28), date(2027, 2, 28)),  # no 29th: the 28th
        (date(2004, 2, 29), date(2028, 2, 29), date(2028, 2, 29)),  # a leap year: the day
        (date(2005, 2, 28), date(2028, 2, 28), date(2028, 2, 28)),
    ],
)
def test_29_february_birthdays_fall_on_28_february_in_other_years(
    tiers, birth_date, run_on, celebrated
):
    _insider, vib, _rouge = tiers
    member = born(in_tier(MemberFactory(), vib), birth_date)
    assert give(at(run_on), catch_up_days=1).members == 1
    assert BirthdayGift.objects.get(member=member).birthday == celebrated
    assert give(at(run_on + timedelta(days=1))).members == 0  # 1 March: not again


@pytest.mark.django_db
def test_a_29_february_birthday_is_not_early_in_a_leap_year(tiers):
    _insider, vib, _rouge = tiers
    member = born(in_tier(MemberFactory(), vib), date(2004, 2, 29))
    assert give(at(date(2028, 2, 28)), catch_up_days=1).members == 0
    assert points(member) == 0


@pytest.mark.django_db
@override_settings(TIME_ZONE="Europe/Istanbul")
def test_today_is_today_in_the_programs_time_zone(tiers):
    _insider, vib, _rouge = tiers
    member = born(in_tier(MemberFactory(), vib), date(1990, 3, 16))
    late_evening_utc = datetime(2027, 3, 15, 21, 30, tzinfo=UTC)
    # 21:30 UTC on the 15th is 00:30 on the 16th in Istanbul: the birthday has begun.
    assert give(late_evening_utc, catch_up_days=1).members == 1
    assert BirthdayGift.objects.get(member=member).birthday == date(2027, 3, 16)


@pytest.mark.django_db
def test_members_without_a_birthday_gift_or_birth_date_are_untouched(tiers):
    insider, vib, _rouge = tiers
    no_tier_row = born(MemberFactory(), date(1990, 3, 15))  # the entry tier: no gift
    insider_row = born(in_tier(MemberFactory(), insider), date(1990, 3, 15))
    no_birth_date = in_tier(MemberFactory(), vib)
    till_only = born(in_tier(till_member(), vib), date(1990, 3, 15))

    result = give(at(TODAY))

    assert (result.members, result.points) == (1, 250)
    assert points(till_only) == 250
    untouched = [no_tier_row, insider_row, no_birth_date]
    assert not Account.objects.filter(member__in=untouched).exists()
    assert not JournalEntry.objects.filter(member__in=untouched).exists()


@pytest.mark.django_db
def test_a_paid_plans_tier_gives_its_birthday_gift(tiers):
    insider, vib, _rouge = tiers
    plus = MembershipPlan.objects.create(
        code="plus", name="Plus", sku="PLUS-1Y", fee=Decimal("49.00"), tier=vib
    )
    member = born(in_tier(MemberFactory(), insider), date(1990, 3, 15))
    lapsed = born(in_tier(MemberFactory(), insider), date(1990, 3, 15))
    staff = StaffFactory()
    for who, starts, ends in ((member, -30, 300), (lapsed, -60, -1)):  # days from today
        Membership.objects.create(
            member=who, plan=plus, starts_at=at(TODAY) + timedelta(days=starts),
            ends_at=at(TODAY) + timedelta(days=ends), months=12,
            source=Membership.Source.STAFF, staff=staff, reason="A prize",
        )  # fmt: skip
    assert give(at(TODAY)).members == 1
    assert (points(member), points(lapsed)) == (250, 0)


@pytest.mark.django_db
def test_no_tiers_and_no_rules_means_no_gifts(db):
    member = born(MemberFactory(), date(1990, 3, 15))
    assert give(at(TODAY)).members == 0
    assert not Account.objects.filter(member=member).exists()


@pytest.mark.django_db
def test_the_history_line_says_happy_birthday_and_who_gave_what(tiers, client):
    _insider, vib, _rouge = tiers
    ayse = born(in_tier(MemberFactory(), vib), date(1990, 3, 15))
    give(at(TODAY))
    entry = JournalEntry.objects.get(member=ayse)
    assert entry.description == "Birthday gift"
    assert entry.details["birthday"] == "2027-03-15"
    assert entry_rules_summary(entry) == "Happy birthday! A gift from VIB: +250"

    client.force_login(ayse.user)
    page = client.get(reverse("loyalty:history")).content.decode()
    assert "Earned: Birthday gift" in page
    assert "Happy birthday! A gift from VIB: +250" in page
    detail = client.get(reverse("loyalty:entry", args=[entry.public_id])).content.decode()
    assert "Happy birthday! A gift from VIB" in detail
    with translation.override("tr"):  # in the reader's language, whatever it was written in
        summary = entry_rules_summary(entry)
    assert summary == "Doğum gününüz kutlu olsun! VIB seviyesinden bir hediye: +250"


@pytest.mark.django_db
def test_birthday_rules_add_their_points_within_their_caps(tiers, api_client):
    insider, vib, _rouge = tiers
    birthday_rule(points=100, min_tier=vib)
    ayse = born(in_tier(MemberFactory(), vib), date(1990, 3, 15))
    celebrated_at_the_till = born(in_tier(MemberFactory(), vib), date(1991, 3, 15))
    insider_member = born(in_tier(MemberFactory(), insider), date(1992, 3, 15))
    # Earlier this year a till sent the `birthday` event for one of them: the rule paid.
    with transaction.atomic():
        earning, entry = rules_services.activity_earn(
            member=celebrated_at_the_till, event_type="birthday", at=at(date(2027, 1, 10)),
            store=None, cause=TILL,
        )  # fmt: skip
        rules_services.awards_record(
            member=celebrated_at_the_till, awards=earning.awards, at=at(date(2027, 1, 10)),
            entry=entry,
        )  # fmt: skip

    result = give(at(TODAY))

    assert points(ayse) == 350
    assert points(celebrated_at_the_till) == 100 + 250  # the rule does not pay twice
    assert points(insider_member) == 0  # the rule is for VIB and above
    assert result.members == 2
    entry = JournalEntry.objects.get(member=ayse)
    assert entry_rules_summary(entry) == (
        "Happy birthday! A gift from VIB: +250 · Birthday bonus: +100"
    )
    assert RuleAward.objects.filter(member=ayse, entry=entry, points=100).count() == 1
    # Next year, the rule pays again.
    give(at(TODAY.replace(year=2028)))
    assert points(ayse) == 700


@pytest.mark.django_db
def test_a_rule_alone_gives_a_gift_to_members_without_a_tier_gift(db):
    birthday_rule(points=40, name="Birthday treat")
    member = born(MemberFactory(), date(1990, 3, 15))
    assert give(at(TODAY)).points == 40
    entry = JournalEntry.objects.get(member=member)
    assert entry.description == "Birthday treat"


@pytest.mark.django_db
def test_members_with_a_login_are_told_by_e_mail_once(tiers):
    _insider, vib, _rouge = tiers
    ayse = born(in_tier(MemberFactory(first_name="Ayşe"), vib), date(1990, 3, 15))
    born(in_tier(till_member(), vib), date(1990, 3, 15))  # no e-mail address

    result = give(at(TODAY))

    assert (result.members, result.emails) == (2, 1)
    [message] = mail.outbox
    assert message.to == [ayse.user.email]
    assert message.subject == "Happy birthday from Tally Rewards: 250 points for you"
    assert "Hello Ayşe," in message.body
    assert "we have added 250 points to your account" in message.body
    assert "http://127.0.0.1:8000/dashboard/" in message.body
    assert '<html lang="en">' in message.alternatives[0][0]
    assert give(at(TODAY, 18)).emails == 0
    assert len(mail.outbox) == 1


class BrokenBackend(BaseEmailBackend):
    """An SMTP server that is down."""

    def send_messages(self, email_messages):
        raise ConnectionRefusedError("SMTP server unreachable")


@pytest.mark.django_db
def test_a_mail_outage_keeps_the_gift_and_the_next_run_sends_the_e_mail(tiers):
    _insider, vib, _rouge = tiers
    ayse = born(in_tier(MemberFactory(), vib), date(1990, 3, 15))
    with (
        override_settings(EMAIL_BACKEND="tests.loyalty.test_birthday_job.BrokenBackend"),
        pytest.raises(ConnectionRefusedError),
    ):
        jobs.job_run("birthday_gifts", now=at(TODAY))
    assert JobRun.objects.get().status == JobRun.Status.FAILED
    assert points(ayse) == 250  # given, and committed before the e-mails
    assert BirthdayGift.objects.get().emailed_at is None

    run = jobs.job_run("birthday_gifts", now=at(TODAY + timedelta(days=1)))
    assert run.counts == {"members": 0, "points": 0, "emails": 1}
    assert len(mail.outbox) == 1 and points(ayse) == 250


@pytest.mark.django_db
def test_run_job_birthday_gifts_shows_progress_and_is_scheduled_daily(tiers):
    _insider, vib, _rouge = tiers
    for year in range(1980, 1985):
        born(in_tier(MemberFactory(), vib), date(year, 3, 15))
    out = StringIO()
    call_command(
        "run_job", "birthday_gifts", "--now", at(TODAY).isoformat(), "--batch-size", "2",
        stdout=out,
    )  # fmt: skip
    lines = out.getvalue().splitlines()
    progress = [line.split(",")[0] for line in lines if "/5 members" in line]
    assert progress[:4] == [
        "birthday_gifts: 0/5 members", "birthday_gifts: 2/5 members",
        "birthday_gifts: 4/5 members", "birthday_gifts: 5/5 members",
    ]  # fmt: skip
    assert "5 gifts, 1,250 points, 5 e-mails" in lines[-2]
    run = JobRun.objects.get()
    assert (run.status, run.processed, run.total) == ("succeeded", 5, 5)
    assert run.counts == {"members": 5, "points": 1250, "emails": 5}

    again = jobs.job_run("birthday_gifts", now=at(TODAY, 7))
    assert again.counts == {"members": 0, "points": 0, "emails": 0}
    schedule = PeriodicTask.objects.get(task="loyalty.tasks.birthday_gifts")
    assert (schedule.crontab.minute, schedule.crontab.hour, schedule.enabled) == ("0", "6", True)


@pytest.mark.django_db
def test_a_batch_costs_the_same_queries_whatever_its_size(postgres_only, tiers, monkeypatch):
    # Many rows go in by COPY, which draws the entries' ids first: one query more than an
    # INSERT. Both sizes here take the COPY way, so the count must not move.
    monkeypatch.setattr(db_copy, "COPY_FROM", 1)
    _insider, vib, rouge = tiers
    birthday_rule(points=100, min_tier=vib)
    with transaction.atomic():  # rows every program has after its first day
        program_settings(), system_account(AccountKind.ISSUANCE)

    def run_with(n, day):
        for i in range(n):
            member = till_member() if i % 3 == 0 else MemberFactory()
            born(in_tier(member, vib if i % 2 else rouge), date(1990, day.month, day.day))
        with CaptureQueriesContext(connection) as captured:
            result = give(at(day), batch_size=n, catch_up_days=1)
        assert result.members == n
        return len(captured)

    small = run_with(3, TODAY)
    large = run_with(40, TODAY + timedelta(days=1))
    assert small == large <= 28  # 12 per batch, the rest once per run


@pytest.mark.django_db
def test_the_birthday_query_uses_the_index(postgres_only, tiers):
    due = birthdays._due(birthdays._window(TODAY, 1), TierTable.load(), [], at(TODAY), False)
    sql, params = due.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("EXPLAIN " + sql, params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "member_birthday" in plan, plan


@pytest.mark.django_db(transaction=True)
def test_two_runs_at_once_give_one_gift(postgres_only, tiers):
    _insider, vib, _rouge = tiers
    members = [born(in_tier(MemberFactory(), vib), date(1990, 3, 15)) for _ in range(6)]
    results = run_at_once(lambda i: give(at(TODAY), batch_size=2), count=3)
    assert not [r for r in results if isinstance(r, Exception)], results
    assert sum(r.members for r in results) == 6
    assert [points(m) for m in members] == [250] * 6
    assert len(mail.outbox) == 6


# The dashboard ------------------------------------------------------------------------


@pytest.fixture
def shopper(client, member):
    client.force_login(member.user)
    return client


def dashboard(client) -> str:
    return client.get(reverse("loyalty:dashboard")).content.decode()


@pytest.mark.django_db
def test_the_dashboard_invites_members_without_a_birth_date(tiers, shopper, member):
    in_tier(member, tiers[1])
    html = dashboard(shopper)
    assert 'data-testid="birthday-add"' in html
    assert "As a VIB member you get 250 points on your birthday." in html
    assert f'href="{reverse("members:profile")}"' in html


@pytest.mark.django_db
def test_the_dashboard_says_nothing_of_birthdays_when_there_are_no_gifts(shopper, member):
    assert 'data-testid="birthday-' not in dashboard(shopper)


def on_1992(day: date) -> date:
    """A birth date with the month and day of `day` (1992 had a 29 February)."""
    return day.replace(year=1992)


@pytest.mark.django_db
def test_the_dashboard_shows_the_gift_in_the_birthday_week(tiers, shopper, member):
    in_tier(member, tiers[1])
    today = timezone.localdate()
    soon = today + timedelta(days=2)
    born(member, on_1992(soon))
    html = dashboard(shopper)
    assert 'data-testid="birthday-soon"' in html
    day = formats.date_format(soon, "DATE_FORMAT")
    assert f"On {day}, a gift of 250 points arrives in your account." in html

    born(member, on_1992(today))
    assert "Your gift of 250 points is on its way to your account." in dashboard(shopper)
    give(timezone.now())
    html = dashboard(shopper)
    assert 'data-testid="birthday-given"' in html
    assert "Your gift of 250 points is in your account." in html

    born(member, on_1992(today + timedelta(days=60)))
    assert 'data-testid="birthday-' not in dashboard(shopper)


@pytest.mark.parametrize(
    "birth_date, today, state",
    [
        (date(1990, 3, 18), date(2027, 3, 15), "soon"),
        (date(1990, 3, 19), date(2027, 3, 15), None),  # 4 days ahead: not this week yet
        (date(1990, 3, 15), date(2027, 3, 15), "today"),
        (date(1990, 3, 13), date(2027, 3, 15), "today"),  # missed: the job catches up
        (date(1990, 1, 1), date(2026, 12, 30), "soon"),  # across new year
        (date(1990, 12, 31), date(2027, 1, 2), "today"),
        (date(2004, 2, 29), date(2027, 2, 27), "soon"),  # celebrated on the 28th
    ],
)
@pytest.mark.django_db
def test_the_birthday_week(tiers, birth_date, today, state):
    member = born(in_tier(MemberFactory(), tiers[1]), birth_date)
    outlook = birthdays.member_birthday_outlook(
        member=member, tier=tiers[1], table=TierTable.load(), now=at(today)
    )
    assert (outlook.state if outlook else None) == state
    if outlook:
        assert outlook.points == 250


@pytest.mark.django_db
def test_the_birthday_card_costs_the_dashboard_little(
    tiers, shopper, member, django_assert_max_num_queries
):
    in_tier(member, tiers[1])
    born(member, on_1992(timezone.localdate()))
    give(timezone.now())
    with django_assert_max_num_queries(11):
        assert "birthday-given" in dashboard(shopper)
