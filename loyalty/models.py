import uuid
from decimal import Decimal

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from loyalty import currencies
from members.models import Member


class Rounding(models.TextChoices):
    DOWN = "down", _("Round down (12.9 → 12)")
    NEAREST = "nearest", _("Round to nearest, halves up (12.5 → 13)")
    UP = "up", _("Round up (12.1 → 13)")


class ProgramSettings(models.Model):
    """The one program this install runs. Always row 1; edited in the back office."""

    name = models.CharField(_("program name"), max_length=100, default="Tally Rewards")
    currency = models.CharField(
        _("currency"),
        max_length=3,
        choices=currencies.CHOICES,
        default="EUR",
        help_text=_("ISO 4217 code of the money that purchases are paid in."),
    )
    point_value = models.DecimalField(
        _("value of one point"),
        max_digits=12,
        decimal_places=6,
        default=Decimal("0.01"),
        validators=[MinValueValidator(Decimal("0.000001"))],
        help_text=_("What one point is worth in the program currency when redeemed."),
    )
    earn_rate = models.DecimalField(
        _("base earn rate"),
        max_digits=10,
        decimal_places=4,
        default=Decimal("1"),
        validators=[MinValueValidator(Decimal("0"))],
        help_text=_("Points earned per whole currency unit spent."),
    )
    rounding = models.CharField(
        _("rounding of earned points"),
        max_length=10,
        choices=Rounding.choices,
        default=Rounding.DOWN,
    )
    pending_days = models.PositiveSmallIntegerField(
        _("pending days"),
        default=0,
        validators=[MaxValueValidator(365)],
        help_text=_(
            "Days purchase points stay pending (the return window) before they can be spent."
        ),
    )
    points_lifetime_months = models.PositiveSmallIntegerField(
        _("points lifetime (months)"),
        null=True,
        blank=True,
        default=12,
        validators=[MinValueValidator(1), MaxValueValidator(120)],
        help_text=_("Months after earning that points expire. Leave empty: points never expire."),
    )
    expiry_notice_days = models.PositiveSmallIntegerField(
        _("expiry notice (days)"),
        default=30,
        validators=[MaxValueValidator(365)],
        help_text=_("How many days ahead members are told that points will expire."),
    )
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("program settings")
        verbose_name_plural = _("program settings")
        constraints = [
            models.CheckConstraint(condition=Q(id=1), name="program_settings_singleton"),
            models.CheckConstraint(
                condition=Q(point_value__gt=0), name="program_point_value_positive"
            ),
            models.CheckConstraint(
                condition=Q(earn_rate__gte=0), name="program_earn_rate_not_negative"
            ),
        ]

    def __str__(self) -> str:
        return self.name


class AccountKind(models.TextChoices):
    MEMBER = "member", _("Member points")
    MEMBER_PENDING = "member_pending", _("Member pending points")
    ISSUANCE = "issuance", _("Program issuance")
    REDEMPTION = "redemption", _("Redemptions")
    EXPIRY = "expiry", _("Expiry (breakage)")
    PARTNER = "partner", _("Partner")
    CHARITY = "charity", _("Charity")
    ADJUSTMENT = "adjustment", _("Staff adjustments")


MEMBER_KINDS = (AccountKind.MEMBER, AccountKind.MEMBER_PENDING)


