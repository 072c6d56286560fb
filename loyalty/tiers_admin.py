"""Back office for tiers: define them, see who moved and why, put a member in a tier.
Imported by loyalty/admin.py.

Editing a tier after launch never moves anyone at once: the next review (loyalty.tiers)
applies it. Before a change to who qualifies is saved, the form shows what that review
would do with it (the review's own decisions, computed without writing)."""

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _

from loyalty import tiers
from loyalty.admin_readonly import ReadOnlyMixin
from loyalty.models import MemberTier, Tier, TierChange, TierWarning
from members.models import Member

RECENT_CHANGES = 10
# Fields that decide who is in which tier: changing one asks for a preview first.
QUALIFYING_FIELDS = ("threshold", "rank", "is_active")


class TierForm(forms.ModelForm):
    class Meta:
        model = Tier
        fields = [
            "name", "code", "rank", "is_active", "threshold", "guaranteed_months",
            "earn_multiplier", "exclusive_rewards", "birthday_points", "perks",
        ]  # fmt: skip

    def clean_guaranteed_months(self):
        months = self.cleaned_data["guaranteed_months"]
        if months < 1:
            raise forms.ValidationError(_("Guarantee a tier for at least one month."))
        return months

    def clean_earn_multiplier(self):
        multiplier = self.cleaned_data["earn_multiplier"]
        if multiplier < 0:
            raise forms.ValidationError(_("A multiplier cannot be negative."))
        return multiplier

    def clean(self):
        data = super().clean()
        rank, threshold = data.get("rank"), data.get("threshold")
        if rank is None or threshold is None or not data.get("is_active", True):
            return data
        if threshold < 0:
            self.add_error("threshold", _("A threshold cannot be negative."))
            return data
        others = Tier.objects.filter(is_active=True).exclude(pk=self.instance.pk)
        lower = others.filter(rank__lt=rank, threshold__gte=threshold).order_by("-rank").first()
        higher = others.filter(rank__gt=rank, threshold__lte=threshold).order_by("rank").first()
        clash = lower or higher
        if clash is not None:
            self.add_error(
                "threshold",
                _("Higher tiers need higher thresholds: %(tier)s (rank %(rank)s) needs %(t)s.")
                % {"tier": clash.name, "rank": clash.rank, "t": clash.threshold},
            )
        return data


@admin.register(Tier)
class TierAdmin(admin.ModelAdmin):
    form = TierForm
    list_display = [
        "name", "code", "rank", "threshold", "earn_multiplier", "guaranteed_months",
        "exclusive_rewards", "birthday_points", "is_active",
    ]  # fmt: skip
    list_editable = []
    prepopulated_fields = {"code": ["name"]}
    fieldsets = (
        (None, {"fields": ("name", "code", "rank", "is_active")}),
        (_("Who qualifies"), {"fields": ("threshold", "guaranteed_months")}),
        (
            _("Benefits"),
            {"fields": ("earn_multiplier", "exclusive_rewards", "birthday_points", "perks")},
        ),
    )
    change_form_template = "admin/loyalty/tier_change_form.html"

    def has_delete_permission(self, request, obj=None):
        # Members' histories point at tiers: retire one by unticking "active" instead.
        return False

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        if request.method == "POST" and self.has_change_permission(request):
            response = self._preview_first(request, object_id, form_url)
            if response is not None:
                return response
        return super().changeform_view(request, object_id, form_url, extra_context)

    def _preview_first(self, request, object_id, form_url):
        """Show the preview instead of saving when asked, or when a change to who qualifies
        has not been previewed with exactly these values yet. None: go on and save."""
        obj = self.get_object(request, unquote(object_id)) if object_id else None
        if object_id and obj is None:
            return None
        form = self.get_form(request, obj, change=obj is not None)(
            request.POST, request.FILES, instance=obj
        )
        if not form.is_valid():
            return None  # the normal view shows the errors
        token = "|".join(str(form.cleaned_data[f]) for f in QUALIFYING_FIELDS)
        asked = "_preview" in request.POST
        changed = obj is None or any(f in form.changed_data for f in QUALIFYING_FIELDS)
        if not asked and (not changed or request.POST.get("_previewed") == token):
            return None
        candidate = form.save(commit=False)
        table = tiers.TierTable.load().with_change(candidate)
        preview = tiers.tiers_review_preview(table=table)
        admin_form = helpers.AdminForm(
            form, list(self.get_fieldsets(request, obj)),
            self.get_prepopulated_fields(request, obj), self.get_readonly_fields(request, obj),
            model_admin=self,
        )  # fmt: skip
        context = {
            **self.admin_site.each_context(request),
            "title": _("Preview the change to %(tier)s") % {"tier": candidate.name},
            "subtitle": None,
            "adminform": admin_form,
            "object_id": object_id,
            "original": obj,
            "is_popup": False,
            "to_field": None,
            "media": self.media + admin_form.media,
            "inline_admin_formsets": [],
            "errors": helpers.AdminErrorList(form, []),
            "preserved_filters": self.get_preserved_filters(request),
            "tier_preview": preview,
            "tier_preview_token": token,
            "tier_preview_table": table.active,
        }
        return self.render_change_form(
            request, context, add=obj is None, change=obj is not None, obj=obj, form_url=form_url
        )


