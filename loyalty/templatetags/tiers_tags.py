from django import template

from loyalty import tiers

register = template.Library()


@register.filter
def tier_change_text(change) -> str:
    return tiers.tier_change_text(change)


@register.filter
def multiplier(value) -> str:
    """1.25 → "1.25", 2.00 → "2", in the reader's locale."""
    return tiers.multiplier_text(value)
