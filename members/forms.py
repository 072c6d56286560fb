from django import forms
from django.utils.translation import gettext_lazy as _


class SignupExtraForm(forms.Form):
    """What allauth's sign-up asks beyond e-mail and password (names are optional)."""

    first_name = forms.CharField(label=_("First name"), max_length=150, required=False)
    last_name = forms.CharField(label=_("Last name"), max_length=150, required=False)
    marketing_consent = forms.BooleanField(
        label=_("Send me offers and news by e-mail (you can change this any time)"), required=False
    )

    def signup(self, request, user):
        """allauth's hook; the account adapter already saved what this form collects."""
