import segno
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.utils.safestring import mark_safe
from django.utils.translation import gettext as _

from members.cards import card_number_display
from members.forms import ProfileForm
from members.services import ProfileInvalid, member_for_user, member_profile_update


@login_required
def card(request):
    member = member_for_user(user=request.user)
    qr = segno.make(member.card_number, error="m")
    svg = qr.svg_inline(scale=6, dark="#111", light="#fff", omitsize=True)
    return render(
        request,
        "members/card.html",
        {
            "member": member,
            "qr_svg": mark_safe(svg),  # SVG that segno generated from digits, not user text
            "card_display": card_number_display(member.card_number),
        },
    )


@login_required
def profile(request):
    """The member's name, phone, birth date (once) and consent."""
    member = member_for_user(user=request.user)
    form = ProfileForm(request.POST or None, member=member)
    if request.method == "POST" and form.is_valid():
        was_complete = member.profile_completed_at is not None
        try:
            member_profile_update(member=member, **form.cleaned_data)
        except ProfileInvalid as invalid:
            for field, message in invalid.errors.items():
                form.add_error(field if field in form.fields else None, message)
        else:
            if member.profile_completed_at is not None and not was_complete:
                messages.success(request, _("Thank you: your profile is complete."))
            else:
                messages.success(request, _("Your profile is saved."))
            return redirect("members:profile")
    return render(request, "members/profile.html", {"member": member, "form": form})
