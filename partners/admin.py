from django import forms
from django.contrib import admin, messages
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from partners.models import ApiKey, Partner, Scope, Store, Terminal
from partners.services import api_key_create, api_key_revoke


class StoreInline(admin.TabularInline):
    model = Store
    extra = 0
    fields = ["code", "name", "is_online"]


@admin.register(Partner)
class PartnerAdmin(admin.ModelAdmin):
    list_display = ["name", "code", "kind"]
    list_filter = ["kind"]
    search_fields = ["name", "code"]
    inlines = [StoreInline]


class TerminalInline(admin.TabularInline):
    model = Terminal
    extra = 0
    fields = ["name", "kind"]


@admin.register(Store)
class StoreAdmin(admin.ModelAdmin):
    list_display = ["name", "code", "partner", "is_online"]
    list_select_related = ["partner"]
    search_fields = ["name", "code"]
    inlines = [TerminalInline]


@admin.register(Terminal)
class TerminalAdmin(admin.ModelAdmin):
    list_display = ["name", "store", "kind"]
    list_select_related = ["store"]
    search_fields = ["name", "store__name", "store__code"]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = [
        "prefix",
        "name",
        "terminal",
        "scope_list",
        "status",
        "last_used_at",
        "expires_at",
    ]
    list_select_related = ["terminal__store"]
    search_fields = ["prefix", "name", "terminal__name", "terminal__store__code"]
    readonly_fields = ["prefix", "last_used_at", "created_at", "created_by", "revoked_at"]
    autocomplete_fields = ["terminal"]
    actions = ["revoke"]

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["terminal", "name", "scopes", "expires_at"]
        return [
            "prefix",
            "terminal",
            "name",
            "scopes",
            "expires_at",
            "revoked_at",
            "last_used_at",
            "created_at",
            "created_by",
        ]

    def get_form(self, request, obj=None, **kwargs):
        form = super().get_form(request, obj, **kwargs)
        if "scopes" in form.base_fields:
            form.base_fields["scopes"] = forms.MultipleChoiceField(
                choices=Scope.choices, widget=forms.CheckboxSelectMultiple,
                initial=list(Scope.values),
                label=_("scopes"), required=True,
            )  # fmt: skip
        return form

    def save_model(self, request, obj, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        api_key, full_key = api_key_create(
            terminal=obj.terminal, name=obj.name, scopes=form.cleaned_data["scopes"],
            expires_at=obj.expires_at, created_by=request.user,
        )  # fmt: skip
        obj.pk = api_key.pk
        obj.prefix = api_key.prefix
        messages.warning(
            request,
            format_html(
                "{} <code data-testid='new-api-key'>{}</code>",
                _("Copy the new key now; it is shown only once:"),
                full_key,
            ),
        )

    @admin.display(description=_("scopes"))
    def scope_list(self, obj):
        return ", ".join(obj.scopes)

    @admin.display(description=_("status"))
    def status(self, obj):
        return (
            _("usable") if obj.is_usable() else (_("revoked") if obj.revoked_at else _("expired"))
        )

    @admin.action(description=_("Revoke the selected keys"))
    def revoke(self, request, queryset):
        for api_key in queryset:
            api_key_revoke(api_key=api_key)
        self.message_user(request, _("Revoked %(n)d key(s).") % {"n": queryset.count()})
