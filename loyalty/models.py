import uuid
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
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


class TierBasis(models.TextChoices):
    SPEND = "spend", _("Spend in the program currency")
    POINTS = "points", _("Qualifying points earned from purchases")


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
    tier_basis = models.CharField(
        _("tier qualification"),
        max_length=10,
        choices=TierBasis.choices,
        default=TierBasis.SPEND,
        help_text=_("What members are measured on to reach a tier."),
    )
    tier_window_months = models.PositiveSmallIntegerField(
        _("tier window (months)"),
        default=12,
        validators=[MinValueValidator(1), MaxValueValidator(60)],
        help_text=_("Qualification counts what happened in this many months up to today."),
    )
    tier_notice_days = models.PositiveSmallIntegerField(
        _("tier warning (days)"),
        default=30,
        validators=[MaxValueValidator(365)],
        help_text=_("How many days before a review members are warned that they may lose a tier."),
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
        db_index=False,  # no index of its own: entry_member_recent starts with it
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
        db_index=False,  # entry_staff_user instead: only the few entries staff made
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
            models.Index(fields=["member", "-created_at", "-id"], name="entry_member_recent"),
            models.Index(
                fields=["created_by"],
                condition=Q(created_by__isnull=False),
                name="entry_staff_user",
            ),
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
    # No index of its own on account: posting_account starts with it.
    account = models.ForeignKey(
        Account, on_delete=models.PROTECT, related_name="postings", db_index=False
    )
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

    # No index of its own on account: lot_account_expiry starts with it.
    account = models.ForeignKey(
        Account, on_delete=models.PROTECT, related_name="lots", db_index=False
    )
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
    # No index of their own on store and member: the receipt constraint and
    # purchase_member_time start with them.
    store = models.ForeignKey(
        "partners.Store", on_delete=models.PROTECT, related_name="purchases", db_index=False
    )
    receipt_id = models.CharField(_("receipt"), max_length=100)
    member = models.ForeignKey(
        Member, on_delete=models.PROTECT, related_name="purchases", db_index=False
    )
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
        # Tier qualification reads a member's purchases in a time window, at every
        # purchase (upgrade check) and for ranges of members (review, admin preview).
        indexes = [models.Index(fields=["member", "occurred_at"], name="purchase_member_time")]

    def __str__(self) -> str:
        return f"{self.receipt_id} ({self.total} {self.currency})"


class PurchaseLine(models.Model):
    # No index of its own: purchase_line_position_unique starts with it.
    purchase = models.ForeignKey(
        Purchase, on_delete=models.PROTECT, related_name="lines", db_index=False
    )
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
    # No index of its own: return_receipt_once_per_store starts with it.
    store = models.ForeignKey(
        "partners.Store", on_delete=models.PROTECT, related_name="+", db_index=False
    )
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
    # No index of its own: event_member_type starts with it.
    member = models.ForeignKey(
        Member, on_delete=models.PROTECT, related_name="events", db_index=False
    )
    type = models.CharField(max_length=50)
    occurred_at = models.DateTimeField()
    properties = models.JSONField(default=dict, blank=True)
    points_earned = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["member", "type", "occurred_at"], name="event_member_type")]

    def __str__(self) -> str:
        return f"{self.type} by {self.member_id}"


# Tiers


class Tier(models.Model):
    """A status level members reach by qualifying spend or points in a rolling window."""

    code = models.SlugField(_("code"), max_length=30, unique=True)
    name = models.CharField(_("name"), max_length=60)
    rank = models.PositiveSmallIntegerField(
        _("rank"), unique=True, help_text=_("0 is the entry tier; higher is better.")
    )
    threshold = models.DecimalField(
        _("threshold"),
        max_digits=14,
        decimal_places=2,
        default=0,
        help_text=_(
            "Spend (program currency) or qualifying points in the rolling window needed to "
            "reach this tier, as the program settings say."
        ),
    )
    earn_multiplier = models.DecimalField(
        _("earn multiplier"), max_digits=4, decimal_places=2, default=1
    )
    exclusive_rewards = models.BooleanField(_("exclusive rewards"), default=False)
    birthday_points = models.PositiveIntegerField(_("birthday points"), default=0)
    perks = models.TextField(
        _("perks"), blank=True, help_text=_("Benefits shown to members, one per line.")
    )
    guaranteed_months = models.PositiveSmallIntegerField(
        _("guaranteed months"),
        default=12,
        help_text=_("A member keeps the tier at least this long after reaching it."),
    )
    is_active = models.BooleanField(_("active"), default=True)

    class Meta:
        ordering = ["rank"]
        verbose_name = _("tier")
        verbose_name_plural = _("tiers")

    def __str__(self) -> str:
        return self.name

    @property
    def perk_lines(self) -> list[str]:
        return [line.strip() for line in self.perks.splitlines() if line.strip()]


