"""Birthday gifts: on a member's birthday their tier's birthday points, plus what the
`birthday` activity rules give, credited once a year, and a short e-mail to say so.

- Whose birthday: the month and day of the birth date, in the program's time zone
  (settings.TIME_ZONE); 29 February birthdays are celebrated on 28 February in other
  years. A run also looks back CATCH_UP_DAYS days, so a run missed in an outage gives the
  gift a day late rather than never. Only members who had joined by their birthday.
- Once a year: a BirthdayGift row per (member, year of the birthday), unique, written in
  the transaction of the ledger entry. A second run the same day, a catching-up run or a
  birth date corrected by staff finds it and gives nothing.
- Set-based: SQL picks the birthdays (an index on the birth date's month and day), and
  they are handled `batch_size` members per transaction, in a constant number of queries
  per batch: no query per member, and no walk over the whole member table.
- The points go through the ledger (credits_post): one entry per member, its breakdown
  saying who gave what ("Happy birthday! A gift from VIB: +250"). Rules are applied by the
  rules engine with their caps, so a till that already sent a `birthday` event this year
  does not make the rule pay twice.
- E-mail: members with an active login are told, once per gift, in a second pass with
  the pattern of loyalty/notices.py (the mark and the send in one transaction): if the
  mail server is down the job fails after the gifts are safely given, and the next run
  sends what was not sent, as long as the birthday is within the catch-up window.
"""

import calendar
import logging
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection
from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from loyalty import ledger, memberships
from loyalty.ledger import Cause, Credit, MemberAccounts, program_settings
from loyalty.models import (
    MEMBER_KINDS,
    Account,
    AccountKind,
    BirthdayGift,
    Membership,
    RuleAward,
    Tier,
)
from loyalty.rules import loader
from loyalty.rules.engine import (
    Context,
    Earning,
    RuleSpec,
    evaluate_activity,
)
from loyalty.tiers import TierTable
from members.models import Member

log = logging.getLogger(__name__)

BIRTHDAY = "birthday"  # the activity type of the birthday rules
CATCH_UP_DAYS = 7  # how far back a run still gives a missed gift
WEEK_DAYS = 3  # the dashboard shows the birthday from 3 days before to 3 days after


@dataclass(slots=True)
class BirthdayResult:
    members: int = 0  # gifts given
    points: int = 0
    emails: int = 0

    def __iadd__(self, other: "BirthdayResult") -> "BirthdayResult":
        self.members += other.members
        self.points += other.points
        self.emails += other.emails
        return self


# Dates ---------------------------------------------------------------------------------


def celebrated_on(birth_date: date, year: int) -> date:
    """The day a birthday is celebrated in `year`: 29 February becomes the 28th when the
    year has no 29th."""
    if (birth_date.month, birth_date.day) == (2, 29) and not calendar.isleap(year):
        return date(year, 2, 28)
    return birth_date.replace(year=year)


def _birth_days(day: date) -> list[tuple[int, int]]:
    """The (month, day) of the birth dates celebrated on `day`."""
    days = [(day.month, day.day)]
    if (day.month, day.day) == (2, 28) and not calendar.isleap(day.year):
        days.append((2, 29))
    return days


def _day_end(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day + timedelta(days=1), time.min))


def _window(today: date, catch_up_days: int) -> dict[tuple[int, int], date]:
    """(month, day) of a birth date → the day in the window it is celebrated on."""
    window = {}
    for back in range(max(catch_up_days, 1)):
        day = today - timedelta(days=back)
        for key in _birth_days(day):
            window[key] = day
    return window


def _giving(table: TierTable, rules: list[RuleSpec]) -> tuple[set[int], bool]:
    """Which members can get anything at all: (the tiers whose members can, whether members
    without a tier of their own can). A tier gives birthday points or a rule applies to it."""
    tiers = {
        t.pk for t in table.by_pk.values() if t.birthday_points or any(r.for_tier(t) for r in rules)
    }
    entry = table.entry
    tierless = entry.pk in tiers if entry is not None else any(r.for_tier(None) for r in rules)
    return tiers, tierless


