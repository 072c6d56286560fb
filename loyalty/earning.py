"""Points for money spent at the program's base rate, and the program's rounding. The
rules engine (loyalty/rules/engine.py) builds on these."""

from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal

from loyalty.models import ProgramSettings, Rounding

_ROUNDING = {
    Rounding.DOWN: ROUND_FLOOR,
    Rounding.NEAREST: ROUND_HALF_UP,
    Rounding.UP: ROUND_CEILING,
}


def round_points(raw: Decimal, rounding: str) -> int:
    """Whole points from an exact amount, by one of the program's rounding rules."""
    return int(Decimal(raw).to_integral_value(rounding=_ROUNDING[rounding]))


def points_for_amount(amount: Decimal, *, settings: ProgramSettings) -> int:
    """Base points for `amount` of the program currency, rounded by the program's rule.
    Nothing is earned on a zero or negative amount."""
    if amount <= 0:
        return 0
    return round_points(Decimal(amount) * Decimal(settings.earn_rate), settings.rounding)
