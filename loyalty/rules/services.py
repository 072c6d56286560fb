"""Writes of the earning rules: saving a rule (its version goes up), crediting activity
points within caps and cool-downs, the sign-up bonus, and the award records caps count.

Crediting functions run inside the caller's transaction. They lock the member's accounts
before reading what the member already got, so two concurrent activities of one member
cannot both slip under a cap; once-only awards are also refused by a unique constraint.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db import transaction
from django.db.models import F
from django.utils import timezone
from django.utils.translation import gettext as _

from loyalty import ledger, memberships
from loyalty.ledger import Cause
from loyalty.models import (
    ActivityEvent,
    EarningRule,
    JournalEntry,
    Purchase,
    RuleAward,
    RuleKind,
)
from loyalty.rules import loader
from loyalty.rules.engine import Award, Basket, Context, Earning, evaluate, evaluate_activity
from members.models import Member

SIGN_UP = "sign_up"
PROFILE_COMPLETED = "profile_completed"


def earning_rule_save(*, rule: EarningRule, changed: bool = True) -> EarningRule:
    """Save a rule staff edited; a changed rule gets the next version. Purchases keep the
    breakdown (rule id, version, wording) they earned, so history never changes.
    The caller saves many-to-many fields (stores) afterwards, in the same transaction."""
    if rule.pk is not None and changed:
        EarningRule.objects.filter(pk=rule.pk).update(version=F("version") + 1)
        rule.version = EarningRule.objects.values_list("version", flat=True).get(pk=rule.pk)
    rule.save()
    return rule


def earning_rule_end(*, rule: EarningRule, at: datetime | None = None) -> EarningRule:
    """Stop a rule now (or at `at`): its end moves there and its version goes up."""
    at = at or timezone.now()
    if rule.starts_at and rule.starts_at >= at:
        rule.is_active = False  # had not started: ending it is switching it off
    else:
        rule.ends_at = min(rule.ends_at, at) if rule.ends_at else at
    return earning_rule_save(rule=rule)


def awards_record(
    *,
    member: Member,
    awards: list[Award],
    at: datetime,
    entry: JournalEntry | None,
    purchase: Purchase | None = None,
    event: ActivityEvent | None = None,
) -> None:
    """One RuleAward per rule that gave points, in the caller's transaction (one query)."""
    rows = awards_new(
        member=member, awards=awards, at=at, entry=entry, purchase=purchase, event=event
    )
    if rows:
        RuleAward.objects.bulk_create(rows)


def awards_new(
    *,
    member: Member,
    awards: list[Award],
    at: datetime,
    entry: JournalEntry | None,
    purchase: Purchase | None = None,
    event: ActivityEvent | None = None,
) -> list[RuleAward]:
    """The (unsaved) RuleAwards of the rules that gave points."""
    return [
        RuleAward(
            rule_id=award.rule_id,
            member=member,
            points=award.points,
            occurred_at=at,
            slot=award.slot or "",
            entry=entry,
            purchase=purchase,
            event=event,
        )
        for award in awards
        if award.points > 0
    ]


def _activity_label(earning: Earning) -> str:
    names = [item["description"] for item in earning.breakdown if item["points"]]
    return " + ".join(names)


def activity_earn(
    *,
    member: Member,
    event_type: str,
    at: datetime,
    store,
    cause: Cause,
) -> tuple[Earning, JournalEntry | None]:
    """Credit what the activity rules give for `event_type` at `at`, each within its caps
    and cool-down. Returns the earning and its ledger entry (None when nothing was due).
    The caller records the awards (awards_record) once it has the event row."""
    ruleset = loader.active_ruleset(at, store)
    rules = ruleset.for_activity(event_type)
    if not rules:
        return Earning(0, [], []), None
    accounts = ledger.member_accounts_lock(member)  # serialise this member's awards: caps hold
    tier = None
    if any(r.min_tier_rank is not None for r in rules):
        plan = memberships.member_plan_at(member=member, at=at)
        tier = memberships.effective_tier(loader.member_tier(member), plan)
    context = Context(tier=tier, usage=loader.member_usage(member=member, rules=rules, at=at))
    earning = evaluate_activity(
        event_type, at=at, store_id=getattr(store, "pk", None), context=context, ruleset=ruleset
    )
    if not earning.points:
        return earning, None
    entry = ledger.credit(
        member=member,
        points=earning.points,
        description=_activity_label(earning),
        cause=cause,
        effective_at=at,
        details={"breakdown": earning.breakdown, "activity": event_type},
        accounts=accounts,
    )
    return earning, entry


