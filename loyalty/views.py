from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import redirect, render

from loyalty import selectors
from loyalty.ledger import program_settings
from loyalty.models import JournalEntry
from members.services import member_for_user

HISTORY_PAGE_SIZE = 20


def _member_for(request):
    """The signed-in shopper's own membership: every page below sees only this member."""
    return member_for_user(user=request.user)


def home(request):
    if request.user.is_authenticated:
        return redirect("loyalty:dashboard")
    return render(request, "loyalty/home.html", {"program": program_settings()})


@login_required
def dashboard(request):
    member = _member_for(request)
    settings = program_settings()
    context = {
        "member": member,
        "program": settings,
        "balance": selectors.member_balance(member=member, settings=settings),
        "recent": selectors.member_history(member=member)[:5],
    }
    return render(request, "loyalty/dashboard.html", context)


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
