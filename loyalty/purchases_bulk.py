"""Many purchases at once: the offline batch's fast path (POST /api/v1/batches).

`purchases_record_many` writes what `purchases.purchase_record` would write for each sale,
computed by the same earning calculation, but with a fixed number of queries for the
whole set instead of about ten a sale. It takes only plain sales (no points paid, no
membership plan bought) of distinct members whose accounts the caller has locked, so no
sale can change what another one earns: the caller sends anything else the single way.
"""

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.utils import timezone

from loyalty import ledger, memberships, tiers
from loyalty.db_copy import objects_insert, unsaved
from loyalty.ledger import Cause, Credit
from loyalty.models import AccountKind, Purchase, PurchaseLine, RuleAward
from loyalty.purchases import (
    LineIn,
    PurchaseError,
    currency_check,
    pending_until_for,
    purchase_label,
    purchase_lines_new,
)
from loyalty.rules import loader
from loyalty.rules import services as rules_services
from loyalty.rules.engine import normalise
from members.models import Member


@dataclass(frozen=True, slots=True)
class Sale:
    member: Member
    accounts: ledger.MemberAccounts
    receipt_id: str
    occurred_at: datetime
    currency: str
    total: Decimal
    lines: list[LineIn]


def purchases_record_many(
    *, store, sales: list[Sale], cause: Cause
) -> list[Purchase | PurchaseError]:
    """Record `sales` (distinct members, accounts locked, receipts not yet taken) in the
    caller's transaction. Returns, in order, each sale's Purchase (with `recorded_lines`,
    `points_balance` and `points_pending`, as purchase_record gives) or the business error
    that refused it, which wrote nothing."""
    assert len({sale.member.pk for sale in sales}) == len(sales), "one sale per member"
    if not sales:
        return []
    settings = ledger.program_settings()
    catalog = memberships.plan_catalog()
    facts = rules_services.members_facts(
        members=[sale.member for sale in sales],
        at={sale.member.pk: sale.occurred_at for sale in sales},
        catalog=catalog,
    )
    results: list[Purchase | PurchaseError] = []
    earnings = {}
    for i, sale in enumerate(sales):
        try:
            currency_check(sale.currency, settings)
            memberships.plan_lines_check(sale.lines, catalog)
        except PurchaseError as error:
            results.append(error)
            continue
        earnings[i] = rules_services.purchase_earning(
            member=sale.member, store=store, at=sale.occurred_at, lines=sale.lines,
            paid=sale.total, settings=settings, catalog=catalog, facts=facts[sale.member.pk],
        )  # fmt: skip
        results.append(None)  # filled once written
    credits, credited = [], []
    for i, earning in earnings.items():
        sale = sales[i]
        if earning.points:
            credits.append(
                Credit(
                    member=sale.member,
                    accounts=sale.accounts,
                    points=earning.points,
                    description=purchase_label(sale.receipt_id, store),
                    effective_at=sale.occurred_at,
                    pending_until=pending_until_for(sale.occurred_at, settings),
                    details={"breakdown": earning.breakdown},
                )
            )
            credited.append(i)
    entries = {}
    if credits:
        posted = ledger.credits_post(credits, cause=cause, settings=settings)
        entries = dict(zip(credited, posted, strict=True))
    purchases = objects_insert(
        Purchase,
        [
            unsaved(
                Purchase,
                store=store,
                member=sales[i].member,
                receipt_id=sales[i].receipt_id,
                occurred_at=sales[i].occurred_at,
                currency=sales[i].currency,
                total=sales[i].total,
                points_earned=earning.points,
                points_redeemed=0,
                breakdown=earning.breakdown,
                earn_entry=entries.get(i),
                redeem_entry=None,
            )
            for i, earning in earnings.items()
        ],
        ids=True,
    )
    lines = []
    for (i, earning), purchase in zip(earnings.items(), purchases, strict=True):
        purchase.recorded_lines = purchase_lines_new(purchase, sales[i].lines, earning.line_points)
        lines += purchase.recorded_lines
        results[i] = purchase
    objects_insert(PurchaseLine, lines)
    awards = []
    for i, earning in earnings.items():
        awards += rules_services.awards_new(
            member=sales[i].member, awards=earning.awards, at=sales[i].occurred_at,
            entry=entries.get(i), purchase=results[i],
        )  # fmt: skip
    objects_insert(RuleAward, awards)
    # Reaching a tier takes effect with the purchase, as for a single one; the sales are of
    # distinct members, so none of them earns at a tier another one of them changed.
    changes = tiers.tiers_upgrade_many(
        members=[sales[i].member for i in earnings], settings=settings, now=timezone.now()
    )
    for i in earnings:
        purchase, accounts = results[i], sales[i].accounts
        purchase.memberships_bought = []
        purchase.tier_change = changes.get(sales[i].member.pk)
        purchase.points_balance = accounts.available.balance
        purchase.points_pending = accounts.pending.balance
    return results


def program_warm() -> None:
    """Read, outside any transaction, the program rows every sale reads (settings, rules,
    tiers, plans, the issuance account), so the caches hold them for a long transaction
    that follows: they are cached only once read in a committed transaction (else each
    run of the batch would read the tier table again)."""
    ledger.program_settings()
    ledger.system_account(AccountKind.ISSUANCE)
    loader.warm()
    memberships.plan_catalog()
    tiers.TierTable.cached()


def sale_is_plain(*, lines, redeem_points: int, catalog: memberships.PlanCatalog) -> bool:
    """Whether a sale can go in `purchases_record_many`: no points paid, no plan bought."""
    return not redeem_points and not any(normalise(line.sku) in catalog.for_sale for line in lines)
