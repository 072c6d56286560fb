from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class Partner(models.Model):
    """An organisation in the program: the retailer itself, a partner business or a charity."""

    class Kind(models.TextChoices):
        RETAILER = "retailer", _("Retailer (this program's owner)")
        PARTNER = "partner", _("Partner business")
        CHARITY = "charity", _("Charity")

    code = models.SlugField(_("code"), max_length=50, unique=True)
    name = models.CharField(_("name"), max_length=150)
    kind = models.CharField(_("kind"), max_length=10, choices=Kind.choices, default=Kind.RETAILER)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)

    class Meta:
        verbose_name = _("partner")
        verbose_name_plural = _("partners")
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Store(models.Model):
    partner = models.ForeignKey(Partner, on_delete=models.PROTECT, related_name="stores")
    code = models.SlugField(_("code"), max_length=50, unique=True)
    name = models.CharField(_("name"), max_length=150)
    is_online = models.BooleanField(_("online store"), default=False)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)

    class Meta:
        verbose_name = _("store")
        verbose_name_plural = _("stores")
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Terminal(models.Model):
    """A till, or an online-store client: what an API key is issued to."""

    class Kind(models.TextChoices):
        POS = "pos", _("POS terminal")
        ONLINE = "online", _("Online-store client")

    # No index of its own: terminal_name_unique_in_store starts with it.
    store = models.ForeignKey(
        Store, on_delete=models.PROTECT, related_name="terminals", db_index=False
    )
    name = models.CharField(_("name"), max_length=100)
    kind = models.CharField(_("kind"), max_length=10, choices=Kind.choices, default=Kind.POS)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)

    class Meta:
        verbose_name = _("terminal")
        verbose_name_plural = _("terminals")
        constraints = [
            models.UniqueConstraint(fields=["store", "name"], name="terminal_name_unique_in_store")
        ]

    def __str__(self) -> str:
        return f"{self.store} · {self.name}"


class Scope(models.TextChoices):
    MEMBERS_READ = "members:read", _("Look members up")
    MEMBERS_WRITE = "members:write", _("Enrol members")
    PURCHASES_WRITE = "purchases:write", _("Record purchases and returns")
    REDEMPTIONS_WRITE = "redemptions:write", _("Pay with points")
    VOUCHERS_READ = "vouchers:read", _("Check vouchers")
    VOUCHERS_WRITE = "vouchers:write", _("Redeem vouchers")
    EVENTS_WRITE = "events:write", _("Send activity events")


class ApiKey(models.Model):
    """A terminal's credential. Only a SHA-256 hash of the secret is kept; the short
    prefix names the key in logs and the back office."""

    terminal = models.ForeignKey(Terminal, on_delete=models.PROTECT, related_name="api_keys")
    name = models.CharField(_("name"), max_length=100)
    prefix = models.CharField(_("prefix"), max_length=12, unique=True, editable=False)
    hashed_secret = models.CharField(max_length=64, editable=False)
    scopes = models.JSONField(_("scopes"), default=list)
    expires_at = models.DateTimeField(_("expires at"), null=True, blank=True)
    revoked_at = models.DateTimeField(_("revoked at"), null=True, blank=True)
    last_used_at = models.DateTimeField(_("last used"), null=True, blank=True, editable=False)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )

    class Meta:
        verbose_name = _("API key")
        verbose_name_plural = _("API keys")

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.name})"

    def is_usable(self, now=None) -> bool:
        now = now or timezone.now()
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)


class VerbatimTextField(models.TextField):
    """Text sent as a plain parameter even in bulk inserts. Django's PostgreSQL bulk insert
    otherwise sends each column as one array, which psycopg quotes in Python, character by
    character: for long texts (stored answers, 500 to a batch) that took twice as long."""

    def get_placeholder(self, value, compiler, connection):
        return "%s"


KEY_ONCE = "idempotency_key_unique_per_store"  # the constraint that keeps a key's first answer


class IdempotencyRecord(models.Model):
    """The first response to a state-changing request, written in the same transaction
    as what the request changed, and replayed for a retry with the same key and body."""

    # No index of its own: the KEY_ONCE constraint starts with it.
    store = models.ForeignKey(Store, on_delete=models.CASCADE, related_name="+", db_index=False)
    key = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=64)
    status = models.PositiveSmallIntegerField()
    # Text, not jsonb: a replay must return the very bytes of the first answer, and
    # PostgreSQL's jsonb would reorder its keys.
    body = VerbatimTextField()
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["store", "key"], name=KEY_ONCE),
            models.CheckConstraint(
                condition=Q(status__lt=500), name="idempotency_never_stores_5xx"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.store_id}:{self.key} → {self.status}"
