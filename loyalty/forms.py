from django import forms
from django.utils.translation import gettext_lazy as _

MAX_ADJUSTMENT = 10_000_000


class AdjustmentForm(forms.Form):
    points = forms.IntegerField(
        label=_("Points"),
        min_value=-MAX_ADJUSTMENT,
        max_value=MAX_ADJUSTMENT,
        help_text=_("Positive to add points, negative to remove them."),
    )
    reason = forms.CharField(
        label=_("Reason"),
        max_length=255,
        widget=forms.TextInput(attrs={"size": 60}),
        help_text=_("Shown to the member in their history, and kept for audit."),
    )

    def clean_points(self):
        points = self.cleaned_data["points"]
        if points == 0:
            raise forms.ValidationError(_("Enter a number of points other than zero."))
        return points
