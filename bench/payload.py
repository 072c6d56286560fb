"""The basket every bench purchase sends (bench/purchase.lua builds the same JSON)."""

from datetime import UTC, datetime

LINES = [
    {"sku": "SHAMPOO-250", "category": "hair", "quantity": "2", "unit_price": "12.45"},
    {"sku": "PERFUME-50", "category": "fragrance", "quantity": "1", "unit_price": "25.00"},
]
TOTAL = "49.90"


def purchase_body(card_number: str, receipt_id: str, occurred_at: str | None = None) -> dict:
    return {
        "card_number": card_number,
        "receipt_id": receipt_id,
        "occurred_at": occurred_at or datetime.now(UTC).replace(microsecond=0).isoformat(),
        "currency": "EUR",
        "total": TOTAL,
        "lines": LINES,
    }
