"""Domain errors of the ledger. Each carries a stable code and a message for people."""

from django.utils.translation import gettext as _


class LedgerError(Exception):
    code = "ledger_error"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidPoints(LedgerError):
    code = "validation_error"

    def __init__(self, points):
        super().__init__(
            _("Points must be a positive whole number; got %(points)r.") % {"points": points}
        )


class InsufficientPoints(LedgerError):
    code = "insufficient_points"

    def __init__(self, *, balance: int, asked: int):
        super().__init__(
            _("Balance is %(balance)d points; %(asked)d were asked.")
            % {"balance": balance, "asked": asked}
        )
        self.balance = balance
        self.asked = asked


class ReasonRequired(LedgerError):
    code = "validation_error"

    def __init__(self):
        super().__init__(_("A staff adjustment needs a reason that the member can read."))


class AlreadyReversed(LedgerError):
    code = "already_reversed"

    def __init__(self):
        super().__init__(_("This entry has already been reversed."))


class NotReversible(LedgerError):
    code = "not_reversible"


class UnknownMember(LedgerError):
    code = "member_not_found"

    def __init__(self):
        super().__init__(_("No such member."))


class InvalidAccount(LedgerError):
    code = "validation_error"