def _due(
    window: dict[tuple[int, int], date],
    table: TierTable,
    rules: list[RuleSpec],
    now: datetime,
    plans: bool,
):
    """Members whose birthday is in the window, who had joined by then, can get a gift and
    have none for that year yet: one condition per day, each served by the birthday index."""
    condition = Q()
    for (month, day_of_month), day in window.items():
        gifted = BirthdayGift.objects.filter(member_id=OuterRef("pk"), year=day.year)
        condition |= (
            Q(birth_date__month=month, birth_date__day=day_of_month)
            & Q(birth_date__lt=day, created_at__lt=_day_end(day))
            & ~Exists(gifted)
        )
    tiers, tierless = _giving(table, rules)
    eligible = Q(tier_state__tier_id__in=tiers)
    if tierless:  # no row, or a row without a tier: the entry tier
        eligible |= Q(tier_state__tier_id__isnull=True)
    if plans:  # or a paid plan's tier
        paid = Membership.objects.filter(
            memberships.covering(now), member_id=OuterRef("pk"), plan__tier_id__in=tiers
        )
        eligible |= Q(Exists(paid))
    return Member.objects.filter(condition, eligible, birth_date__isnull=False)


def _held(table: TierTable, earned_id: int | None, paid_id: int | None) -> Tier | None:
    """The tier a member holds: the higher of the one earned and the one a paid plan grants
    (loyalty.tiers.member_tier, for a batch)."""
    earned, paid = table.held(earned_id), table.by_pk.get(paid_id)
    if paid is None or (earned is not None and earned.rank >= paid.rank):
        return earned
    return paid


def _paid_tiers(member_ids: list[int], now: datetime) -> dict[int, int]:
    """{member: the tier their running paid plan grants}, in one query."""
    paid: dict[int, tuple[int, int]] = {}
    for member_id, tier_id, rank in Membership.objects.filter(
        memberships.covering(now), member_id__in=member_ids, plan__tier__isnull=False
    ).values_list("member_id", "plan__tier_id", "plan__tier__rank"):
        if member_id not in paid or rank > paid[member_id][1]:
            paid[member_id] = (tier_id, rank)
    return {member_id: tier_id for member_id, (tier_id, _rank) in paid.items()}


# What a member gets ---------------------------------------------------------------------


def _tier_item(tier: Tier) -> dict:
    item = {
        "rule": BIRTHDAY,
        "rule_id": None,
        "version": None,
        "kind": BIRTHDAY,
        "name": tier.name,
        "tier": tier.code,
        "points": tier.birthday_points,
    }
    item["description"] = _("Happy birthday! A gift from %(name)s") % {"name": tier.name}
    return item


@dataclass(frozen=True, slots=True)
class _Gift:
    member_id: int
    day: date
    points: int
    breakdown: list[dict]
    earning: Earning
    tier: Tier | None


def _gift(*, member_id, day, tier, rules: list[RuleSpec], ruleset, usage, now) -> _Gift | None:
    """What one member gets: the tier's birthday points, then each birthday rule within
    its caps (the engine, as for an event from a till). None when it comes to nothing."""
    earning = Earning(0, [], [])
    if rules:
        context = Context(tier=tier, usage=usage.get(member_id, {}))
        earning = evaluate_activity(
            BIRTHDAY, at=now, store_id=None, context=context, ruleset=ruleset
        )
    tier_points = tier.birthday_points if tier is not None else 0
    points = tier_points + earning.points
    if points <= 0:
        return None
    breakdown = ([_tier_item(tier)] if tier_points else []) + earning.breakdown
    return _Gift(member_id, day, points, breakdown, earning, tier)


def _description(gift: _Gift) -> str:
    if gift.tier is not None and gift.tier.birthday_points:
        return _("Birthday gift")
    return " + ".join(item["description"] for item in gift.breakdown if item["points"])


# The job -------------------------------------------------------------------------------


def _accounts_lock(member_ids: list[int]) -> dict[int, MemberAccounts]:
    """Lock the ledger accounts of these members (in pk order, as every locker does),
    creating those a member has never needed yet: 2 queries for the whole batch. New rows
    go in member by member, in the order member_accounts_lock creates them, so a till
    giving a member their first points meanwhile waits for us rather than deadlocking."""
    Account.objects.bulk_create(
        [Account(member_id=m, kind=kind) for m in sorted(member_ids) for kind in MEMBER_KINDS],
        ignore_conflicts=True,
    )
    accounts: dict[int, dict[str, Account]] = {}
    for account in (
        Account.objects.select_for_update()
        .filter(member_id__in=member_ids)
        .order_by("pk")
        .only("pk", "member_id", "kind", "balance")
    ):
        accounts.setdefault(account.member_id, {})[account.kind] = account
    return {
        m: MemberAccounts(available=a[AccountKind.MEMBER], pending=a[AccountKind.MEMBER_PENDING])
        for m, a in accounts.items()
    }


@dataclass(frozen=True)
class _Run:
    now: datetime
    window: dict[tuple[int, int], date]
    table: TierTable
    ruleset: object
    rules: list[RuleSpec]
    program: object
    plans: bool  # whether a paid plan grants a tier


