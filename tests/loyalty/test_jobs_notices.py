"""Expiry notices: a member with a login is told by e-mail, once per expiry day and within
the program's notice window, how many points expire, what they are worth and when, with
a link to the portal; till-only members get nothing; a failed send is tried again."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core import mail
from django.core.mail.backends.base import BaseEmailBackend
from django.db import connection
from django.test.utils import CaptureQueriesContext, override_settings
from django.utils import formats, timezone, translation

from loyalty import jobs, notices, services
from loyalty.ledger import program_settings
from loyalty.models import EntryKind, ExpiryNotice, JobRun
from members.services import member_create
from tests.factories import MemberFactory
from tests.loyalty.population import TILL


def credit(member, points, *, expires_in_days, now=None):
    return services.points_credit(
        member=member, points=points, description="Purchase", cause=TILL, pending_days=0,
        expires_at=(now or timezone.now()) + timedelta(days=expires_in_days),
    )  # fmt: skip


def send(now=None):
    return notices.expiry_notices_send(now=now or timezone.now())


@pytest.fixture
def program(db):
    settings = program_settings()
    settings.expiry_notice_days = 30
    settings.point_value = Decimal("0.02")
    settings.currency = "EUR"
    settings.save()
    return settings


@pytest.mark.django_db
def test_a_member_is_told_before_points_expire_once_per_day_and_then_they_expire(program, member):
    now = timezone.now()
    earned = credit(member, 120, expires_in_days=10, now=now)
    credit(member, 500, expires_in_days=90, now=now)  # outside the 30-day window
    services.points_redeem(member=member, points=50, description="Reward", cause=TILL)

    result = send(now)

    assert (result.members, result.points) == (1, 70)
    [message] = mail.outbox
    assert message.to == [member.user.email]
    expires_on = timezone.localdate(earned.lots.get().expires_at)
    day = formats.date_format(expires_on, "DATE_FORMAT")
    assert message.subject == f"70 of your points expire on {day}"
    assert f"70 points (worth 1.40 EUR) expire on {day}" in message.body
    assert "http://127.0.0.1:8000/dashboard/" in message.body
    assert f"Hello {member.first_name}," in message.body
    html, mimetype = message.alternatives[0]
    assert mimetype == "text/html" and 'href="http://127.0.0.1:8000/dashboard/"' in html
    assert "70 points (worth 1.40 EUR)" in html
    assert list(ExpiryNotice.objects.values_list("member", "expires_on", "points")) == [
        (member.pk, expires_on, 70)
    ]

    assert send(now + timedelta(days=1)).members == 0, "told once for that day"
    assert len(mail.outbox) == 1

    # After the expiry date the expiry job takes exactly the 70 the member was told about,
    # and their history says why.
    assert services.lots_expire_due(now=now + timedelta(days=11)) == 70
    entry = member.entries.get(kind=EntryKind.EXPIRY)
    assert entry.details["lots"][0]["points"] == 70
    assert send(now + timedelta(days=11)).members == 0, "expired points are not announced"


@pytest.mark.django_db
def test_a_new_expiry_day_gets_its_own_notice(program, member):
    now = timezone.now()
    credit(member, 40, expires_in_days=5, now=now)
    send(now)
    credit(member, 60, expires_in_days=20, now=now)
    credit(member, 10, expires_in_days=20, now=now)

    assert send(now).members == 1
    assert len(mail.outbox) == 2
    assert "70 points" in mail.outbox[1].body and "40 points" not in mail.outbox[1].body
    assert ExpiryNotice.objects.filter(member=member).count() == 2


@pytest.mark.django_db
def test_only_members_with_a_login_and_spendable_expiring_points_are_told(program):
    now = timezone.now()
    till_only = member_create(first_name="Till")  # enrolled at a till: no e-mail address
    credit(till_only, 100, expires_in_days=3, now=now)
    inactive = MemberFactory()
    credit(inactive, 100, expires_in_days=3, now=now)
    inactive.user.is_active = False
    inactive.user.save()
    spent = MemberFactory()
    credit(spent, 100, expires_in_days=3, now=now)
    services.points_redeem(member=spent, points=100, description="Reward", cause=TILL)
    pending = MemberFactory()
    services.points_credit(
        member=pending, points=100, description="Purchase", cause=TILL, pending_days=14,
        expires_at=now + timedelta(days=3),
    )  # fmt: skip
    never = MemberFactory()
    credit(never, 100, expires_in_days=400, now=now)

    assert send(now).members == 0
    assert mail.outbox == []
    assert not ExpiryNotice.objects.exists()


@pytest.mark.django_db
def test_no_notice_window_sends_nothing(program, member):
    program.expiry_notice_days = 0
    program.save()
    credit(member, 100, expires_in_days=1)
    assert send().members == 0 and mail.outbox == []


class BrokenBackend(BaseEmailBackend):
    """An SMTP server that is down."""

    def send_messages(self, email_messages):
        raise ConnectionRefusedError("SMTP server unreachable")


@pytest.mark.django_db
def test_a_failed_send_records_nothing_and_the_next_run_sends(program, member):
    credit(member, 100, expires_in_days=3)
    with (
        override_settings(EMAIL_BACKEND="tests.loyalty.test_jobs_notices.BrokenBackend"),
        pytest.raises(ConnectionRefusedError),
    ):
        jobs.job_run("expiry_notices")
    failed = JobRun.objects.get(job="expiry_notices")
    assert failed.status == JobRun.Status.FAILED and "SMTP server unreachable" in failed.error
    assert not ExpiryNotice.objects.exists()

    assert jobs.job_run("expiry_notices").counts["members"] == 1
    assert len(mail.outbox) == 1


@pytest.mark.django_db
def test_notices_are_in_the_programs_language(program, member, settings):
    settings.LANGUAGE_CODE = "tr"
    credit(member, 120, expires_in_days=10)
    send()
    [message] = mail.outbox
    with translation.override("tr"):
        assert "puan" in message.subject.lower(), message.subject
        assert "puan" in message.body.lower() and "Merhaba" in message.body, message.body
    assert '<html lang="tr">' in message.alternatives[0][0]


@pytest.mark.django_db
def test_a_notice_batch_costs_the_same_queries_whatever_its_size(postgres_only, program):
    members = [MemberFactory() for _ in range(23)]
    now = timezone.now()
    for member in members:
        credit(member, 30, expires_in_days=5, now=now)
        credit(member, 20, expires_in_days=6, now=now)
    until = now + timedelta(days=30)

    def queries(first, last):
        with CaptureQueriesContext(connection) as captured:
            result = notices._notify_batch(
                first=first.pk, last=last.pk, now=now, until=until, program=program
            )
        return len(captured), result

    small, small_result = queries(members[0], members[2])
    large, large_result = queries(members[3], members[22])
    assert (small_result.members, large_result.members) == (3, 20)
    assert small == large <= 5
