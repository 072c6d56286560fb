from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from loyalty.currencies import minor_units


@dataclass(frozen=True, slots=True)
class Money:
    amount: Decimal
    currency: str

    @classmethod
    def of(cls, amount: Decimal, currency: str) -> "Money":
        """Rounded half-up to the currency's minor unit (cents, or none for JPY)."""
        exponent = Decimal(1).scaleb(-minor_units(currency))
        return cls(amount.quantize(exponent, rounding=ROUND_HALF_UP), currency)

    def __str__(self) -> str:
        return f"{self.amount} {self.currency}"