def _give_batch(rows: list[dict], run: _Run) -> BirthdayResult:
    """One batch of members whose birthday it is, in the caller's transaction, in a constant
    number of queries: lock (and create) their accounts, read the gifts already given and
    their use of capped birthday rules, then write every entry, lot, gift and rule award
    with one statement per table."""
    candidates = []
    paid = _paid_tiers([row["pk"] for row in rows], run.now) if run.plans else {}
    for row in rows:
        tier = _held(run.table, row["tier_state__tier_id"], paid.get(row["pk"]))
        rules_for = [r for r in run.rules if r.for_tier(tier)]
        if (tier is not None and tier.birthday_points) or rules_for:
            birth = row["birth_date"]
            candidates.append((row["pk"], run.window[(birth.month, birth.day)], tier))
    if not candidates:
        return BirthdayResult()
    member_ids = [pk for pk, _day, _tier in candidates]
    accounts = _accounts_lock(member_ids)
    # Read after the lock: a run that got here first has committed its gifts by now.
    given = set(
        BirthdayGift.objects.filter(
            member_id__in=member_ids, year__in={day.year for _pk, day, _tier in candidates}
        ).values_list("member_id", "year")
    )
    usage = loader.members_usage(member_ids=member_ids, rules=run.rules, at=run.now)
    gifts = []
    for pk, day, tier in candidates:
        if (pk, day.year) in given:
            continue
        gift = _gift(
            member_id=pk, day=day, tier=tier, rules=run.rules, ruleset=run.ruleset,
            usage=usage, now=run.now,
        )  # fmt: skip
        if gift is not None:
            gifts.append(gift)
    if not gifts:
        return BirthdayResult()
    credits = [
        Credit(
            member=Member(pk=gift.member_id),
            accounts=accounts[gift.member_id],
            points=gift.points,
            description=_description(gift),
            effective_at=run.now,
            details={
                "breakdown": gift.breakdown,
                "activity": BIRTHDAY,
                "birthday": gift.day.isoformat(),
            },
        )
        for gift in gifts
    ]
    entries = ledger.credits_post(
        credits, cause=Cause.system(reason=_("Birthday gift")), settings=run.program
    )
    BirthdayGift.objects.bulk_create(
        [
            BirthdayGift(
                member_id=gift.member_id,
                year=gift.day.year,
                birthday=gift.day,
                points=gift.points,
                entry=entry,
            )
            for gift, entry in zip(gifts, entries, strict=True)
        ]
    )
    awards = [
        RuleAward(
            rule_id=award.rule_id,
            member_id=gift.member_id,
            points=award.points,
            occurred_at=run.now,
            slot=award.slot or "",
            entry=entry,
        )
        for gift, entry in zip(gifts, entries, strict=True)
        for award in gift.earning.awards
        if award.points > 0
    ]
    if awards:
        RuleAward.objects.bulk_create(awards)
    return BirthdayResult(members=len(gifts), points=sum(g.points for g in gifts))


def birthday_gifts_give(
    *,
    now: datetime | None = None,
    batch_size: int | None = None,
    progress=None,
    catch_up_days: int = CATCH_UP_DAYS,
    email: bool = True,
) -> BirthdayResult:
    """Give every member whose birthday is today (or was in the last `catch_up_days` days
    and went without) their birthday gift, then e-mail those with a login. Safe to run
    twice: the second run finds every gift given and every e-mail sent. Reports
    `progress(done, total, result)` before the first batch and after each one."""
    now = now or timezone.now()
    batch_size = batch_size or settings.JOBS_BATCH_SIZE
    window = _window(timezone.localdate(now), catch_up_days)
    ruleset, rules = _rules(now)
    run = _Run(
        now=now, window=window, table=TierTable.load(), ruleset=ruleset, rules=rules,
        program=program_settings(), plans=memberships.plan_catalog().grants_tiers,
    )  # fmt: skip
    result = BirthdayResult()
    if not any(t.birthday_points for t in run.table.by_pk.values()) and not run.rules:
        return result  # no tier and no rule gives anything on a birthday
    # One query picks the birthdays (a few thousand a day per million members); each batch
    # then reads its members by primary key.
    due = _due(window, run.table, run.rules, now, run.plans)
    due = list(due.order_by("pk").values_list("pk", flat=True))
    total = len(due)
    if progress:
        progress(0, total, result)
    fields = ("pk", "birth_date", "tier_state__tier_id")
    for start in range(0, total, batch_size):
        ids = due[start : start + batch_size]
        # Entries are written in the program's language, whoever runs the job.
        with transaction.atomic(durable=True), translation.override(settings.LANGUAGE_CODE):
            rows = list(Member.objects.filter(pk__in=ids).order_by("pk").values(*fields))
            result += _give_batch(rows, run)
        if progress:
            progress(start + len(ids), total, result)
    if email:
        since = min(window.values())
        result.emails = birthday_emails_send(now=now, batch_size=batch_size, since=since)
        if progress:
            progress(total, total, result)
    return result


