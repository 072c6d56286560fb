"""Every ledger line in words, in the reader's language. Used by the portal, the back
office and (later) the API, so a member and a cashier read the same explanation."""

from datetime import datetime

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
