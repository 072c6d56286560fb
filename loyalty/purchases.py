"""Purchases, returns and points payments at the till: the write side of the POS API.

These run inside the caller's transaction (the API's idempotency wrapper opens the one
durable transaction, so the idempotency record commits with the points or not at all).
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_FLOOR, Decimal

from django.db import IntegrityError, transaction
from django.db.models import Model, Sum
from django.utils import timezone
from django.utils.translation import gettext as _

from loyalty import ledger, memberships, selectors, tiers
from loyalty.db_copy import family_insert, unsaved
from loyalty.ledger import Cause
from loyalty.models import (
    ActivityEvent,
    ProgramSettings,
    Purchase,
    PurchaseLine,
    PurchaseReturn,
    PurchaseReturnLine,
    Redemption,
)
from loyalty.rules import services as rules_services
from members.models import Member


class PurchaseError(Exception):
    code = "validation_error"
    problem_extra: dict = {}

    def __init__(self, message: str, **extra):
        super().__init__(message)
        self.message = message
        self.problem_extra = extra


class DuplicateReceipt(PurchaseError):
    code = "duplicate_receipt"


class ReceiptTaken(DuplicateReceipt):
    """The receipt's unique constraint fired: another request recorded it meanwhile. The
    existing purchase's id is read when the error is reported, which is after the
    savepoint that saw the failed insert has rolled back."""

    def __init__(self, *, store, receipt_id: str):
        Exception.__init__(self, receipt_id)
        self.message = _("Receipt %(r)s was already recorded.") % {"r": receipt_id}
        self.store, self.receipt_id = store, receipt_id

    @property
    def problem_extra(self) -> dict:
        found = Purchase.objects.filter(store=self.store, receipt_id=self.receipt_id)
        public_id = found.values_list("public_id", flat=True).first()
        return {"id": str(public_id)} if public_id else {}


class ReturnExceedsPurchase(PurchaseError):
    code = "return_exceeds_purchase"


class CurrencyMismatch(PurchaseError):
    code = "currency_mismatch"


class RedeemExceedsTotal(PurchaseError):
    code = "validation_error"


class PlanQuantityInvalid(PurchaseError):
    """A membership plan's line with a quantity that is not a whole number of terms."""

    code = "validation_error"


@dataclass(frozen=True, slots=True)
class LineIn:
    sku: str
    quantity: Decimal
    unit_price: Decimal
    category: str = ""

    @property
    def amount(self) -> Decimal:
        return self.quantity * self.unit_price


@dataclass(frozen=True, slots=True)
class Quote:
    points: int
    line_points: list[int]
    max_redeemable_points: int | None
    breakdown: list[dict]
    redeem_value: Decimal
    awards: list = field(default_factory=list)  # what capped rules gave (rules.engine.Award)


def currency_check(currency: str, settings: ProgramSettings) -> None:
    if currency != settings.currency:
        raise CurrencyMismatch(
            _("This program runs in %(p)s; the purchase is in %(c)s.")
            % {"p": settings.currency, "c": currency}
        )


def purchase_quote(
    *,
    member: Member,
    currency: str,
    total: Decimal,
    lines: list[LineIn],
    redeem_points: int = 0,
    settings: ProgramSettings | None = None,
    with_max_redeemable: bool = True,
    store=None,
    occurred_at: datetime | None = None,
    catalog: memberships.PlanCatalog | None = None,
) -> Quote:
    """What a purchase would earn under the earning rules in force at `occurred_at`
    (default now) in `store`, without writing anything. `purchase_record` uses the same
    calculation, so the quote always equals the credit. Raises CurrencyMismatch,
    PlanQuantityInvalid (a membership plan's line for a part of a term)."""
    settings = settings or ledger.program_settings()
    currency_check(currency, settings)
    catalog = catalog if catalog is not None else memberships.plan_catalog()
    memberships.plan_lines_check(lines, catalog)
    redeem_value = redeem_points * settings.point_value
    paid = max(Decimal(0), total - redeem_value)
    earning = rules_services.purchase_earning(
        member=member, store=store, at=occurred_at or timezone.now(), lines=lines, paid=paid,
        settings=settings, catalog=catalog,
    )  # fmt: skip
    max_redeemable = None
    if with_max_redeemable:
        balance = selectors.member_points(member=member)[0]
        by_total = int((total / settings.point_value).to_integral_value(rounding=ROUND_FLOOR))
        max_redeemable = max(0, min(balance, by_total))
    return Quote(
        points=earning.points,
        line_points=earning.line_points,
        max_redeemable_points=max_redeemable,
        breakdown=earning.breakdown,
        redeem_value=redeem_value,
        awards=earning.awards,
    )