@admin.register(TierChange)
class TierChangeAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ["at", "member", "from_tier", "to_tier", "cause", "text"]
    list_filter = ["cause", "to_tier", "at"]
    search_fields = ["member__card_number", "member__user__email", "reason"]
    list_select_related = ["member__user", "from_tier", "to_tier"]
    date_hierarchy = "at"
    fields = ["member", "from_tier", "to_tier", "cause", "text", "reason", "staff", "at"]
    readonly_fields = fields

    @admin.display(description=_("why"))
    def text(self, obj):
        return tiers.tier_change_text(obj)


@admin.register(TierWarning)
class TierWarningAdmin(ReadOnlyMixin, admin.ModelAdmin):
    """Who was warned by e-mail that they may move down, for which review (read-only)."""

    list_display = ["sent_at", "member", "tier", "review_on", "needed"]
    list_filter = ["tier", "review_on"]
    list_select_related = ["member__user", "tier"]
    search_fields = ["member__card_number", "member__user__email"]
    date_hierarchy = "sent_at"
    fields = ["member", "tier", "review_on", "needed", "sent_at"]
    readonly_fields = fields


# On the member page -------------------------------------------------------------------


def member_tier_html(member: Member):
    """The member's tier, its guarantee and their recent tier changes (2 queries)."""
    if not member.pk:
        return "–"
    state = MemberTier.objects.select_related("tier").filter(member=member).first()
    if state is None:  # never moved: the entry tier, and no changes to list
        tier, changes = tiers.member_tier(member=member), []
    else:
        tier = state.tier or tiers.member_tier(member=member)
        changes = tiers.member_tier_changes(member=member)[:RECENT_CHANGES]
    rows = format_html_join(
        "",
        "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
        (
            (c.at.strftime("%Y-%m-%d %H:%M"), c.get_cause_display(), tiers.tier_change_text(c))
            for c in changes
        ),
    )
    guarantee = (
        state.guaranteed_until.strftime("%Y-%m-%d")
        if state is not None and state.guaranteed_until
        else "–"
    )
    return format_html(
        "<p><strong>{}</strong> · {} {} · {} {}</p>"
        "<table><thead><tr><th>{}</th><th>{}</th><th>{}</th></tr></thead><tbody>{}</tbody></table>",
        tier.name if tier else _("no tier"),
        _("since"),
        state.since.strftime("%Y-%m-%d") if state is not None else "–",
        _("guaranteed until"),
        guarantee,
        _("when"),
        _("cause"),
        _("why"),
        rows or format_html("<tr><td colspan=3>{}</td></tr>", _("No tier changes yet.")),
    )


class SetTierForm(forms.Form):
    tier = forms.ModelChoiceField(
        label=_("Tier"),
        queryset=Tier.objects.filter(is_active=True),
        required=False,
        empty_label=_("No tier"),
    )
    reason = forms.CharField(
        label=_("Reason"),
        max_length=255,
        widget=forms.TextInput(attrs={"size": 60}),
        help_text=_("Shown to the member with the change, and kept for audit."),
    )


def member_set_tier(request, member_id):
    """Staff put a member in a tier with a reason; the review takes over after the tier's
    guaranteed period."""
    if not request.user.has_perm("loyalty.set_tier"):
        raise PermissionDenied
    member = get_object_or_404(Member, pk=member_id)
    form = SetTierForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        change = tiers.member_tier_set(
            member=member,
            tier=form.cleaned_data["tier"],
            reason=form.cleaned_data["reason"],
            staff=request.user,
        )
        messages.success(request, tiers.tier_change_text(change))
        return redirect("admin:members_member_change", member.pk)
    context = {
        **admin.site.each_context(request),
        "title": _("Change the tier of %(member)s") % {"member": member},
        "member": member,
        "current": tiers.member_tier(member=member),
        "form": form,
        "opts": Member._meta,
    }
    return render(request, "admin/loyalty/set_tier.html", context)
