"""Member card numbers: 13 digits, EAN-13 check digit, so any barcode scanner reads them.

The check digit catches a mistyped digit at the till before a lookup is even tried.
"""

import secrets

PREFIX = "60"


def ean13_check_digit(first12: str) -> str:
    total = sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(first12))
    return str((10 - total % 10) % 10)


def card_number_is_valid(number: str) -> bool:
    return (
        len(number) == 13
        and number.isascii()
        and number.isdigit()
        and ean13_check_digit(number[:12]) == number[12]
    )


def card_number_generate() -> str:
    body = PREFIX + "".join(secrets.choice("0123456789") for _ in range(12 - len(PREFIX)))
    return body + ean13_check_digit(body)


def card_number_display(number: str) -> str:
    """Grouped for reading aloud at the till: 6001 2345 6789 0."""
    return " ".join(number[i : i + 4] for i in range(0, len(number), 4))
