"""Back office for earning rules and campaigns: staff set up "double points on fragrance
this weekend for VIB and above" without code. Imported by loyalty/admin.py."""

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from types import SimpleNamespace

from django.contrib import admin, messages
from django.db.models import Count, Q, Sum
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext, pgettext, pgettext_lazy

from loyalty import explain
from loyalty.admin_readonly import ReadOnlyMixin
from loyalty.ledger import program_settings
from loyalty.models import EarningRule, RuleAward, RuleKind, RuleTarget
from loyalty.rules import services
from loyalty.rules.engine import (
    Basket,
    Context,
    Line,
    Ruleset,
    evaluate,
    evaluate_activity,
    plain,
)
from loyalty.rules.loader import spec_from_rule

SAMPLE_AMOUNT = Decimal("100.00")


class RunningFilter(admin.SimpleListFilter):
    title = pgettext_lazy("earning rule", "running")
    parameter_name = "running"

    def lookups(self, request, model_admin):
        return [
            ("now", _("Running now")),
            ("later", _("Starts later")),
            ("ended", _("Ended")),
            ("off", _("Switched off")),
        ]

    def queryset(self, request, queryset):
        now = timezone.now()
        started = Q(starts_at__isnull=True) | Q(starts_at__lte=now)
        not_ended = Q(ends_at__isnull=True) | Q(ends_at__gt=now)
        if self.value() == "now":
            return queryset.filter(started, not_ended, is_active=True)
        if self.value() == "later":
            return queryset.filter(starts_at__gt=now, is_active=True)
        if self.value() == "ended":
            return queryset.filter(ends_at__lte=now)
        if self.value() == "off":
            return queryset.filter(is_active=False)
        return queryset


def breakdown_html(items) -> str:
    """An earning breakdown as a small table: "2× on Fragrance weekend | +120"."""
    if not items:
        return "–"
    rows = format_html_join(
        "", "<tr><td>{}</td><td style='text-align:right'>{}</td></tr>",
        ((explain.breakdown_item_text(item), f"{item.get('points', 0):+d}") for item in items),
    )  # fmt: skip
    return format_html("<table><tbody>{}</tbody></table>", rows)


def _sample_basket(rule: EarningRule) -> list[Line]:
    """A basket that shows the rule at work: an item it covers beside one it does not."""
    values = rule.values
    covered_sku, covered_category = "SAMPLE-1", "sample"
    if rule.target == RuleTarget.CATEGORY and values:
        covered_category = values[0]
    elif rule.target == RuleTarget.SKU and values:
        covered_sku = values[0]
    amount = SAMPLE_AMOUNT
    if rule.kind == RuleKind.BASKET_BONUS and rule.threshold:
        amount = max(amount, rule.threshold)
    lines = [Line(covered_sku, covered_category, Decimal(1), amount)]
    if rule.target != RuleTarget.BASKET:
        lines.append(Line("OTHER-1", "other", Decimal(1), SAMPLE_AMOUNT))
    return lines


