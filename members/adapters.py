from allauth.account.adapter import DefaultAccountAdapter

from members.services import member_for_user


class AccountAdapter(DefaultAccountAdapter):
    """Every sign-up becomes a program member with a card number straight away."""

    def save_user(self, request, user, form, commit=True):
        user = super().save_user(request, user, form, commit=commit)  # copies first/last name
        if commit:
            consent = bool(form.cleaned_data.get("marketing_consent"))
            member_for_user(user=user, marketing_consent=consent)
        return user