@dataclass(frozen=True, slots=True)
class MemberFacts:
    """What `purchase_earning` reads about a member, read for many members at once by
    `members_facts` (a batch of purchases)."""

    plan: "memberships.PlanSpec | None"
    bought_before: bool


def members_facts(
    *, members: Sequence[Member], at: dict[int, datetime], catalog
) -> dict[int, MemberFacts]:
    """MemberFacts of each member (by pk) for a purchase at `at[pk]`, in at most two
    queries: their paid plans (none when the program has no plans) and whether they
    bought before (none unless a first-purchase bonus exists)."""
    ids = [m.pk for m in members]
    plans = memberships.members_plans_at(at=at, catalog=catalog)
    bought: set[int] = set()
    if any(r.kind == RuleKind.FIRST_PURCHASE for r in loader.program_rules()):
        bought = set(Purchase.objects.filter(member_id__in=ids).values_list("member_id", flat=True))
    return {pk: MemberFacts(plan=plans.get(pk), bought_before=pk in bought) for pk in ids}


def purchase_earning(
    *,
    member: Member,
    store,
    at: datetime,
    lines: Sequence,
    paid: Decimal,
    settings,
    catalog: "memberships.PlanCatalog | None" = None,
    facts: MemberFacts | None = None,
) -> Earning:
    """What a basket earns `member` under the rules in force at `at` in `store` (lines
    with .sku, .category, .amount). Reads only what the rules in force need: the rules
    (≤ 1 query, none when cached), the paid membership plans (none when cached) and the
    member's plan at `at` (1, when the program has plans), the member's tier (1, when a
    tier changes the earn rate or a rule names a minimum tier), whether they bought before
    (1, when a first-purchase bonus applies) and their use of capped rules (1, when one
    applies). Writes nothing: the quote and the purchase both call it, so the quote equals
    the credit. To keep caps exact, purchase_record calls it with the member's accounts
    locked. A plan bought in this basket applies from the next purchase: this one gets
    the plan's bonus points only. `facts`: the member's plan and purchase history, already
    read (members_facts)."""
    ruleset = loader.active_ruleset(at, store)
    rules = ruleset.for_purchase()
    catalog = catalog if catalog is not None else memberships.plan_catalog()
    if facts is not None:
        plan = facts.plan
    else:
        plan = memberships.member_plan_at(member=member, at=at, catalog=catalog)
    tier = None
    if (
        any(r.min_tier_rank is not None for r in rules)
        or loader.tiers_multiply()
        or (plan is not None and plan.tier is not None)
    ):
        tier = memberships.effective_tier(loader.member_tier(member), plan)
    rules = [r for r in rules if r.for_tier(tier)]
    first = any(r.kind == RuleKind.FIRST_PURCHASE for r in rules) and (
        member.pk is None
        or not (
            facts.bought_before
            if facts is not None
            else Purchase.objects.filter(member=member).exists()
        )
    )
    context = Context(
        tier=tier,
        first_purchase=first,
        usage=loader.member_usage(member=member, rules=rules, at=at),
        membership=plan,
        plans=catalog.for_sale,
    )
    basket = Basket(lines, paid, at, getattr(store, "pk", store))
    return evaluate(basket, context, ruleset, settings=settings)


def signup_bonus_award(*, member: Member, at: datetime | None = None) -> JournalEntry | None:
    """The welcome points of the `sign_up` activity rules, once per member. Runs in the
    enrolment's transaction when there is one."""
    return _system_activity_award(member, SIGN_UP, _("Welcome bonus for joining"), at)


def profile_completed_award(*, member: Member, at: datetime | None = None) -> JournalEntry | None:
    """The points of the `profile_completed` activity rules, when a member's profile is
    complete for the first time (members sends that once; the rules' caps hold anyway).
    Runs in the profile save's transaction."""
    return _system_activity_award(
        member, PROFILE_COMPLETED, _("Bonus for completing the profile"), at
    )


def _system_activity_award(member: Member, event_type: str, reason: str, at) -> JournalEntry | None:
    """An activity Tally itself notices (no till sends it), rewarded by its rules."""
    at = at or timezone.now()
    with transaction.atomic():
        earning, entry = activity_earn(
            member=member, event_type=event_type, at=at, store=None,
            cause=Cause.system(reason=reason),
        )  # fmt: skip
        awards_record(member=member, awards=earning.awards, at=at, entry=entry)
    return entry
