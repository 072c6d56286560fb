from decimal import Decimal

import pytest

from loyalty.earning import points_for_amount
from loyalty.models import ProgramSettings, Rounding


@pytest.mark.parametrize(
    ("amount", "rate", "rounding", "points"),
    [
        ("12.90", "1", Rounding.DOWN, 12),
        ("12.50", "1", Rounding.NEAREST, 13),
        ("12.49", "1", Rounding.NEAREST, 12),
        ("12.10", "1", Rounding.UP, 13),
        ("12.00", "1", Rounding.UP, 12),
        ("49.90", "2", Rounding.DOWN, 99),
        ("49.90", "0.5", Rounding.NEAREST, 25),
        ("0.99", "1", Rounding.DOWN, 0),
        ("0", "1", Rounding.UP, 0),
        ("-10", "1", Rounding.UP, 0),
        ("1000000.00", "10", Rounding.DOWN, 10_000_000),
    ],
)
def test_points_for_amount_follows_the_program_rounding(amount, rate, rounding, points):
    settings = ProgramSettings(earn_rate=Decimal(rate), rounding=rounding)
    assert points_for_amount(Decimal(amount), settings=settings) == points


def test_a_zero_earn_rate_earns_nothing():
    settings = ProgramSettings(earn_rate=Decimal("0"), rounding=Rounding.UP)
    assert points_for_amount(Decimal("99.99"), settings=settings) == 0
