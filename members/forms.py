from django import forms
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from members.validators import (
    MAX_AGE,
    MIN_AGE,
    birth_date_validate,
    phone_normalise,
    phone_validate,
    years_before,
)


class SignupExtraForm(forms.Form):
    """What allauth's sign-up asks beyond e-mail and password (names are optional)."""

    first_name = forms.CharField(label=_("First name"), max_length=150, required=False)
    last_name = forms.CharField(label=_("Last name"), max_length=150, required=False)
    marketing_consent = forms.BooleanField(
        label=_("Send me offers and news by e-mail (you can change this any time)"), required=False
    )

    def signup(self, request, user):
        """allauth's hook; the account adapter already saved what this form collects."""


class ProfileForm(forms.Form):
    """The member's own profile. The birth date is asked only while it is empty: once set,
    it changes only through staff (members.services.member_profile_update)."""

    first_name = forms.CharField(label=_("First name"), max_length=150, required=False)
    last_name = forms.CharField(label=_("Last name"), max_length=150, required=False)
    phone = forms.CharField(
        label=_("Mobile phone"),
        max_length=24,  # room for the spaces people type; stored without them
        required=False,
        help_text=_("With your country code, e.g. +90 555 123 45 67."),
    )
    birth_date = forms.DateField(
        label=_("Birth date"),
        required=False,
        help_text=_(
            "For your birthday gift. You can set it once; to correct it later, ask our team."
        ),
    )
    marketing_consent = forms.BooleanField(
        label=_("Send me offers and news by e-mail (you can change this any time)"),
        required=False,
    )

    def __init__(self, *args, member, **kwargs):
        initial = {
            "first_name": member.first_name,
            "last_name": member.last_name,
            "phone": member.phone or "",
            "marketing_consent": member.marketing_consent,
        }
        super().__init__(*args, initial=initial, label_suffix="", **kwargs)
        widgets = {
            "first_name": {"autocomplete": "given-name"},
            "last_name": {"autocomplete": "family-name"},
            "phone": {"autocomplete": "tel", "inputmode": "tel"},
        }
        for name, attrs in widgets.items():
            self.fields[name].widget.attrs.update(attrs)
        self.fields["phone"].widget.input_type = "tel"  # the phone's number keypad
        if member.birth_date is not None:
            del self.fields["birth_date"]
        else:
            today = timezone.localdate()
            self.fields["birth_date"].widget = forms.DateInput(
                format="%Y-%m-%d",
                attrs={
                    "type": "date",
                    "autocomplete": "bday",
                    "min": years_before(today, MAX_AGE).isoformat(),
                    "max": years_before(today, MIN_AGE).isoformat(),
                },
            )

    def clean_phone(self):
        phone = phone_normalise(self.cleaned_data["phone"])
        phone_validate(phone)
        return phone or None

    def clean_birth_date(self):
        value = self.cleaned_data["birth_date"]
        birth_date_validate(value)
        return value