def purchase_record(
    *,
    store,
    member: Member,
    receipt_id: str,
    occurred_at: datetime,
    currency: str,
    total: Decimal,
    lines: list[LineIn],
    redeem_points: int = 0,
    cause: Cause,
    accounts: ledger.MemberAccounts | None = None,
    riders: Callable[[Purchase], list[Model]] | None = None,
) -> Purchase:
    """Credit a purchase's points (pending for the return window if the program says so),
    optionally paying part of it with points. A line with a membership plan's SKU starts
    or extends the member's membership (loyalty/memberships.py), in this transaction. The
    result carries the member's balances after it (`points_balance`, `points_pending`) and
    the memberships it bought (`memberships_bought`). `riders(purchase)` gives more new rows
    to insert in the purchase's statement, given the purchase with those balances set
    (the API's idempotency record of its answer). Raises DuplicateReceipt, CurrencyMismatch,
    InsufficientPoints, RedeemExceedsTotal, PlanQuantityInvalid."""
    settings = ledger.program_settings()
    # Locked before the rules read the member's use of capped rules, so caps hold.
    accounts = accounts or ledger.member_accounts_lock(member)
    catalog = memberships.plan_catalog()
    quote = purchase_quote(
        member=member, currency=currency, total=total, lines=lines, redeem_points=redeem_points,
        settings=settings, with_max_redeemable=False, store=store, occurred_at=occurred_at,
        catalog=catalog,
    )  # fmt: skip
    if redeem_points and quote.redeem_value > total:
        raise RedeemExceedsTotal(_("Points worth more than the total cannot be redeemed on it."))
    label = purchase_label(receipt_id, store)
    redeem_entry = earn_entry = None
    if redeem_points:
        redeem_entry = ledger.debit(
            member=member, points=redeem_points, description=label, cause=cause,
            accounts=accounts,
        )  # fmt: skip
    purchase = unsaved(
        Purchase, store=store, member=member, receipt_id=receipt_id, occurred_at=occurred_at,
        currency=currency, total=total, points_earned=quote.points,
        points_redeemed=redeem_points, breakdown=quote.breakdown, redeem_entry=redeem_entry,
    )  # fmt: skip
    # The lines get ids too: plans bought refer to their line.
    purchase.recorded_lines = purchase_lines_new(purchase, lines, quote.line_points)

    def along() -> list[Model]:
        purchase.points_balance = accounts.available.balance  # as they are after the sale
        purchase.points_pending = accounts.pending.balance
        return riders(purchase) if riders else []

    def earned_by(entry):  # the purchase and its lines go in with the entry (one statement)
        purchase.earn_entry = entry
        return [purchase, *purchase.recorded_lines, *along()]

    try:
        # No savepoint of its own: the receipt is unique per store, and when another
        # request committed it meanwhile, the caller's rollback undoes these points.
        if quote.points:
            earn_entry = ledger.credit(
                member=member, points=quote.points, description=label, cause=cause,
                effective_at=occurred_at, pending_until=pending_until_for(occurred_at, settings),
                details={"breakdown": quote.breakdown}, settings=settings, accounts=accounts,
                riders=earned_by,
            )  # fmt: skip
        else:
            family_insert(purchase, [*purchase.recorded_lines, *along()])
    except IntegrityError as error:
        if _constraint(error) != RECEIPT_ONCE:
            raise
        raise ReceiptTaken(store=store, receipt_id=receipt_id) from None
    rules_services.awards_record(
        member=member, awards=quote.awards, at=occurred_at, entry=earn_entry, purchase=purchase
    )
    # No query unless a line has a plan's SKU (the plans' SKUs are cached).
    purchase.memberships_bought = memberships.memberships_from_purchase(
        purchase=purchase, lines=purchase.recorded_lines, catalog=catalog
    )
    # Reaching a tier takes effect with this purchase (1 query, 2 when the member moves up).
    purchase.tier_change = tiers.tier_upgrade_check(member=member, settings=settings)
    purchase.points_balance = accounts.available.balance
    purchase.points_pending = accounts.pending.balance
    return purchase


