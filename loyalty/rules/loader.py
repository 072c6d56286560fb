"""Earning rules from the database: the ruleset in force, and what a member already got
from capped rules. Each costs at most one SQL query, however many rules exist.

The rules of the whole program are few and change rarely, so every process keeps them in
memory under a generation token held in Django's cache. Any change to a rule, its stores
or a tier (rules name a minimum tier by rank) draws a new token, at once and again at
commit (loyalty/receivers.py), so every process reloads on its next call. A copy is kept
only once the transaction that read it commits, like ledger.program_settings: rows read
inside a transaction that may still roll back are never shared. The memory copy is used
only when the cache is shared between processes (Redis); with a per-process cache
(locmem) every call reads the database.
"""

from collections.abc import Iterable
from contextlib import suppress
from dataclasses import replace
from datetime import datetime, timedelta
from uuid import uuid4

from django.core.cache import cache, caches
from django.core.cache.backends.dummy import DummyCache
from django.core.cache.backends.locmem import LocMemCache
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from loyalty import request_memo, tiers
from loyalty.models import EarningRule, RuleAward, Tier
from loyalty.rules.engine import Ruleset, RuleSpec, Usage, normalise, period_bounds

GENERATION_KEY = "loyalty:earning-rules:generation"

_FIELDS = (
    "id", "code", "version", "kind", "name", "target", "target_values", "multiplier", "points",
    "threshold", "event_type", "starts_at", "ends_at", "cap_points", "cap_times", "cap_period",
    "cooldown_hours", "is_active",
)  # fmt: skip

_memo: tuple[str, dict] | None = None  # (generation token, {name: value})


def _specs_from_rows(rows: Iterable[dict]) -> tuple[RuleSpec, ...]:
    """Rows of EarningRule.values(…, "stores__id", …): one per (rule, store)."""
    by_id: dict[int, dict] = {}
    stores: dict[int, set[int]] = {}
    for row in rows:
        by_id.setdefault(row["id"], row)
        if row["stores__id"] is not None:
            stores.setdefault(row["id"], set()).add(row["stores__id"])
    specs = []
    for rule_id, row in by_id.items():
        specs.append(
            RuleSpec(
                id=rule_id,
                code=row["code"],
                version=row["version"],
                kind=row["kind"],
                name=row["name"],
                target=row["target"],
                values=frozenset(
                    normalise(v) for v in row["target_values"].split(",") if v.strip()
                ),
                multiplier=row["multiplier"],
                points=row["points"],
                threshold=row["threshold"],
                event_type=normalise(row["event_type"]),
                starts_at=row["starts_at"],
                ends_at=row["ends_at"],
                store_ids=frozenset(stores.get(rule_id, ())),
                min_tier_rank=row["min_tier__rank"],
                min_tier_name=row["min_tier__name"] or "",
                cap_points=row["cap_points"],
                cap_times=row["cap_times"],
                cap_period=row["cap_period"],
                cooldown=timedelta(hours=row["cooldown_hours"]) if row["cooldown_hours"] else None,
                is_active=row["is_active"],
            )
        )
    return tuple(specs)


def spec_from_rule(rule: EarningRule) -> RuleSpec:
    """The engine's view of one rule instance (e.g. to preview it in the back office)."""
    row = {name: getattr(rule, name) for name in _FIELDS}
    row["min_tier__rank"] = rule.min_tier.rank if rule.min_tier_id else None
    row["min_tier__name"] = rule.min_tier.name if rule.min_tier_id else ""
    stores = [store.pk for store in rule.stores.all()] if rule.pk else []
    rows = [row | {"stores__id": pk} for pk in stores] or [row | {"stores__id": None}]
    return _specs_from_rows(rows)[0]


def _load(at: datetime | None = None) -> tuple[RuleSpec, ...]:
    """One query: the switched-on rules (live at `at`, if given) with their stores and
    minimum tier rank, joined in."""
    rules = EarningRule.objects.filter(is_active=True)
    if at is not None:
        rules = rules.filter(
            Q(starts_at__isnull=True) | Q(starts_at__lte=at),
            Q(ends_at__isnull=True) | Q(ends_at__gt=at),
        )
    rows = rules.order_by("id").values(*_FIELDS, "stores__id", "min_tier__rank", "min_tier__name")
    return _specs_from_rows(rows)


def shared_cache() -> bool:
    # `cache` is a proxy; the backend behind it says whether other processes share it.
    return not isinstance(caches["default"], LocMemCache | DummyCache)


def _generation() -> str | None:
    """The current generation token, read once per request (loyalty/request_memo.py)."""
    return request_memo.remembered(GENERATION_KEY, _generation_read)


def _generation_read() -> str | None:
    try:
        token = cache.get(GENERATION_KEY)
        if token is None:
            cache.add(GENERATION_KEY, uuid4().hex, timeout=None)
            token = cache.get(GENERATION_KEY)
        return token
    except Exception:  # a cache outage must not stop the tills: read the database
        return None


def _cached(name: str, load, uncached):
    """`load()` kept in this process under the current generation; `uncached()` when
    there is no shared cache to say when it changes."""
    token = _generation() if shared_cache() else None
    if token is None:
        return uncached()
    memo = _memo
    if memo is not None and memo[0] == token and name in memo[1]:
        return memo[1][name]
    value = load()

    def keep():
        global _memo
        current = _memo
        if current is None or current[0] != token:
            current = _memo = (token, {})
        current[1][name] = value

    transaction.on_commit(keep)
    return value


