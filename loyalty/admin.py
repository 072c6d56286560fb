from collections import defaultdict
from datetime import timedelta

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Max, Q, Sum
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _

from loyalty import explain, jobs, memberships_admin, selectors, services, tiers_admin
from loyalty.admin_readonly import ReadOnlyMixin
from loyalty.exceptions import LedgerError
from loyalty.forms import AdjustmentForm
from loyalty.models import (
    AccountKind,
    ActivityEvent,
    ExpiryNotice,
    JobRun,
    JournalEntry,
    Posting,
    ProgramSettings,
    Purchase,
    PurchaseLine,
    PurchaseReturn,
    Redemption,
)
from loyalty.rules.admin import breakdown_html  # also registers the earning rule admins
from members.models import Member

RECENT_ENTRIES = 20

admin.site.site_header = _("Tally back office")
admin.site.site_title = _("Tally back office")
admin.site.index_title = _("Run the loyalty program")


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
        (_("Tiers"), {"fields": ("tier_basis", "tier_window_months", "tier_notice_days")}),
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
    readonly_fields = [
        "card_number", "created_at", "profile_completed_at", "balances", "tier",
        "paid_membership", "recent_entries",
    ]  # fmt: skip
    autocomplete_fields = ["user"]
    fields = [
        "card_number",
        "user",
        "first_name",
        "last_name",
        "phone",
        "birth_date",  # members set it once; staff correct it here
        "marketing_consent",
        "created_at",
        "profile_completed_at",
        "balances",
        "tier",
        "paid_membership",
        "recent_entries",
    ]
    change_form_template = "admin/loyalty/member_change_form.html"

    @admin.display(description=_("tier"))
    def tier(self, obj):
        return tiers_admin.member_tier_html(obj)

    @admin.display(description=_("paid memberships"))
    def paid_membership(self, obj):
        return memberships_admin.member_memberships_html(obj)

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
            path(
                "<int:member_id>/tier/",
                self.admin_site.admin_view(tiers_admin.member_set_tier),
                name="loyalty_member_set_tier",
            ),
            path(
                "<int:member_id>/membership/",
                self.admin_site.admin_view(memberships_admin.member_grant_membership),
                name="loyalty_member_grant_membership",
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
        "earned_by_rule",
        "details",
    ]
    fields = readonly_fields

    def has_view_permission(self, request, obj=None):
        return request.user.has_perm("loyalty.view_journalentry")

    @admin.display(description=_("what happened"))
    def text(self, obj):
        return explain.entry_text(obj)

    @admin.display(description=_("points by rule"))
    def earned_by_rule(self, obj):
        return breakdown_html((obj.details or {}).get("breakdown"))


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
        "points_earned", "points_redeemed", "earned_by_rule", "earn_entry", "redeem_entry",
        "created_at",
    ]  # fmt: skip
    readonly_fields = fields

    @admin.display(description=_("points by rule"))
    def earned_by_rule(self, obj):
        return breakdown_html(obj.breakdown)


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


# Jobs


def _job_summary(run: JobRun) -> str:
    job = jobs.JOBS.get(run.job)
    if job is None:  # a job that no longer exists
        return ", ".join(f"{k}: {v}" for k, v in run.counts.items())
    return job.summary.format_map(defaultdict(int, run.counts))


@admin.register(JobRun)
class JobRunAdmin(ReadOnlyMixin, admin.ModelAdmin):
    """What the periodic jobs did and are doing; staff with the permission run one now."""

    list_display = ["job", "status", "progress", "summary", "created_at", "duration", "trigger",
                    "requested_by"]  # fmt: skip
    list_filter = ["job", "status", "trigger"]
    list_select_related = ["requested_by"]
    date_hierarchy = "created_at"
    fields = ["job", "status", "progress", "summary", "counts", "as_of", "created_at",
              "started_at", "finished_at", "duration", "trigger", "requested_by",
              "error"]  # fmt: skip
    readonly_fields = fields
    change_list_template = "admin/loyalty/jobrun/change_list.html"

    @admin.display(description=_("progress"))
    def progress(self, obj):
        return format_html(
            '<progress max="100" value="{}" aria-label="{}">{}%</progress><br>'
            '<span style="white-space:nowrap">{} / {} ({}%)</span>',
            obj.percent,
            _("progress"),
            obj.percent,
            f"{obj.processed:,}",
            f"{obj.total:,}",
            obj.percent,
        )

    @admin.display(description=_("result"))
    def summary(self, obj):
        return _job_summary(obj)

    @admin.display(description=_("took"))
    def duration(self, obj):
        if not obj.started_at:
            return "–"
        seconds = ((obj.finished_at or timezone.now()) - obj.started_at).total_seconds()
        return f"{seconds:.1f} s"

    def changelist_view(self, request, extra_context=None):
        # Refresh while a run is under way (a run a killed worker left "running" for more
        # than a day no longer counts).
        busy = JobRun.objects.filter(
            status__in=[JobRun.Status.QUEUED, JobRun.Status.RUNNING],
            created_at__gte=timezone.now() - timedelta(days=1),
        )
        extra_context = {
            **(extra_context or {}),
            "refresh_seconds": 5 if busy.exists() else None,
            "can_run_jobs": request.user.has_perm("loyalty.run_job"),
        }
        return super().changelist_view(request, extra_context)

    def get_urls(self):
        return [
            path("run/", self.admin_site.admin_view(run_jobs), name="loyalty_jobrun_run"),
            *super().get_urls(),
        ]


def run_jobs(request):
    """Staff page: every job with its last run and a "Run now" button (queues its Celery
    task, or runs it in-process when no broker is configured)."""
    if not request.user.has_perm("loyalty.run_job"):
        raise PermissionDenied
    if request.method == "POST":
        name = request.POST.get("job", "")
        if name not in jobs.JOBS:
            messages.error(request, _("There is no job called %(name)s.") % {"name": name})
            return redirect("admin:loyalty_jobrun_run")
        run = jobs.job_queue(name, user=request.user)
        title = jobs.JOBS[name].title
        if run.status == JobRun.Status.SUCCEEDED:
            messages.success(
                request, _("%(job)s finished: %(summary)s.")
                % {"job": title, "summary": _job_summary(run)},
            )  # fmt: skip
        elif run.status == JobRun.Status.FAILED:
            messages.error(
                request, _("%(job)s failed; the error is recorded on the run.") % {"job": title}
            )
        else:
            messages.success(
                request, _("%(job)s is queued; its progress shows below.") % {"job": title}
            )
        return redirect("admin:loyalty_jobrun_changelist")
    latest = JobRun.objects.values("job").annotate(pk=Max("pk")).values("pk")
    last = {run.job: run for run in JobRun.objects.filter(pk__in=latest)}
    rows = [(job, last.get(job.name)) for job in jobs.JOBS.values()]
    context = {
        **admin.site.each_context(request),
        "title": _("Run a job now"),
        "rows": rows,
        "opts": JobRun._meta,
    }
    return render(request, "admin/loyalty/run_jobs.html", context)


@admin.register(ExpiryNotice)
class ExpiryNoticeAdmin(ReadOnlyMixin, admin.ModelAdmin):
    """Which members were told that points expire, for which day (support answers
    "did I get a warning?")."""

    list_display = ["sent_at", "member", "expires_on", "points"]
    list_select_related = ["member__user"]
    search_fields = ["member__card_number", "member__user__email"]
    date_hierarchy = "sent_at"
    fields = ["member", "expires_on", "points", "sent_at"]
    readonly_fields = fields
