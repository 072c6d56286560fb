"""Tier warnings: members who would move down at their next review are told by e-mail,
ahead of it, what keeps their tier ("spend 120.00 EUR more by 31 December to keep VIB").

The pattern of loyalty/notices.py: once per member and review day (TierWarning), the
record written with the e-mail in one transaction, so a run that fails to send writes
nothing and the next run tries again. Only members with an active login are written to;
the others see the same warning in the portal and at the till (POS member summary).
"""

from dataclasses import dataclass
from datetime import date, datetime

from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection
from django.db import connection, transaction
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone, translation

from loyalty import tiers
from loyalty.ledger import program_settings
from loyalty.models import ProgramSettings, TierWarning
from members.models import Member


@dataclass(slots=True)
class WarningResult:
    members: int = 0  # e-mails sent
    at_risk: int = 0  # members at risk in the window (told now or before, or without e-mail)

    def __iadd__(self, other: "WarningResult") -> "WarningResult":
        self.members += other.members
        self.at_risk += other.at_risk
        return self


def tier_warnings_send(
    *, now: datetime | None = None, batch_size: int | None = None, progress=None
) -> WarningResult:
    """E-mail every member with a login who is at risk of moving down at a review within
    the program's warning window (ProgramSettings.tier_notice_days), once per review.
    Safe to run twice: the second run finds everyone told."""
    now = now or timezone.now()
    program = program_settings()
    batch_size = batch_size or settings.JOBS_BATCH_SIZE
    at_risk = list(tiers.tiers_at_risk(now=now, settings=program))
    result = WarningResult()
    if progress:
        progress(0, len(at_risk), result)
    for start in range(0, len(at_risk), batch_size):
        chunk = at_risk[start : start + batch_size]
        with transaction.atomic(durable=True):
            result += _warn_batch(chunk, program=program)
        if progress:
            progress(start + len(chunk), len(at_risk), result)
    return result


def _warn_batch(chunk: list[tiers.AtRisk], *, program: ProgramSettings) -> WarningResult:
    """A constant number of queries: who has a login, record the warnings, send."""
    members = {
        m.pk: m
        for m in Member.objects.filter(
            pk__in=[r.member_id for r in chunk], user__is_active=True
        ).select_related("user")
    }
    reachable = [r for r in chunk if r.member_id in members]
    recorded = _record(reachable) if reachable else set()
    messages = [
        _message(members[r.member_id], r, program)
        for r in reachable
        if (r.member_id, timezone.localdate(r.review_on)) in recorded
    ]
    if messages:
        get_connection().send_messages(messages)
    return WarningResult(members=len(messages), at_risk=len(chunk))


def _record(rows: list[tiers.AtRisk]) -> set[tuple[int, date]]:
    """Insert a warning per (member, review day); returns those this run inserted (one
    that exists, e.g. from a concurrent run, is skipped)."""
    ops = connection.ops
    sent_at = ops.adapt_datetimefield_value(timezone.now())
    params: list = []
    for r in rows:
        params += [
            r.member_id, ops.adapt_datefield_value(timezone.localdate(r.review_on)), r.tier.pk,
            ops.adapt_decimalfield_value(r.needed, 14, 2), sent_at,
        ]  # fmt: skip
    values = ", ".join(["(%s, %s, %s, %s, %s)"] * len(rows))
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {TierWarning._meta.db_table} "
            f"(member_id, review_on, tier_id, needed, sent_at) VALUES {values} "
            "ON CONFLICT (member_id, review_on) DO NOTHING RETURNING member_id, review_on",
            params,
        )
        returned = cursor.fetchall()
    return {(m, d if isinstance(d, date) else date.fromisoformat(d)) for m, d in returned}


def _message(member: Member, risk: tiers.AtRisk, program: ProgramSettings):
    """The e-mail, plain text and HTML, in the program's language."""
    with translation.override(settings.LANGUAGE_CODE):
        context = {
            "member": member,
            "tier": risk.tier,
            "drop_to": risk.drop_to,
            "review_on": timezone.localdate(risk.review_on),
            "needed": tiers.measure_text(program, risk.needed),
            "kept": tiers.measure_text(program, risk.kept),
            "spend": program.tier_basis == "spend",
            "program": program,
            "portal_url": settings.SITE_URL + reverse("loyalty:tiers"),
        }
        subject = " ".join(
            render_to_string("loyalty/email/tier_warning_subject.txt", context).split()
        )
        text = render_to_string("loyalty/email/tier_warning.txt", context)
        html = render_to_string("loyalty/email/tier_warning.html", context)
    message = EmailMultiAlternatives(subject, text, to=[member.user.email])
    message.attach_alternative(html, "text/html")
    return message