RECEIPT_ONCE = "purchase_receipt_once_per_store"


def _constraint(error: IntegrityError) -> str | None:
    """The name of the constraint that refused a write (PostgreSQL says; SQLite does not,
    and there the unique receipt is the one a valid purchase can run into)."""
    diag = getattr(error.__cause__, "diag", None)
    return diag.constraint_name if diag is not None else RECEIPT_ONCE


def purchase_lines_new(
    purchase: Purchase, lines: list[LineIn], line_points: list[int]
) -> list[PurchaseLine]:
    """The (unsaved) lines of a purchase, each with the points it earned."""
    return [
        unsaved(
            PurchaseLine,
            purchase=purchase,
            position=i,
            sku=line.sku,
            category=line.category,
            quantity=line.quantity,
            unit_price=line.unit_price,
            points=points,
        )
        for i, (line, points) in enumerate(zip(lines, line_points, strict=True))
    ]


def pending_until_for(occurred_at: datetime, settings: ProgramSettings) -> datetime | None:
    """Until when a purchase's points wait (for its return window), if the program says so."""
    if not settings.pending_days:
        return None
    return occurred_at + timedelta(days=settings.pending_days)


def purchase_label(receipt_id: str, store) -> str:
    """How a purchase reads in the member's history."""
    return _("Purchase %(r)s at %(s)s") % {"r": receipt_id, "s": store.name}


def _proportion(points: int, part: Decimal, whole: Decimal) -> int:
    if whole <= 0:
        return 0
    return int((points * part / whole).to_integral_value(rounding=ROUND_FLOOR))


def purchase_return(
    *,
    store,
    purchase: Purchase,
    return_id: str,
    lines: list[tuple[str, Decimal]] | None,
    cause: Cause,
) -> PurchaseReturn:
    """Return goods: reverse the points they earned and give back the points that paid for
    them, both in proportion. Cumulative rounding makes a purchase returned in parts give
    back exactly what one full return would. A return lowers the member's tier qualification
    but never moves them down at once: only the review does (loyalty/tiers.py). Raises
    DuplicateReceipt, ReturnExceedsPurchase."""
    existing = (
        PurchaseReturn.objects.filter(store=store, return_id=return_id).only("public_id").first()
    )
    if existing is not None:
        raise DuplicateReceipt(
            _("Return %(r)s was already recorded.") % {"r": return_id}, id=str(existing.public_id)
        )
    ledger.member_accounts_lock(purchase.member)  # serialise returns of one member's purchases
    purchase_lines = list(purchase.lines.annotate(done=Sum("returned__quantity")))
    returned_before = {line.pk: line.done or Decimal(0) for line in purchase_lines}
    wanted = _return_quantities(purchase_lines, returned_before, lines)
    earned_now = 0
    lines_total = sum(line.quantity * line.unit_price for line in purchase_lines)
    amount_before = sum(line.unit_price * returned_before[line.pk] for line in purchase_lines)
    amount_after = amount_before + sum(line.unit_price * qty for line, qty in wanted)
    for line, qty in wanted:
        before = returned_before[line.pk]
        earned_now += _proportion(line.points, before + qty, line.quantity) - _proportion(
            line.points, before, line.quantity
        )
    restored_now = _proportion(purchase.points_redeemed, amount_after, lines_total) - _proportion(
        purchase.points_redeemed, amount_before, lines_total
    )
    entry = None
    if earned_now or restored_now:
        entry = ledger.return_points(
            member=purchase.member, earn_entry=purchase.earn_entry, earn_points=earned_now,
            redeem_entry=purchase.redeem_entry, redeem_points=restored_now,
            description=_("Return %(r)s of purchase %(p)s")
            % {"r": return_id, "p": purchase.receipt_id},
            cause=cause, details={"purchase": str(purchase.public_id), "return_id": return_id},
        )  # fmt: skip
    try:
        with transaction.atomic():
            purchase_return = PurchaseReturn.objects.create(
                store=store, return_id=return_id, purchase=purchase,
                points_reversed=earned_now, points_restored=restored_now, entry=entry,
            )  # fmt: skip
    except IntegrityError:
        existing = PurchaseReturn.objects.get(store=store, return_id=return_id)
        raise DuplicateReceipt(
            _("Return %(r)s was already recorded.") % {"r": return_id}, id=str(existing.public_id)
        ) from None
    PurchaseReturnLine.objects.bulk_create(
        PurchaseReturnLine(purchase_return=purchase_return, line=line, quantity=qty)
        for line, qty in wanted
    )
    # Returning a membership plan's line shortens (or cancels) the term it bought; no query
    # unless a returned line has a plan's SKU.
    purchase_return.memberships_changed = memberships.memberships_on_return(
        purchase_return=purchase_return, wanted=wanted, returned_before=returned_before
    )
    return purchase_return