class Account(models.Model):
    """A ledger account. Only member accounts keep a stored balance; system accounts
    are summed from postings, so no request ever contends on a program-wide row."""

    kind = models.CharField(_("kind"), max_length=20, choices=AccountKind.choices)
    member = models.ForeignKey(
        Member, on_delete=models.PROTECT, null=True, blank=True, related_name="accounts"
    )
    code = models.SlugField(_("code"), max_length=64, null=True, blank=True, unique=True)
    name = models.CharField(_("name"), max_length=150, blank=True)
    balance = models.BigIntegerField(_("balance"), default=0)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)

    class Meta:
        verbose_name = _("account")
        verbose_name_plural = _("accounts")
        constraints = [
            models.UniqueConstraint(
                fields=["member", "kind"],
                condition=Q(member__isnull=False),
                name="account_one_per_member_kind",
            ),
            models.CheckConstraint(
                condition=(Q(kind__in=MEMBER_KINDS, member__isnull=False, code__isnull=True))
                | (~Q(kind__in=MEMBER_KINDS) & Q(member__isnull=True, code__isnull=False)),
                name="account_member_xor_code",
            ),
            models.CheckConstraint(
                condition=Q(kind__in=MEMBER_KINDS) | Q(balance=0),
                name="account_system_keeps_no_balance",
            ),
            models.CheckConstraint(
                condition=~Q(kind=AccountKind.MEMBER_PENDING) | Q(balance__gte=0),
                name="account_pending_not_negative",
            ),
        ]

    def __str__(self) -> str:
        if self.member_id:
            return f"{self.get_kind_display()} · {self.member.card_number}"
        return self.name or self.code


class EntryKind(models.TextChoices):
    EARN = "earn", _("Earned")
    REDEEM = "redeem", _("Redeemed")
    TRANSFER = "transfer", _("Transferred")
    REVERSAL = "reversal", _("Reversed")
    ADJUSTMENT = "adjustment", _("Adjusted by staff")
    RETURN = "return", _("Returned")
    EXPIRY = "expiry", _("Expired")
    MATURATION = "maturation", _("Now available")


class Source(models.TextChoices):
    MEMBER = "member", _("Member")
    STAFF = "staff", _("Staff")
    API = "api", _("API client")
    SYSTEM = "system", _("System job")


class JournalEntry(models.Model):
    """One movement of points: postings that sum to zero. Append-only: a mistake is
    fixed with a reversing entry that points at the original."""

    public_id = models.UUIDField(_("public id"), default=uuid.uuid4, unique=True, editable=False)
    kind = models.CharField(_("kind"), max_length=20, choices=EntryKind.choices)
    member = models.ForeignKey(
        Member,
        on_delete=models.PROTECT,
        related_name="entries",
        null=True,
        blank=True,
        help_text=_("The member this movement concerns."),
    )
    description = models.CharField(_("description"), max_length=255, blank=True)
    reason = models.TextField(_("reason"), blank=True)
    details = models.JSONField(_("details"), default=dict, blank=True)
    source = models.CharField(_("caused by"), max_length=10, choices=Source.choices)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("staff user"),
    )
    client = models.CharField(_("API client"), max_length=100, blank=True)
    reversal_of = models.OneToOneField(
        "self",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="reversed_by",
        verbose_name=_("reverses"),
    )
    effective_at = models.DateTimeField(_("happened at"), default=timezone.now)
    created_at = models.DateTimeField(_("recorded at"), default=timezone.now, editable=False)

    class Meta:
        verbose_name = _("ledger entry")
        verbose_name_plural = _("ledger entries")
        ordering = ["-created_at", "-id"]
        permissions = [("adjust_points", _("Can adjust a member's points with a reason"))]
        indexes = [
            models.Index(fields=["member", "-created_at", "-id"], name="entry_member_recent")
        ]
        constraints = [
            models.CheckConstraint(
                condition=~Q(kind=EntryKind.ADJUSTMENT) | ~Q(reason=""),
                name="entry_adjustment_has_reason",
            ),
            models.CheckConstraint(
                condition=Q(kind=EntryKind.REVERSAL, reversal_of__isnull=False)
                | (~Q(kind=EntryKind.REVERSAL) & Q(reversal_of__isnull=True)),
                name="entry_reversal_points_at_original",
            ),
            models.CheckConstraint(
                condition=~Q(source=Source.STAFF) | Q(created_by__isnull=False),
                name="entry_staff_is_recorded",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} · {self.description}"


class Posting(models.Model):
    entry = models.ForeignKey(JournalEntry, on_delete=models.PROTECT, related_name="postings")
    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="postings")
    amount = models.BigIntegerField(_("points"))
    balance_after = models.BigIntegerField(_("balance after"), null=True, blank=True)

    class Meta:
        verbose_name = _("posting")
        verbose_name_plural = _("postings")
        indexes = [models.Index(fields=["account", "id"], name="posting_account")]
        constraints = [
            models.CheckConstraint(condition=~Q(amount=0), name="posting_amount_not_zero"),
        ]

    def __str__(self) -> str:
        return f"{self.amount:+d} {self.account}"


