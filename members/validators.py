"""Checks on what a member tells us about themselves, shared by the portal's profile form,
the back office and the model (so every way in refuses the same things)."""

import re
from datetime import date

from django.core.exceptions import ValidationError
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

# The international form: "+", a country code (never 0), then at most 15 digits in all.
E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
MIN_AGE = 13  # the youngest age most loyalty programs (and e-mail consent laws) accept
MAX_AGE = 120


def phone_normalise(value: str) -> str:
    """What people type, in E.164: spaces, dots, dashes and brackets go; a leading 00 (the
    international prefix dialled in Europe) becomes +. "+90 (555) 123-45-67" → "+905551234567"."""
    value = re.sub(r"[\s.\-()/]", "", value or "")
    if value.startswith("00"):
        value = "+" + value[2:]
    return value


def phone_validate(value: str) -> None:
    if value and not E164.match(value):
        raise ValidationError(
            _("Give your number with its country code, e.g. +90 555 123 45 67."), code="e164"
        )


def years_before(day: date, years: int) -> date:
    """The same day `years` earlier (29 February falls back to the 28th)."""
    try:
        return day.replace(year=day.year - years)
    except ValueError:
        return day.replace(year=day.year - years, day=28)


def birth_date_validate(value: date | None) -> None:
    """Not in the future, and an age a shopper can have."""
    if value is None:
        return
    today = timezone.localdate()
    if value > today:
        raise ValidationError(_("A birth date can't be in the future."), code="future")
    if value > years_before(today, MIN_AGE):
        raise ValidationError(
            _("Members must be at least %(age)s years old.") % {"age": MIN_AGE}, code="too_young"
        )
    if value < years_before(today, MAX_AGE):
        raise ValidationError(
            _("Please check the year: that is more than %(age)s years ago.") % {"age": MAX_AGE},
            code="too_old",
        )
