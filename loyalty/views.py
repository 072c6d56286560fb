from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from loyalty import birthdays, memberships, selectors, tiers
from loyalty.ledger import program_settings
from loyalty.models import JournalEntry
from members.models import Member
from members.services import member_for_user

HISTORY_PAGE_SIZE = 20


def _member_for(request):
    """The signed-in shopper's own membership: every page below sees only this member."""
    return member_for_user(user=request.user)


def _member_with_membership(request):
    """`_member_for`, with their running paid membership read in the same query."""
    member = memberships.with_membership(Member.objects.filter(user=request.user)).first()
    if member is None:
        return _member_for(request)
    request.user.member = member  # what _member_for would have cached
    return member


def home(request):
    if request.user.is_authenticated:
        return redirect("loyalty:dashboard")
    return render(request, "loyalty/home.html", {"program": program_settings()})


@login_required
def dashboard(request):
    member = _member_with_membership(request)
    settings = program_settings()
    membership = memberships.membership_now(member=member)  # a query only for members with one
    progress = tiers.tier_progress(member=member, settings=settings, membership=membership)
    context = {
        "member": member,
        "program": settings,
        "membership": membership,
        "balance": selectors.member_balance(member=member, settings=settings),
        "recent": selectors.member_history(member=member)[:5],
        "tier": progress,
        "birthday": birthdays.member_birthday_outlook(
            member=member, tier=progress.tier, table=progress.table
        ),
    }
    return render(request, "loyalty/dashboard.html", context)


@login_required
def tier_list(request):
    """Every tier and what it gives, the paid memberships and what they add, where the
    member stands, and their tier history."""
    member = _member_with_membership(request)
    settings = program_settings()
    membership = memberships.membership_now(member=member)
    progress = tiers.tier_progress(member=member, settings=settings, membership=membership)
    context = {
        "member": member,
        "program": settings,
        "membership": membership,
        "tier": progress,
        "plans": memberships.plans_offer(table=progress.table),
        "changes": tiers.member_tier_changes(member=member)[:50],
    }
    return render(request, "loyalty/tiers.html", context)


@login_required
@require_POST
def membership_reminders(request):
    """The member turns renewal reminders of their paid membership on or off."""
    member = _member_for(request)
    on = request.POST.get("on") == "1"
    if memberships.membership_reminders_set(member=member, on=on):
        messages.success(
            request,
            _("We will remind you by e-mail before your membership ends.")
            if on
            else _("No reminder: your membership will simply end on its date."),
        )
    return redirect("loyalty:tiers" if request.POST.get("next") == "tiers" else "loyalty:dashboard")


@login_required
def history(request):
    member = _member_for(request)
    page = Paginator(selectors.member_history(member=member), HISTORY_PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    template = "loyalty/partials/_history_table.html" if request.htmx else "loyalty/history.html"
    return render(request, template, {"member": member, "page": page})


@login_required
def entry_detail(request, public_id):
    member = _member_for(request)
    try:
        entry = selectors.member_entry(member=member, public_id=public_id)
    except JournalEntry.DoesNotExist:
        raise Http404 from None
    context = {
        "member": member,
        "entry": entry,
        "movements": selectors.entry_lot_movements(entry=entry),
    }
    return render(request, "loyalty/entry_detail.html", context)