class Lot(models.Model):
    """Points from one credit, with their own expiry. Debits take from the lots that
    expire first, so a member never loses points that could have been spent."""

    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="lots")
    entry = models.ForeignKey(JournalEntry, on_delete=models.PROTECT, related_name="lots")
    points = models.BigIntegerField(_("points earned"))
    remaining = models.BigIntegerField(_("points left"))
    earned_at = models.DateTimeField(_("earned at"))
    expires_at = models.DateTimeField(_("expires at"), null=True, blank=True)
    pending = models.BooleanField(_("pending"), default=False)
    matures_at = models.DateTimeField(_("available from"), null=True, blank=True)

    class Meta:
        verbose_name = _("point lot")
        verbose_name_plural = _("point lots")
        indexes = [
            models.Index(fields=["account", "pending", "expires_at"], name="lot_account_expiry"),
            models.Index(
                fields=["expires_at"],
                condition=Q(remaining__gt=0, pending=False),
                name="lot_due_for_expiry",
            ),
            models.Index(
                fields=["matures_at"], condition=Q(pending=True), name="lot_due_to_mature"
            ),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(points__gt=0), name="lot_points_positive"),
            models.CheckConstraint(
                condition=Q(remaining__gte=0, remaining__lte=models.F("points")),
                name="lot_remaining_within_points",
            ),
            models.CheckConstraint(
                condition=~Q(pending=True) | Q(matures_at__isnull=False),
                name="lot_pending_has_maturity",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.remaining}/{self.points} until {self.expires_at or '∞'}"


class LotMovement(models.Model):
    """Which lots an entry took points from (negative) or gave points back to (positive)."""

    entry = models.ForeignKey(JournalEntry, on_delete=models.PROTECT, related_name="lot_movements")
    lot = models.ForeignKey(Lot, on_delete=models.PROTECT, related_name="movements")
    points = models.BigIntegerField(_("points"))
    refund_of = models.ForeignKey(
        "self", on_delete=models.PROTECT, null=True, blank=True, related_name="refunds",
        help_text=_("The debit movement this gives points back for."),
    )  # fmt: skip

    class Meta:
        verbose_name = _("lot movement")
        verbose_name_plural = _("lot movements")
        constraints = [
            models.CheckConstraint(condition=~Q(points=0), name="lot_movement_not_zero"),
        ]

    def __str__(self) -> str:
        return f"{self.points:+d} on lot {self.lot_id}"


