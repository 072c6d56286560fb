from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Q, Sum
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _

from loyalty import explain, selectors, services
from loyalty.exceptions import LedgerError
from loyalty.forms import AdjustmentForm
from loyalty.models import (
    AccountKind,
    ActivityEvent,
    JournalEntry,
    Posting,
    ProgramSettings,
    Purchase,
    PurchaseLine,
    PurchaseReturn,
    Redemption,
)
from members.models import Member

RECENT_ENTRIES = 20

admin.site.site_header = _("Tally back office")
admin.site.site_title = _("Tally back office")
admin.site.index_title = _("Run the loyalty program")


class ReadOnlyMixin:
    """The ledger is append-only: the back office may look, never edit or delete."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(ProgramSettings)
class ProgramSettingsAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "currency",
        "point_value",
        "earn_rate",
        "pending_days",
        "points_lifetime_months",
    ]
    fieldsets = (
        (None, {"fields": ("name", "currency", "point_value")}),
        (_("Earning"), {"fields": ("earn_rate", "rounding", "pending_days")}),
        (_("Expiry"), {"fields": ("points_lifetime_months", "expiry_notice_days")}),
    )

    def has_add_permission(self, request):
        return not ProgramSettings.objects.exists()

    def has_delete_permission(self, request, obj=None):
        return False

    def changelist_view(self, request, extra_context=None):
        # One program per install: the list is just a detour to its settings.
        settings = selectors.program_settings()
        return redirect(reverse("admin:loyalty_programsettings_change", args=[settings.pk]))


@admin.register(Member)
class MemberAdmin(admin.ModelAdmin):
    list_display = ["card_number", "display_name", "email", "phone", "points", "created_at"]
    search_fields = ["card_number", "user__email", "phone", "first_name", "last_name"]
    list_select_related = ["user"]
    readonly_fields = ["card_number", "created_at", "balances", "recent_entries"]
    autocomplete_fields = ["user"]
    fields = [
        "card_number",
        "user",
        "first_name",
        "last_name",
        "phone",
        "marketing_consent",
        "created_at",
        "balances",
        "recent_entries",
    ]
    change_form_template = "admin/loyalty/member_change_form.html"

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(
                points_sum=Sum("accounts__balance", filter=Q(accounts__kind=AccountKind.MEMBER))
            )
        )

    @admin.display(description=_("points"), ordering="points_sum")
    def points(self, obj):
        return obj.points_sum or 0

    @admin.display(description=_("e-mail"), ordering="user__email")
    def email(self, obj):
        return obj.email

    @admin.display(description=_("balance"))
    def balances(self, obj):
        if not obj.pk:
            return "–"
        balance = selectors.member_balance(member=obj)
        return format_html(
            "<strong>{}</strong> {} ({}) · {} {}",
            balance.points,
            _("points"),
            balance.value,
            balance.pending,
            _("pending"),
        )

    @admin.display(description=_("recent ledger entries"))
    def recent_entries(self, obj):
        if not obj.pk:
            return "–"
        entries = selectors.member_history(member=obj).select_related("created_by")[:RECENT_ENTRIES]
        rows = format_html_join(
            "",
            '<tr><td>{}</td><td><a href="{}">{}</a></td><td style="text-align:right">{}</td>'
            '<td style="text-align:right">{}</td><td>{}</td></tr>',
            (
                (
                    e.effective_at.strftime("%Y-%m-%d %H:%M"),
                    reverse("admin:loyalty_journalentry_change", args=[e.pk]),
                    explain.entry_text(e),
                    f"{e.points:+d}" if e.points else "–",
                    e.balance_after if e.balance_after is not None else "–",
                    e.created_by or e.get_source_display(),
                )
                for e in entries
            ),
        )
        all_url = reverse("admin:loyalty_journalentry_changelist") + f"?member__id__exact={obj.pk}"
        return format_html(
            "<table><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr></thead>"
            '<tbody>{}</tbody></table><p><a href="{}">{}</a></p>',
            _("when"),
            _("what"),
            _("points"),
            _("balance"),
            _("by"),
            rows,
            all_url,
            _("All entries"),
        )

    def get_urls(self):
        return [
            path(
                "<int:member_id>/adjust/",
                self.admin_site.admin_view(adjust_points),
                name="loyalty_member_adjust",
            ),
            *super().get_urls(),
        ]


def adjust_points(request, member_id):
    """Staff form: add or remove points with a reason; posts an audited ledger entry."""
    if not request.user.has_perm("loyalty.adjust_points"):
        raise PermissionDenied
    member = get_object_or_404(Member, pk=member_id)
    form = AdjustmentForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            services.points_adjust(
                member=member,
                points=form.cleaned_data["points"],
                reason=form.cleaned_data["reason"],
                staff=request.user,
            )
        except LedgerError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(
                request,
                _("Adjusted %(points)+d points for %(member)s.")
                % {
                    "points": form.cleaned_data["points"],
                    "member": member,
                },
            )
            return redirect("admin:members_member_change", member.pk)
    context = {
        **admin.site.each_context(request),
        "title": _("Adjust points of %(member)s") % {"member": member},
        "member": member,
        "balance": selectors.member_balance(member=member),
        "form": form,
        "opts": Member._meta,
    }
    return render(request, "admin/loyalty/adjust_points.html", context)


class PostingInline(ReadOnlyMixin, admin.TabularInline):
    model = Posting
    fields = ["account", "amount", "balance_after"]
    readonly_fields = fields
    extra = 0


@admin.register(JournalEntry)
class JournalEntryAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ["created_at", "kind", "member", "text", "source", "created_by"]
    list_filter = ["kind", "source", "created_at"]
    search_fields = [
        "member__card_number",
        "member__user__email",
        "description",
        "reason",
        "public_id",
    ]
    list_select_related = ["member__user", "created_by"]
    date_hierarchy = "created_at"
    inlines = [PostingInline]
    readonly_fields = [
        "public_id",
        "kind",
        "member",
        "text",
        "description",
        "reason",
        "source",
        "created_by",
        "client",
        "reversal_of",
        "effective_at",
        "created_at",
        "details",
    ]
    fields = readonly_fields

    def has_view_permission(self, request, obj=None):
        return request.user.has_perm("loyalty.view_journalentry")

    @admin.display(description=_("what happened"))
    def text(self, obj):
        return explain.entry_text(obj)


class PurchaseLineInline(ReadOnlyMixin, admin.TabularInline):
    model = PurchaseLine
    fields = ["sku", "category", "quantity", "unit_price", "points"]
    readonly_fields = fields
    extra = 0


class PurchaseReturnInline(ReadOnlyMixin, admin.TabularInline):
    model = PurchaseReturn
    fields = ["return_id", "points_reversed", "points_restored", "created_at"]
    readonly_fields = fields
    extra = 0


@admin.register(Purchase)
class PurchaseAdmin(ReadOnlyMixin, admin.ModelAdmin):
    """What tills and web shops recorded; corrections go through returns, never edits."""

    list_display = [
        "receipt_id",
        "store",
        "member",
        "total",
        "points_earned",
        "points_redeemed",
        "occurred_at",
    ]
    list_filter = ["store", "occurred_at"]
    search_fields = ["receipt_id", "member__card_number", "member__user__email", "public_id"]
    list_select_related = ["store", "member__user"]
    date_hierarchy = "occurred_at"
    inlines = [PurchaseLineInline, PurchaseReturnInline]
    fields = [
        "public_id", "receipt_id", "store", "member", "occurred_at", "currency", "total",
        "points_earned", "points_redeemed", "breakdown", "earn_entry", "redeem_entry", "created_at",
    ]  # fmt: skip
    readonly_fields = fields


@admin.register(Redemption)
class RedemptionAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ["created_at", "store", "member", "points", "reference", "status"]
    list_filter = ["status", "store"]
    search_fields = ["member__card_number", "reference", "public_id"]
    list_select_related = ["store", "member__user"]
    readonly_fields = [
        "public_id",
        "store",
        "member",
        "points",
        "reference",
        "entry",
        "status",
        "created_at",
    ]
    fields = readonly_fields


@admin.register(ActivityEvent)
class ActivityEventAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ["occurred_at", "type", "member", "store", "points_earned"]
    list_filter = ["type", "store"]
    search_fields = ["member__card_number", "type"]
    list_select_related = ["store", "member__user"]
    readonly_fields = [
        "public_id",
        "type",
        "member",
        "store",
        "occurred_at",
        "properties",
        "points_earned",
        "created_at",
    ]
    fields = readonly_fields
