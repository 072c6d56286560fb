"""Shared arrangements for the tier tests: three tiers and purchases through the real services."""

import itertools
from decimal import Decimal

from dateutil.relativedelta import relativedelta
from django.db import transaction
from django.utils import timezone

from loyalty.ledger import Cause
from loyalty.models import Tier
from loyalty.purchases import LineIn, purchase_record, purchase_return

TILL = Cause(source="api", client="test-till")
_receipts = itertools.count(1)


def months(n: int) -> relativedelta:
    return relativedelta(months=n)


def make_three_tiers():
    """Insider (everyone), VIB from 350, Rouge from 1000, each guaranteed 12 months."""
    return (
        Tier.objects.create(code="insider", name="Insider", rank=0, threshold=0),
        Tier.objects.create(
            code="vib", name="VIB", rank=1, threshold=350, earn_multiplier=Decimal("1.25"),
            birthday_points=250, perks="Free standard shipping\nEarly access to sales",
        ),
        Tier.objects.create(
            code="rouge", name="Rouge", rank=2, threshold=1000, earn_multiplier=Decimal("1.5"),
            exclusive_rewards=True,
        ),
    )  # fmt: skip


def buy(member, store, amount, *, at=None, lines=None, redeem_points=0):
    """A purchase at the till, recorded as the POS API records it (one transaction)."""
    amount = Decimal(amount)
    lines = lines or [LineIn(sku="SKU-1", quantity=Decimal(1), unit_price=amount)]
    with transaction.atomic():
        return purchase_record(
            store=store, member=member, receipt_id=f"R-{next(_receipts)}",
            occurred_at=at or timezone.now(), currency="EUR", total=amount, lines=lines,
            redeem_points=redeem_points, cause=TILL,
        )  # fmt: skip


def give_back(purchase, lines=None):
    with transaction.atomic():
        return purchase_return(
            store=purchase.store, purchase=purchase, return_id=f"X-{next(_receipts)}",
            lines=lines, cause=TILL,
        )  # fmt: skip
