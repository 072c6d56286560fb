"""Purchases, returns and points payments at the till: the write side of the POS API.

These run inside the caller's transaction (the API's idempotency wrapper opens the one
durable transaction, so the idempotency record commits with the points or not at all).
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_FLOOR, Decimal

from django.db import IntegrityError, transaction
from django.db.models import Sum
from django.utils.translation import gettext as _

from loyalty import ledger, selectors
from loyalty.earning import points_for_amount
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


class ReturnExceedsPurchase(PurchaseError):
    code = "return_exceeds_purchase"


class CurrencyMismatch(PurchaseError):
    code = "currency_mismatch"


class RedeemExceedsTotal(PurchaseError):
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


def _allocate(points: int, weights: list[Decimal]) -> list[int]:
    """Split `points` over lines in proportion to `weights`, exactly (largest remainder)."""
    total = sum(weights)
    if points == 0 or total <= 0:
        return [0] * len(weights)
    raw = [points * w / total for w in weights]
    shares = [int(r.to_integral_value(rounding=ROUND_FLOOR)) for r in raw]
    by_remainder = sorted(range(len(raw)), key=lambda i: (raw[i] - shares[i], -i), reverse=True)
    for i in by_remainder[: points - sum(shares)]:
        shares[i] += 1
    return shares


def _currency_check(currency: str, settings: ProgramSettings) -> None:
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
) -> Quote:
    """What a purchase would earn, without writing anything. `purchase_record` uses the
    same calculation, so the quote always equals the credit. Raises CurrencyMismatch."""
    settings = settings or ledger.program_settings()
    _currency_check(currency, settings)
    redeem_value = redeem_points * settings.point_value
    paid = max(Decimal(0), total - redeem_value)
    points = points_for_amount(paid, settings=settings)
    max_redeemable = None
    if with_max_redeemable:
        balance = selectors.member_points(member=member)[0]
        by_total = int((total / settings.point_value).to_integral_value(rounding=ROUND_FLOOR))
        max_redeemable = max(0, min(balance, by_total))
    breakdown = [{
        "rule": "base",
        "description": _("%(rate)s point(s) per %(currency)s paid") % {
            "rate": settings.earn_rate.normalize(), "currency": settings.currency},
        "points": points,
    }]  # fmt: skip
    return Quote(
        points=points,
        line_points=_allocate(points, [line.amount for line in lines]),
        max_redeemable_points=max_redeemable,
        breakdown=breakdown,
        redeem_value=redeem_value,
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
) -> Purchase:
    """Credit a purchase's points (pending for the return window if the program says so),
    optionally paying part of it with points. Raises DuplicateReceipt, CurrencyMismatch,
    InsufficientPoints, RedeemExceedsTotal."""
    settings = ledger.program_settings()
    # A duplicate receipt is caught by the unique constraint below, which undoes the points.
    quote = purchase_quote(
        member=member, currency=currency, total=total, lines=lines, redeem_points=redeem_points,
        settings=settings, with_max_redeemable=False,
    )  # fmt: skip
    if redeem_points and quote.redeem_value > total:
        raise RedeemExceedsTotal(_("Points worth more than the total cannot be redeemed on it."))
    label = _("Purchase %(r)s at %(s)s") % {"r": receipt_id, "s": store.name}
    redeem_entry = earn_entry = None
    if redeem_points:
        redeem_entry = ledger.debit(
            member=member, points=redeem_points, description=label, cause=cause
        )
    if quote.points:
        pending_until = None
        if settings.pending_days:
            pending_until = occurred_at + timedelta(days=settings.pending_days)
        earn_entry = ledger.credit(
            member=member, points=quote.points, description=label, cause=cause,
            effective_at=occurred_at, pending_until=pending_until,
            details={"breakdown": quote.breakdown},
            settings=settings,
        )  # fmt: skip
    try:
        with transaction.atomic():
            purchase = Purchase.objects.create(
                store=store, member=member, receipt_id=receipt_id, occurred_at=occurred_at,
                currency=currency, total=total, points_earned=quote.points,
                points_redeemed=redeem_points, breakdown=quote.breakdown,
                earn_entry=earn_entry, redeem_entry=redeem_entry,
            )  # fmt: skip
    except IntegrityError:
        # The same receipt committed under another key meanwhile.
        existing = Purchase.objects.get(store=store, receipt_id=receipt_id)
        raise DuplicateReceipt(
            _("Receipt %(r)s was already recorded.") % {"r": receipt_id}, id=str(existing.public_id)
        ) from None
    purchase.recorded_lines = PurchaseLine.objects.bulk_create(
        PurchaseLine(
            purchase=purchase,
            position=i,
            sku=line.sku,
            category=line.category,
            quantity=line.quantity,
            unit_price=line.unit_price,
            points=points,
        )
        for i, (line, points) in enumerate(zip(lines, quote.line_points, strict=True))
    )
    return purchase


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
    back exactly what one full return would. Raises DuplicateReceipt, ReturnExceedsPurchase."""
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
    *, store, member: Member, type: str, occurred_at: datetime, properties: dict
) -> ActivityEvent:
    """Keep an activity; earning rules for events arrive with the rules issue (0 points now)."""
    return ActivityEvent.objects.create(
        store=store, member=member, type=type, occurred_at=occurred_at, properties=properties
    )