class MemberTier(models.Model):
    """A member's tier now. No row, or no tier, means the entry tier (the active tier with
    threshold 0) when there is one: nobody is ever written into it just for joining."""

    member = models.OneToOneField(
        Member, on_delete=models.CASCADE, primary_key=True, related_name="tier_state"
    )
    tier = models.ForeignKey(
        Tier, on_delete=models.PROTECT, null=True, blank=True, related_name="+",
        verbose_name=_("tier"),
    )  # fmt: skip
    since = models.DateTimeField(_("since"))
    guaranteed_until = models.DateTimeField(
        _("guaranteed until"),
        null=True,
        blank=True,
        help_text=_("The review looks at the member again only after this moment."),
    )

    class Meta:
        verbose_name = _("member tier")
        verbose_name_plural = _("member tiers")

    def __str__(self) -> str:
        return f"{self.member_id}: {self.tier_id}"


class TierChange(models.Model):
    """A move between tiers, kept forever and shown to the member in words (loyalty.tiers)."""

    class Cause(models.TextChoices):
        PURCHASE = "purchase", _("purchase")
        REVIEW = "review", _("periodic review")
        STAFF = "staff", _("staff")
        PLAN = "plan", _("paid plan")

    # No index of its own: tier_change_member_recent starts with it.
    member = models.ForeignKey(
        Member, on_delete=models.CASCADE, related_name="tier_changes", db_index=False
    )
    from_tier = models.ForeignKey(
        Tier, on_delete=models.PROTECT, null=True, blank=True, related_name="+",
        verbose_name=_("from tier"),
    )  # fmt: skip
    to_tier = models.ForeignKey(
        Tier, on_delete=models.PROTECT, null=True, blank=True, related_name="+",
        verbose_name=_("to tier"),
    )  # fmt: skip
    cause = models.CharField(_("cause"), max_length=10, choices=Cause.choices)
    reason = models.TextField(_("reason"), blank=True, help_text=_("Staff's words, if any."))
    # What was measured (qualification, threshold, basis, window, currency), so the words
    # can be written later in the reader's language.
    details = models.JSONField(_("details"), default=dict, blank=True)
    staff = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True,
        related_name="+", verbose_name=_("staff user"),
    )  # fmt: skip
    at = models.DateTimeField(_("at"), default=timezone.now)

    class Meta:
        verbose_name = _("tier change")
        verbose_name_plural = _("tier changes")
        ordering = ["-at", "-id"]
        permissions = [("set_tier", _("Can put a member in a tier with a reason"))]
        indexes = [models.Index(fields=["member", "-at", "-id"], name="tier_change_member_recent")]
        constraints = [
            models.CheckConstraint(
                condition=~Q(cause="staff") | ~Q(reason=""), name="tier_change_staff_has_reason"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.member_id}: {self.from_tier_id} → {self.to_tier_id}"


class TierWarning(models.Model):
    """A member was warned by e-mail that they may move down at the review on a day: at
    most one warning per member and review day."""

    # No index of its own: tier_warning_once_per_review starts with it.
    member = models.ForeignKey(
        Member, on_delete=models.CASCADE, related_name="tier_warnings", db_index=False
    )
    review_on = models.DateField(_("review on"))
    tier = models.ForeignKey(Tier, on_delete=models.PROTECT, related_name="+")
    needed = models.DecimalField(_("needed to keep it"), max_digits=14, decimal_places=2)
    sent_at = models.DateTimeField(_("sent at"), default=timezone.now)

    class Meta:
        verbose_name = _("tier warning")
        verbose_name_plural = _("tier warnings")
        constraints = [
            models.UniqueConstraint(
                fields=["member", "review_on"], name="tier_warning_once_per_review"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.member_id}: {self.tier_id} on {self.review_on}"


# Jobs


class JobRun(models.Model):
    """One run of a periodic job (loyalty/jobs.py): who asked, how far it got, what it did."""

    class Status(models.TextChoices):
        QUEUED = "queued", _("queued")
        RUNNING = "running", _("running")
        SUCCEEDED = "succeeded", _("succeeded")
        FAILED = "failed", _("failed")

    class Trigger(models.TextChoices):
        SCHEDULE = "schedule", _("schedule")
        STAFF = "staff", _("staff (run now)")
        COMMAND = "command", _("command line")

    job = models.CharField(_("job"), max_length=50)
    status = models.CharField(
        _("status"), max_length=10, choices=Status.choices, default=Status.QUEUED
    )
    trigger = models.CharField(
        _("started by"), max_length=10, choices=Trigger.choices, default=Trigger.SCHEDULE
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("staff user"),
    )
    as_of = models.DateTimeField(
        _("as of"), null=True, blank=True, help_text=_("The time the job treated as now.")
    )
    created_at = models.DateTimeField(_("queued at"), default=timezone.now)
    started_at = models.DateTimeField(_("started"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished"), null=True, blank=True)
    processed = models.BigIntegerField(_("processed"), default=0)
    total = models.BigIntegerField(_("total"), default=0)
    counts = models.JSONField(_("counts"), default=dict, blank=True)
    error = models.TextField(_("error"), blank=True)

    class Meta:
        verbose_name = _("job run")
        verbose_name_plural = _("job runs")
        ordering = ["-created_at", "-id"]
        permissions = [("run_job", _("Can run a periodic job now"))]
        indexes = [models.Index(fields=["job", "-created_at"], name="jobrun_job_recent")]

    def __str__(self) -> str:
        return f"{self.job} · {self.get_status_display()}"

    @property
    def percent(self) -> int:
        if self.status == self.Status.SUCCEEDED:
            return 100
        return min(100, self.processed * 100 // self.total) if self.total else 0


class ExpiryNotice(models.Model):
    """A member was told that points expire on a day: at most one notice per member and day."""

    # No index of its own: expiry_notice_once_per_day starts with it.
    member = models.ForeignKey(
        Member, on_delete=models.CASCADE, related_name="expiry_notices", db_index=False
    )
    expires_on = models.DateField(_("expires on"))
    points = models.BigIntegerField(_("points"))
    sent_at = models.DateTimeField(_("sent at"), default=timezone.now)

    class Meta:
        verbose_name = _("expiry notice")
        verbose_name_plural = _("expiry notices")
        constraints = [
            models.UniqueConstraint(
                fields=["member", "expires_on"], name="expiry_notice_once_per_day"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.points} points on {self.expires_on}"


# Earning rules


class RuleKind(models.TextChoices):
    MULTIPLIER = "multiplier", _("Points multiplier (e.g. 2× on a category)")
    EXCLUSION = "exclusion", _("Earns no points (e.g. gift cards)")
    BASKET_BONUS = "basket_bonus", _("Bonus points when the basket reaches an amount")
    FIRST_PURCHASE = "first_purchase", _("Bonus points on a member's first purchase")
    ACTIVITY = "activity", _("Points for an activity (sign-up, review, check-in…)")


class RuleTarget(models.TextChoices):
    BASKET = "basket", _("The whole basket")
    CATEGORY = "category", _("Lines in these categories")
    SKU = "sku", _("Lines with these SKUs")


class CapPeriod(models.TextChoices):
    EVER = "ever", _("for as long as the rule runs")
    DAY = "day", _("per calendar day")
    WEEK = "week", _("per calendar week (Monday to Sunday)")
    MONTH = "month", _("per calendar month")
    YEAR = "year", _("per calendar year")


class EarningRule(models.Model):
    """A way to earn points, set up by staff: a standing rate rule, a bonus campaign or
    points for an activity. The engine (loyalty/rules/engine.py) applies it; `version`
    goes up on every change, and what a purchase earned keeps the wording it had then."""

    code = models.SlugField(
        _("code"),
        max_length=50,
        unique=True,
        help_text=_(
            "A short, stable name for reports and the till's breakdown, e.g. fragrance-weekend."
        ),
    )
    name = models.CharField(
        _("name members see"),
        max_length=100,
        help_text=_(
            "Shown on receipts and in the member's history, e.g. “Fragrance weekend” "
            "(read as “2× on Fragrance weekend: +120”)."
        ),
    )
    kind = models.CharField(
        _("kind of rule"), max_length=20, choices=RuleKind.choices, default=RuleKind.MULTIPLIER
    )
    is_active = models.BooleanField(
        _("switched on"),
        default=True,
        help_text=_("Untick to stop the rule at once. Points already given stay."),
    )
    target = models.CharField(
        _("applies to"),
        max_length=10,
        choices=RuleTarget.choices,
        default=RuleTarget.BASKET,
        help_text=_("For multipliers, exclusions and basket bonuses: which lines count."),
    )
    target_values = models.CharField(
        _("categories or SKUs"),
        max_length=500,
        blank=True,
        help_text=_(
            "As your tills send them, separated by commas, e.g. “fragrance, perfume”. "
            "Capital letters, spaces, - and _ do not matter. Leave empty for the whole basket."
        ),
    )
    multiplier = models.DecimalField(
        _("multiplier"),
        max_digits=6,
        decimal_places=2,
        null=True,
        blank=True,
        help_text=_(
            "For multipliers: 2 gives double points on the lines it covers. The extra points "
            "are added on top of the base points, and multipliers add up rather than "
            "multiply: 2× on a category and 3× on a SKU in it give that item 4×."
        ),
    )
    points = models.PositiveIntegerField(
        _("points"),
        null=True,
        blank=True,
        help_text=_("For basket bonuses, first-purchase bonuses and activities: points given."),
    )
    threshold = models.DecimalField(
        _("basket amount"),
        max_digits=14,
        decimal_places=2,
        null=True,
        blank=True,
        help_text=_(
            "For basket bonuses: the bonus is given when the member pays at least this much "
            "in money (points used to pay and items that earn no points do not count)."
        ),
    )
    event_type = models.SlugField(
        _("activity"),
        max_length=50,
        blank=True,
        help_text=_(
            "For activities, as your apps send it: sign_up, profile_completed, birthday, "
            "product_review, referral, app_download, check_in, or your own word."
        ),
    )
    starts_at = models.DateTimeField(
        _("starts"), null=True, blank=True, help_text=_("Leave empty to start at once.")
    )
    ends_at = models.DateTimeField(
        _("ends"),
        null=True,
        blank=True,
        help_text=_(
            "The first moment it no longer applies, e.g. Monday 00:00 for a weekend. "
            "Leave empty to run until switched off."
        ),
    )
    stores = models.ManyToManyField(
        "partners.Store",
        blank=True,
        related_name="+",
        verbose_name=_("only in these stores"),
        help_text=_("Leave empty for every store and the web shop."),
    )
    min_tier = models.ForeignKey(
        Tier,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("for this tier and above"),
        help_text=_("E.g. VIB: VIB members and every tier above. Leave empty for everyone."),
    )
    cap_points = models.PositiveIntegerField(
        _("at most this many points"),
        null=True,
        blank=True,
        help_text=_("Per member, in the period below. Leave empty for no limit."),
    )
    cap_times = models.PositiveIntegerField(
        _("at most this many times"),
        null=True,
        blank=True,
        help_text=_("Per member, in the period below, e.g. 1 for a once-only welcome bonus."),
    )
    cap_period = models.CharField(
        _("limit period"),
        max_length=10,
        choices=CapPeriod.choices,
        default=CapPeriod.EVER,
        help_text=_("Periods are calendar days, weeks, months or years in the program's time."),
    )
    cooldown_hours = models.PositiveIntegerField(
        _("cool-down (hours)"),
        null=True,
        blank=True,
        help_text=_(
            "For activities: the least time between two awards to one member, e.g. 24 for "
            "a daily check-in. Stops members from farming points."
        ),
    )
    version = models.PositiveIntegerField(_("version"), default=1, editable=False)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    updated_at = models.DateTimeField(_("last changed"), auto_now=True)

    class Meta:
        verbose_name = _("earning rule or campaign")
        verbose_name_plural = _("earning rules and campaigns")
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(multiplier__isnull=True) | Q(multiplier__gt=1),
                name="earning_rule_multiplier_above_one",
            ),
            models.CheckConstraint(
                condition=Q(threshold__isnull=True) | Q(threshold__gt=0),
                name="earning_rule_threshold_positive",
            ),
            models.CheckConstraint(
                condition=Q(starts_at__isnull=True)
                | Q(ends_at__isnull=True)
                | Q(ends_at__gt=models.F("starts_at")),
                name="earning_rule_ends_after_start",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def values(self) -> list[str]:
        return [v.strip() for v in self.target_values.split(",") if v.strip()]

    def clean(self):
        """Refuse rules that make no sense, each error next to the field to fix."""
        errors: dict[str, str] = {}
        kind = self.kind
        uses_multiplier = kind == RuleKind.MULTIPLIER
        uses_points = kind in (RuleKind.BASKET_BONUS, RuleKind.FIRST_PURCHASE, RuleKind.ACTIVITY)
        uses_target = kind in (RuleKind.MULTIPLIER, RuleKind.EXCLUSION, RuleKind.BASKET_BONUS)
        if self.starts_at and self.ends_at and self.ends_at <= self.starts_at:
            errors["ends_at"] = _("The end must come after the start.")
        if uses_multiplier:
            if self.multiplier is None:
                errors["multiplier"] = _("Give the multiplier, e.g. 2 for double points.")
            elif self.multiplier < 0:
                errors["multiplier"] = _("A multiplier cannot be negative.")
            elif self.multiplier <= 1:
                errors["multiplier"] = _(
                    "A multiplier must be more than 1 (2 = double points). To give no points "
                    "on something, use the kind “Earns no points”."
                )
        elif self.multiplier is not None:
            errors["multiplier"] = _("Only multipliers use this; leave it empty.")
        if uses_points and not self.points:
            errors["points"] = _("Give the points this rule awards (more than 0).")
        elif not uses_points and self.points is not None:
            errors["points"] = _("This kind of rule does not give fixed points; leave it empty.")
        if kind == RuleKind.BASKET_BONUS:
            if self.threshold is None:
                errors["threshold"] = _("Give the amount a basket must reach for the bonus.")
            elif self.threshold <= 0:
                errors["threshold"] = _("The amount must be more than 0.")
        elif self.threshold is not None:
            errors["threshold"] = _("Only basket bonuses use an amount; leave it empty.")
        if uses_target:
            if self.target != RuleTarget.BASKET and not self.values:
                errors["target_values"] = _("Name at least one category or SKU.")
            if self.target == RuleTarget.BASKET and self.values:
                errors["target_values"] = _(
                    "The rule applies to the whole basket; choose “Lines in these categories” "
                    "or “Lines with these SKUs” above, or leave this empty."
                )
        elif self.target != RuleTarget.BASKET or self.values:
            errors["target_values"] = _("This kind of rule applies to the whole purchase.")
        if kind == RuleKind.ACTIVITY:
            if not self.event_type:
                errors["event_type"] = _("Name the activity, e.g. product_review.")
            elif self.event_type.replace("-", "_").lower() == "sign_up" and not (
                self.cap_times == 1 and self.cap_period == CapPeriod.EVER
            ):
                errors["cap_times"] = _(
                    "A member signs up once: set “at most this many times” to 1, "
                    "for as long as the rule runs."
                )
        elif self.event_type:
            errors["event_type"] = _("Only activity rules name an activity; leave it empty.")
        if self.cooldown_hours is not None and kind != RuleKind.ACTIVITY:
            errors["cooldown_hours"] = _(
                "Cool-downs are for activities; for purchases, use a limit per period."
            )
        if self.cooldown_hours == 0:
            errors["cooldown_hours"] = _("Leave it empty for no cool-down.")
        if kind == RuleKind.EXCLUSION and (self.cap_points is not None or self.cap_times):
            errors["cap_points"] = _("A rule that gives no points needs no limit.")
        if self.cap_points == 0:
            errors["cap_points"] = _("Leave it empty for no limit; 0 would give nothing.")
        if self.cap_times == 0:
            errors["cap_times"] = _("Leave it empty for no limit; 0 would give nothing.")
        if errors:
            raise ValidationError(errors)


class RuleAward(models.Model):
    """Points one rule gave one member, written with the credit. Caps and cool-downs count
    these; reports add them up. Once-only awards carry a `slot`, so the database itself
    refuses a second one (e.g. two first-purchase bonuses)."""

    rule = models.ForeignKey(EarningRule, on_delete=models.PROTECT, related_name="awards")
    # No index of its own: rule_award_member_rule starts with it.
    member = models.ForeignKey(Member, on_delete=models.PROTECT, related_name="+", db_index=False)
    points = models.BigIntegerField(_("points"))
    occurred_at = models.DateTimeField(
        _("happened at"), help_text=_("When the purchase or activity happened.")
    )
    slot = models.CharField(
        max_length=20, blank=True, help_text=_("Once-only awards: the period they fill.")
    )
    entry = models.ForeignKey(
        JournalEntry, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    purchase = models.ForeignKey(
        Purchase, on_delete=models.PROTECT, null=True, blank=True, related_name="rule_awards"
    )
    event = models.ForeignKey(
        ActivityEvent, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(_("recorded at"), auto_now_add=True)

    class Meta:
        verbose_name = _("rule award")
        verbose_name_plural = _("rule awards")
        indexes = [
            models.Index(fields=["member", "rule", "occurred_at"], name="rule_award_member_rule")
        ]
        constraints = [
            models.CheckConstraint(condition=Q(points__gt=0), name="rule_award_points_positive"),
            models.UniqueConstraint(
                fields=["rule", "member", "slot"],
                condition=~Q(slot=""),
                name="rule_award_once_per_slot",
            ),
            models.UniqueConstraint(
                fields=["rule", "purchase"],
                condition=Q(purchase__isnull=False),
                name="rule_award_once_per_purchase",
            ),
            models.UniqueConstraint(
                fields=["rule", "event"],
                condition=Q(event__isnull=False),
                name="rule_award_once_per_event",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.points} from {self.rule_id} to {self.member_id}"


class BirthdayGift(models.Model):
    """A member's birthday gift for one year, written with its ledger entry: the unique
    (member, year) makes the database refuse a second gift in a year, however often the
    job runs, catches up after an outage, or staff correct a birth date."""

    # No index of its own: birthday_gift_once_a_year starts with it.
    member = models.ForeignKey(
        Member, on_delete=models.PROTECT, related_name="birthday_gifts", db_index=False
    )
    year = models.PositiveSmallIntegerField(_("year"))
    birthday = models.DateField(
        _("celebrated on"), help_text=_("29 February birthdays fall on 28 February in other years.")
    )
    points = models.BigIntegerField(_("points"))
    entry = models.OneToOneField(JournalEntry, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(_("given at"), default=timezone.now)
    # Members with a login are told by e-mail; set in the transaction that sends it.
    emailed_at = models.DateTimeField(_("e-mailed at"), null=True, blank=True)

    class Meta:
        verbose_name = _("birthday gift")
        verbose_name_plural = _("birthday gifts")
        constraints = [
            models.UniqueConstraint(fields=["member", "year"], name="birthday_gift_once_a_year"),
            models.CheckConstraint(condition=Q(points__gt=0), name="birthday_gift_points_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.points} for {self.member_id} on {self.birthday}"


# Paid memberships


class MembershipPlan(models.Model):
    """A paid membership members buy at the till (a line with the plan's SKU) or get from
    staff: for its term it grants a tier and/or extra benefits (loyalty/memberships.py).
    Retire a plan by unticking "on sale": memberships already bought keep their benefits."""

    code = models.SlugField(_("code"), max_length=30, unique=True)
    name = models.CharField(_("name"), max_length=60, help_text=_("Shown to members, e.g. “Plus”."))
    sku = models.CharField(
        _("SKU"),
        max_length=64,
        help_text=_(
            "The SKU your tills sell the plan under. A purchase line with it starts or extends "
            "the member's membership by one term per unit. Capital letters, spaces, - and _ "
            "do not matter."
        ),
    )
    fee = models.DecimalField(
        _("fee"),
        max_digits=14,
        decimal_places=2,
        help_text=_("Price of one term in the program currency (the till charges it)."),
    )
    term_months = models.PositiveSmallIntegerField(_("term (months)"), default=12)
    tier = models.ForeignKey(
        Tier, on_delete=models.PROTECT, null=True, blank=True, related_name="+",
        verbose_name=_("tier granted"),
        help_text=_(
            "Members hold at least this tier for the term, whatever they spend. Empty: "
            "the plan gives extra benefits only."
        ),
    )  # fmt: skip
    earn_multiplier = models.DecimalField(
        _("extra earn multiplier"),
        max_digits=4,
        decimal_places=2,
        default=1,
        validators=[MinValueValidator(Decimal(1))],
        help_text=_(
            "On top of the tier's: 1.5 adds half the base points again on every purchase "
            "(“Plus member 1.5×”). 1 adds nothing."
        ),
    )
    bonus_points = models.PositiveIntegerField(
        _("bonus points"),
        default=0,
        help_text=_("Credited with each term bought at the till (joining and each renewal)."),
    )
    fee_earns_points = models.BooleanField(
        _("the fee earns points"),
        default=False,
        help_text=_(
            "Off by default: the fee buys the plan's own benefits (bonus points, multiplier), "
            "so paying it earns no purchase points, as with gift cards."
        ),
    )
    perks = models.TextField(
        _("perks"), blank=True, help_text=_("Other benefits shown to members, one per line.")
    )
    renewal_notice_days = models.PositiveSmallIntegerField(
        _("renewal reminder (days)"),
        default=30,
        validators=[MinValueValidator(1), MaxValueValidator(365)],
        help_text=_("How many days before a membership ends the member is reminded to renew."),
    )
    is_active = models.BooleanField(_("on sale"), default=True)
    created_at = models.DateTimeField(_("created"), default=timezone.now)

    class Meta:
        ordering = ["fee", "name"]
        verbose_name = _("membership plan")
        verbose_name_plural = _("membership plans")
        constraints = [
            models.CheckConstraint(condition=Q(fee__gt=0), name="plan_fee_positive"),
            models.CheckConstraint(condition=Q(term_months__gt=0), name="plan_term_positive"),
            models.CheckConstraint(
                condition=Q(earn_multiplier__gte=1), name="plan_multiplier_at_least_one"
            ),
            models.UniqueConstraint(
                fields=["sku"], condition=Q(is_active=True), name="plan_sku_unique_on_sale"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def perk_lines(self) -> list[str]:
        return [line.strip() for line in self.perks.splitlines() if line.strip()]

    def clean(self):
        from loyalty.rules.engine import normalise

        errors = {}
        if self.fee is not None and self.fee <= 0:
            errors["fee"] = _("A plan costs something: give a fee above zero.")
        if self.term_months is not None and self.term_months <= 0:
            errors["term_months"] = _("A term lasts at least one month.")
        if self.sku and self.is_active:
            wanted = normalise(self.sku)
            clash = next(
                (
                    plan
                    for plan in MembershipPlan.objects.filter(is_active=True).exclude(pk=self.pk)
                    if normalise(plan.sku) == wanted
                ),
                None,
            )
            if clash is not None:
                errors["sku"] = _("The plan %(plan)s on sale already uses this SKU.") % {
                    "plan": clash.name
                }
        if errors:
            raise ValidationError(errors)
        # Paid benefits must be more than the free tiers give.
        entry = Tier.objects.filter(is_active=True, threshold__lte=0).order_by("rank").first()
        grants_tier = self.tier_id is not None and (entry is None or self.tier.rank > entry.rank)
        if not (grants_tier or (self.earn_multiplier or 1) > 1 or self.bonus_points):
            raise ValidationError(
                _(
                    "A paid plan must give more than the free tiers: grant a tier above the "
                    "entry tier, an extra earn multiplier above 1, or bonus points."
                )
            )


class Membership(models.Model):
    """One term (or several) of a paid plan for a member. A renewal is a new row that
    starts where the previous one ends (`renewed_from`), so a member's active rows form
    one unbroken chain; each row remembers how it was obtained, so a return of the till
    purchase shortens exactly the row it bought."""

    class Status(models.TextChoices):
        ACTIVE = "active", _("active")
        LAPSED = "lapsed", _("lapsed")
        CANCELLED = "cancelled", _("cancelled")

    class Source(models.TextChoices):
        PURCHASE = "purchase", _("bought at the till")
        STAFF = "staff", _("granted by staff")

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    # No index of its own: membership_member_ends starts with it.
    member = models.ForeignKey(
        Member,
        on_delete=models.PROTECT,
        related_name="memberships",
        verbose_name=_("member"),
        db_index=False,
    )
    plan = models.ForeignKey(
        MembershipPlan, on_delete=models.PROTECT, related_name="memberships",
        verbose_name=_("plan"),
    )  # fmt: skip
    starts_at = models.DateTimeField(_("starts"))
    ends_at = models.DateTimeField(_("ends"))
    months = models.PositiveSmallIntegerField(
        _("months"), help_text=_("The length bought or granted.")
    )
    status = models.CharField(
        _("status"), max_length=10, choices=Status.choices, default=Status.ACTIVE
    )
    auto_renew = models.BooleanField(
        _("remind to renew"),
        default=True,
        help_text=_(
            "Tally takes no payments, so it cannot renew by itself: a member who keeps this "
            "on is e-mailed before the end to buy the next term at the till or online."
        ),
    )
    source = models.CharField(_("obtained by"), max_length=10, choices=Source.choices)
    purchase = models.ForeignKey(
        Purchase, on_delete=models.PROTECT, null=True, blank=True, related_name="memberships",
        verbose_name=_("purchase"),
    )  # fmt: skip
    purchase_line = models.OneToOneField(
        PurchaseLine, on_delete=models.PROTECT, null=True, blank=True, related_name="membership"
    )
    staff = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True,
        related_name="+", verbose_name=_("granted by"),
    )  # fmt: skip
    reason = models.TextField(_("reason"), blank=True, help_text=_("Why staff granted it."))
    renewed_from = models.ForeignKey(
        "self", on_delete=models.PROTECT, null=True, blank=True, related_name="renewals",
        verbose_name=_("renews"),
    )  # fmt: skip
    reminded_at = models.DateTimeField(_("renewal reminder sent"), null=True, blank=True)
    ended_at = models.DateTimeField(_("lapsed or cancelled at"), null=True, blank=True)
    end_reason = models.TextField(_("why it ended early"), blank=True)
    ended_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True,
        related_name="+", verbose_name=_("cancelled by"),
    )  # fmt: skip
    created_at = models.DateTimeField(_("created"), default=timezone.now)

    class Meta:
        verbose_name = _("membership")
        verbose_name_plural = _("memberships")
        ordering = ["-starts_at", "-id"]
        permissions = [
            ("grant_membership", _("Can grant a paid membership with a reason")),
            ("cancel_membership", _("Can cancel a paid membership with a reason")),
        ]
        indexes = [
            models.Index(fields=["member", "ends_at"], name="membership_member_ends"),
            models.Index(
                fields=["ends_at"], condition=Q(status="active"), name="membership_active_ends"
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(ends_at__gte=models.F("starts_at")), name="membership_ends_after_start"
            ),
            models.CheckConstraint(
                condition=~Q(source="purchase") | Q(purchase__isnull=False),
                name="membership_purchase_has_purchase",
            ),
            models.CheckConstraint(
                condition=~Q(source="staff") | (Q(staff__isnull=False) & ~Q(reason="")),
                name="membership_grant_has_staff_and_reason",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.plan_id} for {self.member_id} until {self.ends_at:%Y-%m-%d}"
