import segno
from django.contrib.auth.decorators import login_required
from django.shortcuts import render
from django.utils.safestring import mark_safe

from members.cards import card_number_display
from members.services import member_for_user


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