class Purchase(models.Model):
    """A sale recorded by a till or web shop. A receipt is credited once per store, ever."""

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    store = models.ForeignKey("partners.Store", on_delete=models.PROTECT, related_name="purchases")
    receipt_id = models.CharField(_("receipt"), max_length=100)
    member = models.ForeignKey(Member, on_delete=models.PROTECT, related_name="purchases")
    occurred_at = models.DateTimeField(_("happened at"))
    currency = models.CharField(max_length=3)
    total = models.DecimalField(max_digits=14, decimal_places=2)
    points_earned = models.BigIntegerField(default=0)
    points_redeemed = models.BigIntegerField(default=0)
    breakdown = models.JSONField(default=list)
    earn_entry = models.OneToOneField(
        JournalEntry, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    redeem_entry = models.OneToOneField(
        JournalEntry, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("purchase")
        verbose_name_plural = _("purchases")
        constraints = [
            models.UniqueConstraint(
                fields=["store", "receipt_id"], name="purchase_receipt_once_per_store"
            ),
            models.CheckConstraint(condition=Q(total__gt=0), name="purchase_total_positive"),
            models.CheckConstraint(
                condition=Q(points_earned__gte=0, points_redeemed__gte=0),
                name="purchase_points_not_negative",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.receipt_id} ({self.total} {self.currency})"


class PurchaseLine(models.Model):
    purchase = models.ForeignKey(Purchase, on_delete=models.PROTECT, related_name="lines")
    position = models.PositiveSmallIntegerField()
    sku = models.CharField(max_length=64)
    category = models.CharField(max_length=64, blank=True)
    quantity = models.DecimalField(max_digits=12, decimal_places=3)
    unit_price = models.DecimalField(max_digits=14, decimal_places=2)
    points = models.BigIntegerField(default=0)

    class Meta:
        ordering = ["position"]
        constraints = [
            models.UniqueConstraint(
                fields=["purchase", "position"], name="purchase_line_position_unique"
            ),
            models.CheckConstraint(
                condition=Q(quantity__gt=0), name="purchase_line_quantity_positive"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.quantity} × {self.sku}"


class PurchaseReturn(models.Model):
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    store = models.ForeignKey("partners.Store", on_delete=models.PROTECT, related_name="+")
    return_id = models.CharField(_("return receipt"), max_length=100)
    purchase = models.ForeignKey(Purchase, on_delete=models.PROTECT, related_name="returns")
    points_reversed = models.BigIntegerField(default=0)
    points_restored = models.BigIntegerField(default=0)
    entry = models.OneToOneField(
        JournalEntry, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("return")
        verbose_name_plural = _("returns")
        constraints = [
            models.UniqueConstraint(
                fields=["store", "return_id"], name="return_receipt_once_per_store"
            ),
        ]

    def __str__(self) -> str:
        return self.return_id


class PurchaseReturnLine(models.Model):
    purchase_return = models.ForeignKey(
        PurchaseReturn, on_delete=models.PROTECT, related_name="lines"
    )
    line = models.ForeignKey(PurchaseLine, on_delete=models.PROTECT, related_name="returned")
    quantity = models.DecimalField(max_digits=12, decimal_places=3)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(quantity__gt=0), name="return_line_quantity_positive"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.quantity} of line {self.line_id}"


class Redemption(models.Model):
    """Points paid at a till outside a purchase (e.g. a points voucher), voidable."""

    class Status(models.TextChoices):
        COMPLETED = "completed", _("completed")
        VOIDED = "voided", _("voided")

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    store = models.ForeignKey(
        "partners.Store", on_delete=models.PROTECT, related_name="redemptions"
    )
    member = models.ForeignKey(Member, on_delete=models.PROTECT, related_name="redemptions")
    points = models.BigIntegerField()
    reference = models.CharField(max_length=100, blank=True)
    entry = models.OneToOneField(JournalEntry, on_delete=models.PROTECT, related_name="+")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.COMPLETED)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(points__gt=0), name="redemption_points_positive")
        ]

    def __str__(self) -> str:
        return f"{self.points} points ({self.status})"


class ActivityEvent(models.Model):
    """Something a member did that may earn points once earning rules exist."""

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    store = models.ForeignKey("partners.Store", on_delete=models.PROTECT, related_name="+")
    member = models.ForeignKey(Member, on_delete=models.PROTECT, related_name="events")
    type = models.CharField(max_length=50)
    occurred_at = models.DateTimeField()
    properties = models.JSONField(default=dict, blank=True)
    points_earned = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["member", "type", "occurred_at"], name="event_member_type")]

    def __str__(self) -> str:
        return f"{self.type} by {self.member_id}"