@admin.register(EarningRule)
class EarningRuleAdmin(admin.ModelAdmin):
    list_display = ["name", "code", "kind", "rewards", "starts_at", "ends_at", "status", "version"]
    list_filter = [RunningFilter, "kind", "target", "min_tier", "stores"]
    search_fields = ["name", "code", "target_values", "event_type"]
    list_select_related = ["min_tier"]
    autocomplete_fields = ["stores"]
    prepopulated_fields = {"code": ("name",)}
    readonly_fields = ["sample", "given", "version", "created_at", "updated_at"]
    actions = ["end_now"]
    fieldsets = (
        (
            None,
            {
                "fields": ("name", "code", "kind", "is_active"),
                "description": _(
                    "Example: double points on fragrance this weekend for VIB and above. "
                    "Kind: Points multiplier; applies to: Lines in these categories; "
                    "categories: fragrance; multiplier: 2; starts Saturday 00:00, ends Monday "
                    "00:00; for this tier and above: VIB. Members see “2× on <name>” with "
                    "the points it gave, on the receipt and in their history."
                ),
            },
        ),
        (
            _("What it rewards"),
            {
                "fields": (
                    "target",
                    "target_values",
                    "multiplier",
                    "threshold",
                    "points",
                    "event_type",
                ),
                "description": _(
                    "Fill in only what the kind needs. Multiplier: what it applies to and the "
                    "multiplier. Earns no points: what it applies to. Basket bonus: the amount "
                    "and the points (optionally only counting some categories or SKUs). "
                    "First purchase: the points. Activity: the activity and the points. "
                    "Points are earned on money paid, never on points used to pay."
                ),
            },
        ),
        (
            _("When, where and for whom"),
            {"fields": ("starts_at", "ends_at", "stores", "min_tier")},
        ),
        (
            _("Limits per member"),
            {
                "fields": ("cap_points", "cap_times", "cap_period", "cooldown_hours"),
                "description": _(
                    "Limits count what each member got from this rule. A return takes the "
                    "points back but does not give the allowance back."
                ),
            },
        ),
        (_("Preview and history"), {"fields": ("sample", "given", "version", "updated_at")}),
    )

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("min_tier")

    @admin.display(description=_("rewards"))
    def rewards(self, obj):
        if obj.kind == RuleKind.MULTIPLIER:
            return f"{plain(obj.multiplier)}× · {obj.target_values or obj.get_target_display()}"
        if obj.kind == RuleKind.EXCLUSION:
            return f"0 · {obj.target_values or obj.get_target_display()}"
        if obj.kind == RuleKind.BASKET_BONUS:
            return f"+{obj.points} ≥ {obj.threshold}"
        if obj.kind == RuleKind.ACTIVITY:
            return f"+{obj.points} · {obj.event_type}"
        return f"+{obj.points}"

    @admin.display(description=_("status"))
    def status(self, obj):
        now = timezone.now()
        if not obj.is_active:
            return _("switched off")
        if obj.ends_at and obj.ends_at <= now:
            return pgettext("earning rule", "ended")
        if obj.starts_at and obj.starts_at > now:
            return _("starts later")
        return pgettext("earning rule", "running")

    @admin.display(description=_("what it would give"))
    def sample(self, obj):
        """The engine's own answer for a sample basket or one activity, for checking a rule
        before it runs: the member's tier is taken to be the rule's minimum tier."""
        if obj is None or obj.pk is None:
            return _("Save the rule to see what it would give.")
        settings = program_settings()
        spec = replace(spec_from_rule(obj), is_active=True)
        at = obj.starts_at or (obj.ends_at - timedelta(seconds=1) if obj.ends_at else None)
        at = at or timezone.now()
        store_id = next(iter(spec.store_ids), None)
        tier = None
        if obj.min_tier_id:  # a member just at the minimum tier, without its own multiplier
            tier = SimpleNamespace(pk=None, name="", rank=obj.min_tier.rank, earn_multiplier=1)
        context = Context(tier=tier, first_purchase=True)
        ruleset = Ruleset((spec,))
        if obj.kind == RuleKind.ACTIVITY:
            earning = evaluate_activity(
                obj.event_type, at=at, store_id=store_id, context=context, ruleset=ruleset
            )
            intro = _("One “%(activity)s” activity:") % {"activity": obj.event_type}
        else:
            lines = _sample_basket(obj)
            basket = Basket(lines, sum(line.amount for line in lines), at, store_id)
            earning = evaluate(basket, context, ruleset, settings=settings)
            intro = ", ".join(
                f"{line.unit_price} {settings.currency} {line.category or line.sku}"
                for line in lines
            )
            intro = _("A basket of %(lines)s (no tier bonus):") % {"lines": intro}
        return format_html(
            "<p>{}</p>{}<p><strong>{}: {}</strong></p>",
            intro,
            breakdown_html(earning.breakdown),
            _("Total"),
            earning.points,
        )

    @admin.display(description=_("given so far"))
    def given(self, obj):
        if obj is None or obj.pk is None:
            return "–"
        totals = obj.awards.aggregate(
            points=Sum("points", default=0), members=Count("member", distinct=True)
        )
        return (
            ngettext(
                "%(points)s points to %(members)s member",
                "%(points)s points to %(members)s members",
                totals["members"],
            )
            % totals
        )

    def save_model(self, request, obj, form, change):
        services.earning_rule_save(rule=obj, changed=change and form.has_changed())

    @admin.action(description=_("End the selected rules now"))
    def end_now(self, request, queryset):
        for rule in queryset:
            services.earning_rule_end(rule=rule)
        self.message_user(
            request,
            ngettext("Ended %(n)d rule.", "Ended %(n)d rules.", len(queryset))
            % {"n": len(queryset)},
            messages.SUCCESS,
        )


@admin.register(RuleAward)
class RuleAwardAdmin(ReadOnlyMixin, admin.ModelAdmin):
    """What each rule gave whom: read-only, written with the credit."""

    list_display = ["created_at", "rule", "member", "points", "occurred_at", "purchase"]
    list_filter = ["rule"]
    search_fields = ["member__card_number", "rule__code", "rule__name"]
    list_select_related = ["rule", "member__user", "purchase"]
    date_hierarchy = "occurred_at"
    fields = [
        "rule", "member", "points", "occurred_at", "slot", "entry", "purchase", "event",
        "created_at",
    ]  # fmt: skip
    readonly_fields = fields
