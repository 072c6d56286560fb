"""Every ledger line in words, in the reader's language. Used by the portal, the back
office and (later) the API, so a member and a cashier read the same explanation."""

from datetime import datetime
from decimal import Decimal, InvalidOperation

from django.utils import formats
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from loyalty.models import EntryKind, JournalEntry


def _day(iso: str) -> str:
    return formats.date_format(datetime.fromisoformat(iso), "DATE_FORMAT")


def entry_text(entry: JournalEntry) -> str:
    kind, details = entry.kind, entry.details or {}
    if kind == EntryKind.EARN:
        return _("Earned: %(what)s") % {"what": entry.description}
    if kind == EntryKind.REDEEM:
        return _("Redeemed: %(what)s") % {"what": entry.description}
    if kind == EntryKind.TRANSFER:
        return _("Given to %(to)s: %(what)s") % {
            "to": details.get("to", ""),
            "what": entry.description,
        }
    if kind == EntryKind.ADJUSTMENT:
        return _("Adjusted by our team: %(reason)s") % {"reason": entry.reason}
    if kind == EntryKind.RETURN:
        return _("Returned: %(what)s") % {"what": entry.description}
    if kind == EntryKind.REVERSAL:
        return _("Reversed: %(what)s") % {"what": entry.description}
    if kind == EntryKind.EXPIRY:
        days = sorted({_day(lot["earned_at"]) for lot in details.get("lots", [])})
        return ngettext(
            "Expired: points earned on %(days)s reached the end of their lifetime",
            "Expired: points earned on %(days)s reached the end of their lifetime",
            len(days),
        ) % {"days": ", ".join(days)}
    if kind == EntryKind.MATURATION:
        return _("Now available: pending points passed the return window")
    return entry.description


def _number(value, places=None) -> str:
    if places is None and str(value).isdigit():
        return str(value)  # "2": nothing to localise
    try:
        return formats.number_format(Decimal(str(value)), decimal_pos=places, use_l10n=True)
    except (InvalidOperation, TypeError, ValueError):
        return str(value)


def breakdown_item_text(item: dict) -> str:
    """One line of an earning breakdown in the reader's language, from the snapshot the
    purchase or activity stored (rule name, multiplier, threshold as they were then), so
    editing a rule later never rewrites what a member was told. Unknown items fall back
    to the description written when they were earned."""
    kind, name = item.get("kind"), item.get("name", "")
    if kind == "base" and "rate" in item:
        text = _("%(rate)s point(s) per %(currency)s paid") % {
            "rate": _number(item["rate"]),
            "currency": item.get("currency", ""),
        }
    elif kind == "tier":
        text = _("%(tier)s tier: %(multiplier)s× points") % {
            "tier": name,
            "multiplier": _number(item.get("multiplier", "")),
        }
    elif kind == "multiplier":
        text = _("%(multiplier)s× on %(name)s") % {
            "multiplier": _number(item.get("multiplier", "")),
            "name": name,
        }
    elif kind == "exclusion":
        text = _("No points on %(name)s") % {"name": name}
    elif kind == "basket_bonus":
        text = _("%(name)s: bonus for paying %(threshold)s %(currency)s or more") % {
            "name": name,
            "threshold": _number(item.get("threshold", ""), 2),
            "currency": item.get("currency", ""),
        }
    elif kind == "first_purchase":
        text = _("%(name)s: first purchase bonus") % {"name": name}
    elif kind == "activity":
        text = name
    elif kind == "birthday":  # a tier's birthday gift (loyalty/birthdays.py)
        text = _("Happy birthday! A gift from %(name)s") % {"name": name}
    elif kind == "plan":  # a paid membership's extra multiplier
        text = _("%(plan)s member %(multiplier)s×") % {
            "plan": name,
            "multiplier": _number(item.get("multiplier", "")),
        }
    elif kind == "plan_fee":
        text = _("No points on the %(plan)s membership fee") % {"plan": name}
    elif kind == "plan_bonus":
        terms = int(item.get("terms", 1))
        text = ngettext(
            "%(plan)s membership bonus",
            "%(plan)s membership bonus for %(terms)s terms",
            terms,
        ) % {"plan": name, "terms": terms}
    else:
        return item.get("description", "")
    if item.get("limited"):
        if item.get("points"):
            text = _("%(text)s (up to your limit)") % {"text": text}
        else:
            text = _("%(text)s (limit reached)") % {"text": text}
    return text


def entry_breakdown(entry: JournalEntry) -> list[tuple[str, int]]:
    """(text, points) for each rule that gave points in an earning entry, e.g.
    ("2× on Fragrance weekend", 120); empty for entries without a breakdown."""
    items = (entry.details or {}).get("breakdown") or []
    return [(breakdown_item_text(item), int(item.get("points", 0))) for item in items]


def entry_rules_summary(entry: JournalEntry) -> str:
    """A one-line "which rules gave what" for history lists, when more than one rule (or
    a bonus) was at work: "1 point(s) per EUR paid: +49 · 2× on Fragrance weekend: +25"."""
    items = [i for i in (entry.details or {}).get("breakdown") or [] if i.get("points")]
    if len(items) < 2 and all(i.get("kind", "base") in ("base", "activity") for i in items):
        return ""  # the line itself already says it all
    return " · ".join(
        _("%(rule)s: %(points)s") % {"rule": breakdown_item_text(i), "points": f"{i['points']:+d}"}
        for i in items
    )