# E-mails -------------------------------------------------------------------------------


def birthday_emails_send(*, now: datetime, batch_size: int, since: date) -> int:
    """E-mail members with an active login about their gifts for birthdays since `since`
    not told yet, a batch per transaction: mark them, send, commit. A failed send rolls
    the marks back and raises; the next run tries again."""
    sent = 0
    program = program_settings()
    pending = BirthdayGift.objects.filter(
        emailed_at__isnull=True, birthday__gte=since, member__user__is_active=True
    )
    while True:
        with transaction.atomic(durable=True):
            gifts = list(
                pending.select_related("member__user")
                .select_for_update(skip_locked=True, of=("self",))
                .order_by("pk")[:batch_size]
            )
            if not gifts:
                return sent
            BirthdayGift.objects.filter(pk__in=[g.pk for g in gifts]).update(
                emailed_at=timezone.now()
            )
            # In the program's language: members have no language of their own yet.
            with translation.override(settings.LANGUAGE_CODE):
                portal_url = settings.SITE_URL + reverse("loyalty:dashboard")
                messages = [_message(g, program, portal_url) for g in gifts]
            get_connection().send_messages(messages)
            sent += len(gifts)


def _message(gift: BirthdayGift, program, portal_url: str) -> EmailMultiAlternatives:
    """The e-mail to one member, plain text and HTML, in the job's (the program's) language."""
    context = {"member": gift.member, "gift": gift, "program": program, "portal_url": portal_url}
    subject = render_to_string("loyalty/email/birthday_gift_subject.txt", context)
    message = EmailMultiAlternatives(
        " ".join(subject.split()),
        render_to_string("loyalty/email/birthday_gift.txt", context),
        to=[gift.member.user.email],
    )
    message.attach_alternative(
        render_to_string("loyalty/email/birthday_gift.html", context), "text/html"
    )
    return message


# The dashboard ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BirthdayOutlook:
    """What the dashboard says about the member's birthday."""

    state: str  # "add" (no birth date yet), "soon", "today", "given"
    day: date | None = None
    points: int = 0  # given, or what the gift will be
    tier: Tier | None = None


def _near_birthday(birth_date: date, today: date) -> date | None:
    for year in (today.year - 1, today.year, today.year + 1):
        day = celebrated_on(birth_date, year)
        if abs((day - today).days) <= WEEK_DAYS:
            return day
    return None


def member_birthday_outlook(
    *, member: Member, tier: Tier | None, table: TierTable, now: datetime | None = None
) -> BirthdayOutlook | None:
    """The birthday card of the dashboard: in the member's birthday week, the gift given or
    to come; without a birth date, an invitation to add one if the program gives gifts.
    No query outside the birthday week when a tier gives birthday points (else ≤ 1 for the
    rules, none when cached); in it, ≤ 3 (the gift, the rules, the member's use of them)."""
    now = now or timezone.now()
    if member.birth_date is None:
        if any(t.birthday_points for t in table.active) or _rules(now)[1]:
            return BirthdayOutlook("add", tier=tier)
        return None
    today = timezone.localdate(now)
    day = _near_birthday(member.birth_date, today)
    if day is None:
        return None
    gift = BirthdayGift.objects.filter(member=member, year=day.year).first()
    if gift is not None:
        return BirthdayOutlook("given", day, gift.points, tier)
    if member.created_at >= _day_end(day) or (today - day).days >= CATCH_UP_DAYS:
        return None  # joined after it: the job gives nothing for this one
    ruleset, rules = _rules(now)
    usage = {member.pk: loader.member_usage(member=member, rules=rules, at=now)} if rules else {}
    coming = _gift(
        member_id=member.pk, day=day, tier=tier, rules=rules, ruleset=ruleset, usage=usage,
        now=now,
    )  # fmt: skip
    if coming is None:
        return None
    return BirthdayOutlook("soon" if day > today else "today", day, coming.points, tier)


def _rules(now: datetime):
    """The rules in force for the web of the program (no store), and the birthday ones."""
    ruleset = loader.active_ruleset(now, None)
    return ruleset, ruleset.for_activity(BIRTHDAY)
