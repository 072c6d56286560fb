"""Serializer fields shared by every app's API."""

import re

from django.utils.translation import gettext_lazy as _
from rest_framework import serializers

from members.validators import E164

_DIGIT_RUN = re.compile(r"(?<![0-9])(?:[0-9][ -]?){12,18}[0-9](?![0-9])")


def luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def pan_redact(text: str) -> str:
    """Mask anything that looks like a payment card number (13–19 digits passing Luhn)
    so it is never stored or logged from a free-text field."""

    def mask(match):
        digits = re.sub(r"[ -]", "", match.group(0))
        return "[card number removed]" if luhn_valid(digits) else match.group(0)

    return _DIGIT_RUN.sub(mask, text)


class SafeText(serializers.CharField):
    """Free text from a till: trimmed, and card numbers masked before anything keeps it."""

    def to_internal_value(self, data):
        return pan_redact(super().to_internal_value(data))


class PhoneE164(serializers.CharField):
    default_error_messages = {"e164": _("Use the international E.164 form, e.g. +905551234567.")}

    def __init__(self, **kwargs):
        kwargs.setdefault("max_length", 16)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if not E164.match(value):
            self.fail("e164")
        return value


class MoneySerializer(serializers.Serializer):
    amount = serializers.DecimalField(max_digits=18, decimal_places=2, coerce_to_string=True)
    currency = serializers.CharField()

    def to_representation(self, money):
        return {"amount": format(money.amount, "f"), "currency": money.currency}


class JsonObject(serializers.DictField):
    """A JSON object passed on as it came: its fields are validated by whoever takes it (a
    batch item's payload, by the endpoint it stands for). DictField would copy it whole."""

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            self.fail("not_a_dict", input_type=type(data).__name__)
        return data
