"""Points for money spent at the program's base rate. The rules engine (earning rules,
campaigns, tier multipliers) builds on this."""

from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal

from loyalty.models import ProgramSettings, Rounding

_ROUNDING = {
    Rounding.DOWN: ROUND_FLOOR,
    Rounding.NEAREST: ROUND_HALF_UP,
    Rounding.UP: ROUND_CEILING,
}


def points_for_amount(amount: Decimal, *, settings: ProgramSettings) -> int:
    """Base points for `amount` of the program currency, rounded by the program's rule.
    Nothing is earned on a zero or negative amount."""
    if amount <= 0:
        return 0
    raw = Decimal(amount) * Decimal(settings.earn_rate)
    return int(raw.to_integral_value(rounding=_ROUNDING[settings.rounding]))