def _return_quantities(purchase_lines, returned_before, lines):
    """[(line, quantity)] to return now; the whole remainder when `lines` is None."""
    if lines is None:
        wanted = [(line, line.quantity - returned_before[line.pk]) for line in purchase_lines]
        wanted = [(line, qty) for line, qty in wanted if qty > 0]
        if not wanted:
            raise ReturnExceedsPurchase(_("Everything on this purchase was already returned."))
        return wanted
    left = {line.pk: line.quantity - returned_before[line.pk] for line in purchase_lines}
    wanted: dict[int, Decimal] = {}
    for sku, qty in lines:
        candidates = [line for line in purchase_lines if line.sku == sku]
        if not candidates:
            raise ReturnExceedsPurchase(_("SKU %(s)s is not on this purchase.") % {"s": sku})
        for line in candidates:  # the same SKU may sit on several lines: fill them in order
            take = min(qty, left[line.pk] - wanted.get(line.pk, 0))
            if take > 0:
                wanted[line.pk] = wanted.get(line.pk, 0) + take
                qty -= take
            if qty == 0:
                break
        if qty > 0:
            raise ReturnExceedsPurchase(
                _("More of %(s)s would be returned than was bought (and not yet returned).")
                % {"s": sku}
            )
    by_pk = {line.pk: line for line in purchase_lines}
    return [(by_pk[pk], qty) for pk, qty in wanted.items()]


def redemption_create(
    *, store, member: Member, points: int, reference: str, cause: Cause
) -> Redemption:
    """Pay with points at the till; raises InsufficientPoints."""
    label = reference or _("Points payment at %(s)s") % {"s": store.name}
    entry = ledger.debit(member=member, points=points, description=label, cause=cause)
    return Redemption.objects.create(
        store=store, member=member, points=points, reference=reference, entry=entry
    )


def redemption_void(*, redemption: Redemption, cause: Cause) -> Redemption:
    """Give the points back; voiding a voided redemption changes nothing."""
    redemption = Redemption.objects.select_for_update().get(pk=redemption.pk)
    if redemption.status == Redemption.Status.VOIDED:
        return redemption
    ledger.reverse(
        entry=redemption.entry,
        cause=cause,
        description=redemption.entry.description,  # the history line reads "Reversed: …"
    )
    redemption.status = Redemption.Status.VOIDED
    redemption.save(update_fields=["status"])
    return redemption


def event_record(
    *,
    store,
    member: Member,
    type: str,
    occurred_at: datetime,
    properties: dict,
    cause: Cause | None = None,
) -> ActivityEvent:
    """Keep an activity and credit what its activity rules give, within each rule's caps
    and cool-down (loyalty/rules/services.py). Runs inside the caller's transaction."""
    cause = cause or Cause(source="api")
    earning, entry = rules_services.activity_earn(
        member=member, event_type=type, at=occurred_at, store=store, cause=cause
    )
    event = ActivityEvent.objects.create(
        store=store, member=member, type=type, occurred_at=occurred_at, properties=properties,
        points_earned=earning.points,
    )  # fmt: skip
    rules_services.awards_record(
        member=member, awards=earning.awards, at=occurred_at, entry=entry, event=event
    )
    return event
