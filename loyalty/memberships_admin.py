"""Back office for paid memberships: the plans, who holds one, a staff grant (from the
member's page) and a cancellation, each with a reason and its own permission. Imported
by loyalty/admin.py. The work is done by loyalty/memberships.py."""

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _

from loyalty import memberships, tiers
from loyalty.models import Membership, MembershipPlan
from members.models import Member

RECENT_MEMBERSHIPS = 10


@admin.register(MembershipPlan)
class MembershipPlanAdmin(admin.ModelAdmin):
    list_display = [
        "name", "code", "sku", "fee", "term_months", "tier", "earn_multiplier", "bonus_points",
        "is_active",
    ]  # fmt: skip
    list_select_related = ["tier"]
    prepopulated_fields = {"code": ["name"]}
    fieldsets = (
        (None, {"fields": ("name", "code", "is_active")}),
        (_("At the till"), {"fields": ("sku", "fee", "term_months", "fee_earns_points")}),
        (
            _("Benefits for the term"),
            {"fields": ("tier", "earn_multiplier", "bonus_points", "perks")},
        ),
        (_("Renewal"), {"fields": ("renewal_notice_days",)}),
    )

    def has_delete_permission(self, request, obj=None):
        # Memberships point at their plan: take one off sale by unticking "on sale".
        return False


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    """Who holds a membership, since when and how they got it (read-only: memberships
    change through purchases, returns, grants and cancellations, never by editing)."""

    list_display = ["member", "plan", "starts_at", "ends_at", "status", "source", "auto_renew"]
    list_filter = ["status", "plan", "source", "auto_renew"]
    list_select_related = ["member__user", "plan"]
    search_fields = ["member__card_number", "member__user__email", "reason", "end_reason"]
    date_hierarchy = "starts_at"
    fields = [
        "member", "plan", "status", "starts_at", "ends_at", "months", "auto_renew", "source",
        "purchase", "staff", "reason", "renewed_from", "reminded_at", "ended_at", "ended_by",
        "end_reason", "created_at",
    ]  # fmt: skip
    readonly_fields = fields
    change_form_template = "admin/loyalty/membership_change_form.html"

    def has_add_permission(self, request):
        return False  # grant one from the member's page

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_urls(self):
        return [
            path(
                "<int:membership_id>/cancel/",
                self.admin_site.admin_view(membership_cancel_view),
                name="loyalty_membership_cancel",
            ),
            *super().get_urls(),
        ]


class GrantForm(forms.Form):
    plan = forms.ModelChoiceField(
        label=_("Plan"), queryset=MembershipPlan.objects.filter(is_active=True)
    )
    months = forms.IntegerField(
        label=_("Months"),
        min_value=1,
        max_value=120,
        required=False,
        help_text=_("Empty: one term of the plan."),
    )
    reason = forms.CharField(
        label=_("Reason"),
        max_length=255,
        widget=forms.TextInput(attrs={"size": 60}),
        help_text=_("Kept for audit with the membership."),
    )


class CancelForm(forms.Form):
    reason = forms.CharField(
        label=_("Reason"),
        max_length=255,
        widget=forms.TextInput(attrs={"size": 60}),
        help_text=_("Shown to the member with the change of their tier, and kept for audit."),
    )


def member_grant_membership(request, member_id):
    """Staff give a member a paid membership with a reason (loyalty.grant_membership)."""
    if not request.user.has_perm("loyalty.grant_membership"):
        raise PermissionDenied
    member = get_object_or_404(Member, pk=member_id)
    form = GrantForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        plan = form.cleaned_data["plan"]
        try:
            membership = memberships.membership_grant(
                member=member, plan=plan, months=form.cleaned_data["months"] or plan.term_months,
                reason=form.cleaned_data["reason"], staff=request.user,
            )  # fmt: skip
        except memberships.MembershipError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(
                request,
                _("%(member)s holds %(plan)s from %(start)s until %(end)s.")
                % {
                    "member": member,
                    "plan": plan.name,
                    "start": tiers.date_text(membership.starts_at),
                    "end": tiers.date_text(membership.ends_at),
                },
            )
            return redirect("admin:members_member_change", member.pk)
    context = {
        **admin.site.each_context(request),
        "title": _("Grant a paid membership to %(member)s") % {"member": member},
        "member": member,
        "current": memberships.membership_now(member=member),
        "form": form,
        "opts": Member._meta,
    }
    return render(request, "admin/loyalty/grant_membership.html", context)


def membership_cancel_view(request, membership_id):
    """Staff end a membership now, with its renewals, and a reason (loyalty.cancel_membership)."""
    if not request.user.has_perm("loyalty.cancel_membership"):
        raise PermissionDenied
    membership = get_object_or_404(
        Membership.objects.select_related("member", "plan"), pk=membership_id
    )
    form = CancelForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            memberships.membership_cancel(
                membership=membership, reason=form.cleaned_data["reason"], staff=request.user
            )
        except memberships.MembershipError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(
                request,
                _("The %(plan)s membership of %(member)s is cancelled.")
                % {"plan": membership.plan.name, "member": membership.member},
            )
            return redirect("admin:members_member_change", membership.member_id)
    context = {
        **admin.site.each_context(request),
        "title": _("Cancel the %(plan)s membership of %(member)s")
        % {"plan": membership.plan.name, "member": membership.member},
        "membership": membership,
        "form": form,
        "opts": Membership._meta,
    }
    return render(request, "admin/loyalty/cancel_membership.html", context)


def _running(membership: Membership, now) -> bool:
    return membership.status == Membership.Status.ACTIVE and (
        membership.starts_at <= now < membership.ends_at
    )


def member_memberships_html(member: Member):
    """The member's memberships, newest first, on their page (1 query)."""
    if not member.pk:
        return "–"
    rows = list(memberships.member_memberships(member=member)[:RECENT_MEMBERSHIPS])
    now = timezone.now()
    body = format_html_join(
        "",
        '<tr><td><a href="{}">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>',
        (
            (
                reverse("admin:loyalty_membership_change", args=[m.pk]),
                m.plan.name,
                m.starts_at.strftime("%Y-%m-%d"),
                m.ends_at.strftime("%Y-%m-%d"),
                _("running") if _running(m, now) else m.get_status_display(),
                m.get_source_display(),
            )
            for m in rows
        ),
    )  # fmt: skip
    return format_html(
        "<table><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr></thead>"
        "<tbody>{}</tbody></table>",
        _("plan"), _("starts"), _("ends"), _("status"), _("obtained by"),
        body or format_html("<tr><td colspan=5>{}</td></tr>", _("No paid membership.")),
    )  # fmt: skip