def kept(name: str):
    """What `_cached` keeps under `name` for the current generation, or None if nothing
    is kept (yet): never a query."""
    token = _generation() if shared_cache() else None
    memo = _memo
    if token is None or memo is None or memo[0] != token:
        return None
    return memo[1].get(name)


def _program_rules(at: datetime) -> tuple[RuleSpec, ...]:
    return _cached("rules", _load, lambda: _load(at))


def program_rules() -> tuple[RuleSpec, ...]:
    """Every switched-on rule of the program, whenever and wherever it applies (cached)."""
    return _cached("rules", _load, _load)


def tiers_multiply() -> bool:
    """Whether any tier changes the earn rate: if none does, and no rule names a minimum
    tier, a purchase need not read the member's tier. Cached like the rules."""

    def query():  # built only on a miss: building a queryset costs more than the memo
        return Tier.objects.exclude(earn_multiplier=1).exists()

    return _cached("tiers_multiply", query, query)


def tiers_active() -> bool:
    """Whether the program has tiers at all: without them a purchase need not measure
    the member's qualification. Cached like the rules."""

    def query():
        return Tier.objects.filter(is_active=True).exists()

    return _cached("tiers_active", query, query)


def warm() -> None:
    """Read what every purchase reads, outside a transaction, so that it is cached at once
    (a copy is kept only once committed): before a batch's one long transaction."""
    program_rules()
    tiers_multiply()
    tiers_active()
    _entry_tier()


def rules_changed() -> None:
    """Make every process reload the rules: now, and again once the change commits."""
    global _memo
    _memo = None
    request_memo.forget(GENERATION_KEY)

    def bump():
        # If the cache is down, the next bump (or the cache's own loss of the key) reloads.
        with suppress(Exception):
            cache.set(GENERATION_KEY, uuid4().hex, timeout=None)

    bump()
    transaction.on_commit(bump)


def forget() -> None:
    """Drop this process's copy (for tests, which empty tables without signals)."""
    global _memo
    _memo = None
    request_memo.forget(GENERATION_KEY)


def active_ruleset(at: datetime | None = None, store=None) -> Ruleset:
    """The rules that apply at `at` (default now) in `store` (a Store, its id, or None for
    no store), whatever the member: the engine checks minimum tiers. ≤ 1 SQL query."""
    at = at or timezone.now()
    store_id = getattr(store, "pk", store)
    rules = tuple(r for r in _program_rules(at) if r.live_at(at) and r.for_store(store_id))
    return Ruleset(rules)


def member_usage(*, member, rules: Iterable[RuleSpec], at: datetime) -> dict[int, Usage]:
    """What `member` already got from each limited rule among `rules`: points and times in
    the rule's current period, and awards within its cool-down of `at`. ≤ 1 SQL query
    (none when no rule is limited)."""
    if member.pk is None:
        return {}
    return members_usage(member_ids=[member.pk], rules=rules, at=at).get(member.pk, {})


def members_usage(
    *, member_ids: Iterable[int], rules: Iterable[RuleSpec], at: datetime
) -> dict[int, dict[int, Usage]]:
    """`member_usage` for many members in one query: {member id: {rule id: Usage}}."""
    limited = {r.id: r for r in rules if r.limited}
    if not limited:
        return {}
    windows: dict[int, tuple[datetime, datetime] | None] = {}
    condition = Q()
    for rule in limited.values():
        windows[rule.id] = period_bounds(rule.cap_period, at)
        spans = [windows[rule.id]]
        if rule.cooldown:
            spans.append((at - rule.cooldown, at + rule.cooldown))
        if None in spans:
            condition |= Q(rule_id=rule.id)
            continue
        when = Q()
        for start, end in spans:
            when |= Q(occurred_at__gte=start, occurred_at__lt=end)
        condition |= Q(rule_id=rule.id) & when
    rows = RuleAward.objects.filter(condition, member_id__in=list(member_ids)).values_list(
        "member_id", "rule_id", "points", "occurred_at"
    )
    usage: dict[int, dict[int, Usage]] = {}
    for member_id, rule_id, points, occurred_at in rows:
        rule, window = limited[rule_id], windows[rule_id]
        mine = usage.setdefault(member_id, {})
        used = mine.get(rule_id, Usage())
        if window is None or window[0] <= occurred_at < window[1]:
            used = replace(used, points=used.points + points, times=used.times + 1)
        if rule.cooldown and abs(occurred_at - at) < rule.cooldown:
            used = replace(used, recent=(*used.recent, occurred_at))
        mine[rule_id] = used
    return usage


def _entry_tier() -> Tier | None:
    def query():
        return Tier.objects.filter(is_active=True, threshold__lte=0).order_by("rank").first()

    return _cached("entry_tier", query, query)


def member_tier(member) -> Tier | None:
    """The member's tier, as loyalty.tiers decides it (their own, else the entry tier).
    Free when the member came with `select_related("tier_state__tier")` (e.g. in the
    query that locks their accounts) and the tiers are cached; one query otherwise."""
    if "tier_state" in member._state.fields_cache:
        state = member._state.fields_cache["tier_state"]
        if state is not None and state.tier_id is not None:
            return state.tier
        return _entry_tier()
    return tiers.member_tier(member=member)
