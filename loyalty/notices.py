"""Expiry notices: members are told by e-mail, ahead of time, that points will expire.

Once per member and expiry day: the days a member was told about are recorded
(ExpiryNotice), and the record is written with the e-mail in one transaction, so a run
that fails to send writes nothing and the next run tries again. Only members with a
login have an e-mail address; till-only members (no user) get none and see the
upcoming expiry at the till or in the portal once they sign up.
"""

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection
from django.db import connection
from django.db.models import Exists, OuterRef, Sum
from django.db.models.functions import TruncDate
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone, translation

from loyalty import ledger_bulk
from loyalty.ledger import program_settings
from loyalty.models import ExpiryNotice, Lot, ProgramSettings
from loyalty.money import Money
from loyalty.selectors import points_value
from members.models import Member


@dataclass(slots=True)
class NoticeResult:
    members: int = 0  # e-mails sent
    points: int = 0  # points they were told about
    days: int = 0  # (member, expiry day) pairs recorded

    def __iadd__(self, other: "NoticeResult") -> "NoticeResult":
        self.members += other.members
        self.points += other.points
        self.days += other.days
        return self


@dataclass(frozen=True, slots=True)
class ExpiringDay:
    day: date
    points: int
    value: Money


def expiry_notices_send(
    *, now: datetime | None = None, batch_size: int | None = None, progress=None
) -> NoticeResult:
    """E-mail every member with a login whose points expire within the program's notice
    window (ProgramSettings.expiry_notice_days) about the days not told yet. Safe to run
    twice: the second run finds every day already told."""
    now = now or timezone.now()
    program = program_settings()
    until = now + timedelta(days=program.expiry_notice_days)

    def notify(*, first, last, now):
        return _notify_batch(first=first, last=last, now=now, until=until, program=program)

    return ledger_bulk.in_batches(
        notify, now=now, batch_size=batch_size, progress=progress, result=NoticeResult()
    )


def _notify_batch(*, first, last, now, until, program: ProgramSettings) -> NoticeResult:
    """One batch in a constant number of queries: who has points expiring in the window
    and not yet told (one grouped query), record the notices, fetch the addresses, send."""
    if until <= now:
        return NoticeResult()
    expiring = (
        Lot.objects.filter(
            # The batch's members with a login. The range is said twice, on the account
            # and on the member, so PostgreSQL reads only the batch's rows of both.
            account__member__id__range=(first, last),
            account__member__in=Member.objects.filter(
                pk__range=(first, last), user__is_active=True
            ),
            pending=False,
            remaining__gt=0,
            expires_at__gt=now,
            expires_at__lte=until,
        )
        .annotate(day=TruncDate("expires_at"))
        .exclude(
            Exists(
                ExpiryNotice.objects.filter(
                    member_id=OuterRef("account__member_id"), expires_on=OuterRef("day")
                )
            )
        )
        .values_list("account__member_id", "day")
        .annotate(points=Sum("remaining"))
        .order_by("account__member_id", "day")
    )
    rows = list(expiring)
    if not rows:
        return NoticeResult()
    recorded = _record(rows, sent_at=timezone.now())  # a concurrent run may have told some
    if not recorded:
        return NoticeResult()
    members = (
        Member.objects.filter(pk__in={m for m, _ in recorded})
        .select_related("user")
        .only("pk", "first_name", "user__email")
    )
    days_by_member: dict[int, list[ExpiringDay]] = {}
    for member_id, day, points in rows:
        if (member_id, day) in recorded:
            days_by_member.setdefault(member_id, []).append(
                ExpiringDay(day, points, points_value(points, program))
            )
    # In the program's language: members have no language of their own yet.
    with translation.override(settings.LANGUAGE_CODE):
        portal_url = settings.SITE_URL + reverse("loyalty:dashboard")
        messages = [
            _message(member, days_by_member[member.pk], program, portal_url)
            for member in members.order_by("pk")
        ]
    get_connection().send_messages(messages)
    return NoticeResult(
        members=len(messages),
        points=sum(d.points for days in days_by_member.values() for d in days),
        days=len(recorded),
    )


def _record(rows, *, sent_at) -> set[tuple[int, date]]:
    """Insert a notice per (member, day); returns those this run inserted (a row that
    exists already, e.g. from a concurrent run, is skipped, not an error)."""
    ops = connection.ops
    table = ExpiryNotice._meta.db_table
    params: list = []
    for member_id, day, points in rows:
        params += [
            member_id,
            ops.adapt_datefield_value(day),
            points,
            ops.adapt_datetimefield_value(sent_at),
        ]
    values = ", ".join(["(%s, %s, %s, %s)"] * len(rows))
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (member_id, expires_on, points, sent_at) VALUES {values} "
            "ON CONFLICT (member_id, expires_on) DO NOTHING RETURNING member_id, expires_on",
            params,
        )
        returned = cursor.fetchall()
    return {(m, d if isinstance(d, date) else date.fromisoformat(d)) for m, d in returned}


def _message(member: Member, days: list[ExpiringDay], program: ProgramSettings, portal_url):
    """The e-mail to one member, plain text and HTML."""
    context = {
        "member": member,
        "days": days,
        "points": sum(d.points for d in days),
        "first_day": days[0].day,
        "program": program,
        "portal_url": portal_url,
    }
    subject = render_to_string("loyalty/email/expiry_notice_subject.txt", context)
    message = EmailMultiAlternatives(
        " ".join(subject.split()),
        render_to_string("loyalty/email/expiry_notice.txt", context),
        to=[member.user.email],
    )
    message.attach_alternative(
        render_to_string("loyalty/email/expiry_notice.html", context), "text/html"
    )
    return message
