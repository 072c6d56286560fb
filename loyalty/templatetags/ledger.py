from django import template
from django.utils.formats import number_format

from loyalty import explain

register = template.Library()


@register.filter
def entry_text(entry) -> str:
    return explain.entry_text(entry)


@register.filter
def entry_breakdown(entry) -> list[tuple[str, int]]:
    """Which rules gave what in an earning entry: [("2× on Fragrance weekend", 120), …]."""
    return explain.entry_breakdown(entry)


@register.filter
def entry_rules_summary(entry) -> str:
    return explain.entry_rules_summary(entry)


@register.filter
def points(value) -> str:
    """1234 → "1,234" in the reader's locale."""
    return number_format(value or 0, decimal_pos=0, use_l10n=True, force_grouping=True)


@register.filter
def signed_points(value) -> str:
    sign = "+" if value and value > 0 else ("−" if value and value < 0 else "")
    return f"{sign}{points(abs(value or 0))}"


@register.filter
def money(value) -> str:
    """A Money in the reader's locale with its currency code: "12.40 EUR" / "12,40 EUR"."""
    if value is None:
        return ""
    places = max(0, -value.amount.as_tuple().exponent)
    amount = number_format(value.amount, decimal_pos=places, use_l10n=True, force_grouping=True)
    return f"{amount} {value.currency}"
