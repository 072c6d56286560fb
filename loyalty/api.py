"""The POS API for members (and, next, purchases): thin views over services and selectors.
Contract: shared/API.md. Composed under /api/v1/ by config/urls.py."""

import functools
import uuid
from datetime import timedelta
from decimal import Decimal

from django.db.models import Q
from django.urls import path
from django.utils import timezone
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from loyalty import exceptions as ledger_errors
from loyalty import ledger, memberships, purchases, selectors, tiers
from loyalty.compiled_query import FirstRead
from loyalty.ledger import Cause, program_settings
from loyalty.models import Purchase, Redemption
from members.cards import card_number_is_valid
from members.models import Member
from members.services import MemberExists, member_enrol
from partners.api import problems
from partners.api.fields import E164, MoneySerializer, PhoneE164, SafeText
from partners.api.idempotency import answer_riding, idempotent, key_check_along
from partners.api.problems import ApiProblem
from partners.api.views import ApiView

problems.register(ledger_errors.InsufficientPoints, 409)
problems.register(ledger_errors.InvalidPoints, 400)
problems.register(ledger_errors.UnknownMember, 404)
problems.register(ledger_errors.AlreadyReversed, 409)
problems.register(purchases.DuplicateReceipt, 409)
problems.register(purchases.ReturnExceedsPurchase, 422)
problems.register(purchases.CurrencyMismatch, 422)
problems.register(purchases.RedeemExceedsTotal, 400)
problems.register(purchases.PlanQuantityInvalid, 400)


def _member_exists(exc: MemberExists):
    raise ApiProblem(
        "member_exists",
        409,
        "A member with this e-mail or phone already exists.",
        card_number=exc.member.card_number,
    )


class ExpiringSerializer(serializers.Serializer):
    points = serializers.IntegerField()
    expires_at = serializers.DateTimeField()


class TierSerializer(serializers.Serializer):
    code = serializers.CharField()
    name = serializers.CharField()


class TierProgressSerializer(serializers.Serializer):
    """Where the member stands: what they have in the window and what the next tier takes."""

    basis = serializers.ChoiceField(
        choices=["spend", "points"],
        help_text="What qualifies: spend in `unit` (the program currency) or qualifying points.",
    )
    unit = serializers.CharField(help_text='The currency code, or "points".')
    window_months = serializers.IntegerField()
    qualification = serializers.DecimalField(max_digits=16, decimal_places=2)
    earn_multiplier = serializers.DecimalField(
        max_digits=4,
        decimal_places=2,
        help_text="Of the member's tier: applies to the next purchase.",
    )
    guaranteed_until = serializers.DateTimeField(allow_null=True)
    next_tier = TierSerializer(allow_null=True, help_text="null at the top tier.")
    needed = serializers.DecimalField(
        max_digits=16, decimal_places=2, allow_null=True, help_text="More to reach next_tier..."
    )
    needed_by = serializers.DateTimeField(allow_null=True, help_text="...by this moment.")
    at_risk = serializers.BooleanField(
        help_text="The member would drop a tier at the review on keep_by unless they add keep_needed."
    )
    keep_needed = serializers.DecimalField(max_digits=16, decimal_places=2, allow_null=True)
    keep_by = serializers.DateTimeField(allow_null=True)
    text = serializers.CharField(help_text="The goal in words for the cashier to read out.")


class MembershipSerializer(serializers.Serializer):
    """A paid membership running now (e.g. Plus): bought at the till as the plan's SKU."""

    plan = TierSerializer(help_text="The plan's `code` and `name`.")
    ends_at = serializers.DateTimeField(
        help_text="When it ends, renewals already bought included: renew at the till before."
    )


class MemberSummarySerializer(serializers.Serializer):
    card_number = serializers.CharField()
    display_name = serializers.CharField()
    points_balance = serializers.IntegerField()
    points_pending = serializers.IntegerField()
    points_value = MoneySerializer()
    tier = TierSerializer(
        allow_null=True,
        help_text="The tier the member holds: the higher of the one earned and the one a "
        "paid membership grants.",
    )
    tier_progress = TierProgressSerializer(
        allow_null=True, help_text="null when there are no tiers."
    )
    membership = MembershipSerializer(
        allow_null=True, help_text="The paid membership running now; null when none."
    )
    expiring = ExpiringSerializer(many=True)


def validated(serializer_class, data) -> dict:
    """The request's values, or a 400 validation_error naming each bad field (a JSON
    null body: each required one)."""
    return validator(serializer_class).run_validation({} if data is None else data)


@functools.cache
def validator(serializer_class) -> serializers.Serializer:
    """One instance per serializer class, kept: DRF deep-copies a serializer's fields for
    every new instance, which cost more than validating a basket. Validating and
    representing keep no state on the instance, so threads can share it."""
    return serializer_class()


def represented(serializer_class, value) -> dict:
    """`serializer_class(value).data`, without building a new serializer each time."""
    return validator(serializer_class).to_representation(value)


def _tier_progress(progress: tiers.TierProgress) -> dict | None:
    if not progress.has_tiers:
        return None
    return {
        "basis": progress.basis,
        "unit": progress.currency if progress.basis == "spend" else "points",
        "window_months": progress.window_months,
        "qualification": progress.qualification,
        "earn_multiplier": progress.multiplier,
        "guaranteed_until": progress.guaranteed_until,
        "next_tier": progress.next_tier,
        "needed": progress.needed,
        "needed_by": progress.by,
        "at_risk": progress.at_risk,
        "keep_needed": progress.keep_needed,
        "keep_by": progress.keep_by,
        "text": progress.keep_text or progress.goal_text,
    }


def member_summary(member: Member, *, new: bool = False) -> dict:
    """The summary a till shows. `member` read through `_members()` (or, by card,
    `memberships.member_by_card`, which reads the same) costs no query for
    their paid membership unless they have one; `new`: just enrolled, so none."""
    settings = program_settings()
    balance = selectors.member_balance(member=member, settings=settings)
    membership = None if new else memberships.membership_now(member=member)
    progress = tiers.tier_progress(member=member, settings=settings, membership=membership)
    summary = {
        "card_number": member.card_number,
        "display_name": member.display_name,
        "points_balance": balance.points,
        "points_pending": balance.pending,
        "points_value": balance.value,
        "tier": progress.tier,
        "tier_progress": _tier_progress(progress),
        "membership": (
            {"plan": membership.plan, "ends_at": membership.until} if membership else None
        ),
        "expiring": [{"points": e.points, "expires_at": e.expires_at} for e in balance.expiring],
    }
    return represented(MemberSummarySerializer, summary)


def _no_member(card_number: str) -> ApiProblem:
    if not card_number_is_valid(card_number):
        return ApiProblem(
            "member_not_found", 404, "No member has this card number (check digit does not match)."
        )
    return ApiProblem("member_not_found", 404, "No member has this card number.")


def _members():
    """Members as the till reads them: with their login and their running paid membership."""
    return memberships.with_membership(Member.objects.select_related("user"))


def member_by_card(card_number: str) -> Member:
    member = None
    if card_number_is_valid(card_number):
        member = memberships.member_by_card(card_number)
    if member is None:
        raise _no_member(card_number)
    return member


def member_lock_by_card(
    card_number: str, *, first: FirstRead | None = None
) -> tuple[Member, ledger.MemberAccounts]:
    """The member and their locked accounts, in one query for a valid card, which makes
    the read `first` too (`ledger.member_lock_by_card`)."""
    if not card_number_is_valid(card_number):
        raise _no_member(card_number)
    try:
        return ledger.member_lock_by_card(card_number, first=first)
    except ledger_errors.UnknownMember:
        raise _no_member(card_number) from None


SUMMARY_EXAMPLE = OpenApiExample(
    "A member",
    value={
        "card_number": "6001234567890",
        "display_name": "Ayşe K.",
        "points_balance": 1200,
        "points_pending": 150,
        "points_value": {"amount": "12.00", "currency": "EUR"},
        "tier": {"code": "vib", "name": "VIB"},
        "tier_progress": {
            "basis": "spend",
            "unit": "EUR",
            "window_months": 12,
            "qualification": "412.00",
            "earn_multiplier": "1.25",
            "guaranteed_until": "2027-11-24T12:00:00+00:00",
            "next_tier": {"code": "rouge", "name": "Rouge"},
            "needed": "588.00",
            "needed_by": "2027-10-02T15:30:00+00:00",
            "at_risk": False,
            "keep_needed": None,
            "keep_by": None,
            "text": "Spend 588.00 EUR more by 2 October 2027 to reach Rouge.",
        },
        "membership": {
            "plan": {"code": "plus", "name": "Plus"},
            "ends_at": "2027-03-14T10:15:00+00:00",
        },
        "expiring": [{"points": 300, "expires_at": "2027-01-31T23:59:59+00:00"}],
    },
    response_only=True,
)


class MemberLookupApi(ApiView):
    required_scope = "members:read"

    @extend_schema(
        operation_id="members_lookup",
        summary="Find a member by card, phone or e-mail",
        parameters=[
            OpenApiParameter("card", str, description="Card number (what the member QR encodes)"),
            OpenApiParameter("phone", str, description="E.164 phone, e.g. +905551234567"),
            OpenApiParameter("email", str, description="E-mail address"),
        ],
        responses={200: MemberSummarySerializer},
        examples=[SUMMARY_EXAMPLE],
        description="Exactly one of `card`, `phone` or `email`. Errors: `validation_error` 400, "
        "`member_not_found` 404.",
    )
    def get(self, request):
        given = {
            k: request.query_params[k].strip()
            for k in ("card", "phone", "email")
            if request.query_params.get(k, "").strip()
        }
        if len(given) != 1:
            raise ApiProblem(
                "validation_error",
                400,
                "Give exactly one of card, phone or email.",
                errors={"_": ["Give exactly one of card, phone or email."]},
            )
        ((field, value),) = given.items()
        if field == "card":
            return Response(member_summary(member_by_card(value)))
        if field == "phone" and not E164.match(value):
            raise ApiProblem(
                "validation_error",
                400,
                "Phone must be E.164.",
                errors={"phone": ["Use the E.164 form, e.g. +905551234567."]},
            )
        query = Q(phone=value) if field == "phone" else Q(user__email__iexact=value)
        member = _members().filter(query).first()
        if member is None:
            raise ApiProblem("member_not_found", 404, f"No member has this {field}.")
        return Response(member_summary(member))


class MemberDetailApi(ApiView):
    required_scope = "members:read"

    @extend_schema(
        operation_id="members_retrieve",
        summary="A member's summary by card number",
        responses={200: MemberSummarySerializer},
        examples=[SUMMARY_EXAMPLE],
        description="Errors: `member_not_found` 404.",
    )
    def get(self, request, card_number):
        return Response(member_summary(member_by_card(card_number)))


class MemberEnrolInSerializer(serializers.Serializer):
    email = serializers.EmailField(required=False, allow_blank=True, max_length=254)
    phone = PhoneE164(required=False, allow_blank=True)
    first_name = SafeText(required=False, allow_blank=True, max_length=150)
    last_name = SafeText(required=False, allow_blank=True, max_length=150)
    marketing_consent = serializers.BooleanField(required=False, default=False)

    def validate(self, data):
        if not data.get("email") and not data.get("phone"):
            raise serializers.ValidationError({"email": ["Give an e-mail or a phone (or both)."]})
        return data


class MemberEnrolApi(ApiView):
    required_scope = "members:write"

    @extend_schema(
        operation_id="members_enrol",
        summary="Enrol a shopper at the till",
        request=MemberEnrolInSerializer,
        responses={201: MemberSummarySerializer},
        examples=[
            OpenApiExample(
                "Enrol",
                value={
                    "email": "ayse@example.com",
                    "phone": "+905551234567",
                    "first_name": "Ayşe",
                    "last_name": "Kaya",
                    "marketing_consent": True,
                },
                request_only=True,
            ),
            SUMMARY_EXAMPLE,
        ],
        description="Needs an `Idempotency-Key` header. Errors: `validation_error` 400, "
        "`idempotency_key_required` 400, `member_exists` 409 (with the existing `card_number`), "
        "`idempotency_key_in_use` 409, `idempotency_key_reused` 422.",
    )
    @idempotent
    def post(self, request):
        values = validated(MemberEnrolInSerializer, request.data)
        try:
            member = member_enrol(
                email=(values.get("email") or "").lower() or None,
                phone=values.get("phone") or None,
                first_name=values.get("first_name", ""),
                last_name=values.get("last_name", ""),
                marketing_consent=values["marketing_consent"],
            )
        except MemberExists as exc:
            _member_exists(exc)
        return 201, member_summary(member, new=True)


# Purchases, returns, redemptions, events, batches ------------------------------------

MAX_AMOUNT = Decimal("10000000")
FUTURE_TOLERANCE = timedelta(minutes=10)
MAX_BATCH = 500


def _cause(request) -> Cause:
    return Cause(source="api", client=str(request.user)[:100])


class OccurredAt(serializers.DateTimeField):
    def to_internal_value(self, value):
        moment = super().to_internal_value(value)
        if moment > timezone.now() + FUTURE_TOLERANCE:
            raise serializers.ValidationError("This time is in the future; check the till's clock.")
        return moment


# Identifiers (receipt and return ids, SKUs, categories) are kept exactly as sent: a
# numeric receipt id may pass the Luhn check by chance, and rewriting it would make
# distinct receipts collide. Card-number masking applies to free text only (SafeText).
class LineInSerializer(serializers.Serializer):
    sku = serializers.CharField(max_length=64)
    category = serializers.CharField(max_length=64, required=False, allow_blank=True, default="")
    quantity = serializers.DecimalField(
        max_digits=12, decimal_places=3, min_value=Decimal("0.001"), max_value=Decimal("100000")
    )
    unit_price = serializers.DecimalField(
        max_digits=14, decimal_places=2, min_value=Decimal("0"), max_value=MAX_AMOUNT
    )


class QuoteInSerializer(serializers.Serializer):
    card_number = serializers.CharField(max_length=13, min_length=13)
    occurred_at = OccurredAt(required=False)
    currency = serializers.RegexField(
        r"^[A-Z]{3}$", error_messages={"invalid": "Use a 3-letter ISO 4217 code, e.g. EUR."}
    )
    total = serializers.DecimalField(
        max_digits=14, decimal_places=2, min_value=Decimal("0.01"), max_value=MAX_AMOUNT
    )
    lines = LineInSerializer(many=True, allow_empty=False, max_length=MAX_BATCH)
    redeem_points = serializers.IntegerField(
        required=False, min_value=1, max_value=10**9, default=0
    )

    def validate(self, data):
        lines_sum = sum(line["quantity"] * line["unit_price"] for line in data["lines"])
        if lines_sum.quantize(Decimal("0.01")) != data["total"]:
            raise serializers.ValidationError(
                {
                    "total": [
                        f"The lines add up to {lines_sum.quantize(Decimal('0.01'))}, not {data['total']}."
                    ]
                }
            )
        return data


class PurchaseInSerializer(QuoteInSerializer):
    receipt_id = serializers.CharField(max_length=100)
    occurred_at = OccurredAt()


class LinePointsSerializer(serializers.Serializer):
    sku = serializers.CharField()
    points = serializers.IntegerField()


class QuoteOutSerializer(serializers.Serializer):
    points = serializers.IntegerField()
    lines = LinePointsSerializer(many=True)
    max_redeemable_points = serializers.IntegerField()
    breakdown = serializers.ListField(child=serializers.DictField())


class PurchaseOutSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    receipt_id = serializers.CharField()
    points_earned = serializers.IntegerField()
    points_redeemed = serializers.IntegerField()
    breakdown = serializers.ListField(child=serializers.DictField())
    lines = LinePointsSerializer(many=True)
    points_balance = serializers.IntegerField()
    points_pending = serializers.IntegerField()


class ReturnLineInSerializer(serializers.Serializer):
    sku = serializers.CharField(max_length=64)
    quantity = serializers.DecimalField(
        max_digits=12, decimal_places=3, min_value=Decimal("0.001"), max_value=Decimal("100000")
    )


class ReturnInSerializer(serializers.Serializer):
    return_id = serializers.CharField(max_length=100)
    lines = ReturnLineInSerializer(
        many=True, required=False, allow_empty=False, max_length=MAX_BATCH
    )


class ReturnOutSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    points_reversed = serializers.IntegerField()
    points_restored = serializers.IntegerField()
    points_balance = serializers.IntegerField()


class RedemptionInSerializer(serializers.Serializer):
    card_number = serializers.CharField(max_length=13, min_length=13)
    points = serializers.IntegerField(min_value=1, max_value=10**9)
    reference = SafeText(max_length=100, required=False, allow_blank=True, default="")


class RedemptionOutSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    points = serializers.IntegerField()
    value = MoneySerializer()
    points_balance = serializers.IntegerField()


class VoidOutSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    status = serializers.CharField()
    points_balance = serializers.IntegerField()


class EventInSerializer(serializers.Serializer):
    card_number = serializers.CharField(max_length=13, min_length=13)
    type = serializers.SlugField(max_length=50)
    occurred_at = OccurredAt()
    properties = serializers.DictField(required=False, default=dict)

    def validate_properties(self, value):
        if len(value) > 50:
            raise serializers.ValidationError("At most 50 properties.")
        clean = {}
        for key, item in value.items():
            if not isinstance(item, str | int | float | bool) and item is not None:
                raise serializers.ValidationError(f"Property {key!r} must be a plain value.")
            clean[str(key)[:50]] = (
                SafeText(max_length=500).run_validation(item) if isinstance(item, str) else item
            )
        return clean


class EventOutSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    points_earned = serializers.IntegerField()


def _balance_after(member: Member) -> tuple[int, int]:
    return selectors.member_points(member=member)


def _lines(data) -> list[purchases.LineIn]:
    return [
        purchases.LineIn(
            sku=line["sku"],
            quantity=line["quantity"],
            unit_price=line["unit_price"],
            category=line["category"],
        )
        for line in data["lines"]
    ]


def purchase_handler(store, cause: Cause, payload) -> tuple[int, dict]:
    values = validated(PurchaseInSerializer, payload)
    # The till's request checks its idempotency key in this read (None in a batch).
    member, accounts = member_lock_by_card(values["card_number"], first=key_check_along())
    purchase = purchases.purchase_record(
        store=store,
        member=member,
        accounts=accounts,
        receipt_id=values["receipt_id"],
        occurred_at=values["occurred_at"],
        currency=values["currency"],
        total=values["total"],
        lines=_lines(values),
        redeem_points=values["redeem_points"],
        cause=cause,
        riders=lambda recorded: answer_riding(201, purchase_body(recorded)),
    )
    return 201, purchase_body(purchase)


def purchase_body(purchase: Purchase) -> dict:
    """What POST purchases answers about a purchase just recorded, as
    PurchaseOutSerializer represents it (a test holds them equal). Built directly: the
    serializer's field-by-field pass over a body that is already plain JSON cost 3 %
    of the app's instructions a till's purchase, and a batch makes hundreds."""
    return {
        "id": str(purchase.public_id),
        "receipt_id": purchase.receipt_id,
        "points_earned": purchase.points_earned,
        "points_redeemed": purchase.points_redeemed,
        "breakdown": purchase.breakdown,
        "lines": [{"sku": line.sku, "points": line.points} for line in purchase.recorded_lines],
        "points_balance": purchase.points_balance,
        "points_pending": purchase.points_pending,
    }


def _purchase_for(store, purchase_id) -> Purchase:
    purchase = (
        Purchase.objects.select_related("member", "earn_entry", "redeem_entry", "store")
        .filter(public_id=purchase_id)
        .first()
        if _is_uuid(purchase_id)
        else None
    )
    if purchase is None:
        raise ApiProblem("purchase_not_found", 404, "No purchase has this id.")
    if purchase.store_id != store.pk:
        raise ApiProblem("permission_denied", 403, "This purchase belongs to another store.")
    return purchase


def _is_uuid(value) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


def return_handler(store, cause: Cause, purchase_id, payload) -> tuple[int, dict]:
    values = validated(ReturnInSerializer, payload)
    purchase = _purchase_for(store, purchase_id)
    lines = None
    if values.get("lines"):
        lines = [(line["sku"], line["quantity"]) for line in values["lines"]]
    purchase_return = purchases.purchase_return(
        store=store, purchase=purchase, return_id=values["return_id"], lines=lines, cause=cause
    )
    points, _pending = _balance_after(purchase.member)
    body = {
        "id": purchase_return.public_id,
        "points_reversed": purchase_return.points_reversed,
        "points_restored": purchase_return.points_restored,
        "points_balance": points,
    }
    return 201, represented(ReturnOutSerializer, body)


# Examples for the docs: what integrators copy first.
_BASKET = {
    "card_number": "6001234567890",
    "currency": "EUR",
    "total": "49.90",
    "lines": [
        {"sku": "SHAMPOO-250", "category": "hair", "quantity": "2", "unit_price": "12.45"},
        {"sku": "PERFUME-50", "category": "fragrance", "quantity": "1", "unit_price": "25.00"},
    ],
}
# A VIB member during a "2× on fragrance" campaign, paying 200 points (2.00 EUR) of it.
_BREAKDOWN = [
    {"rule": "base", "rule_id": None, "version": None, "kind": "base", "rate": "1",
     "currency": "EUR", "points": 47, "description": "1 point(s) per EUR paid"},
    {"rule": "tier", "rule_id": 2, "version": None, "kind": "tier", "name": "VIB",
     "multiplier": "1.25", "points": 11, "description": "VIB tier: 1.25× points"},
    {"rule": "fragrance-weekend", "rule_id": 3, "version": 2, "kind": "multiplier",
     "name": "Fragrance weekend", "multiplier": "2", "points": 23,
     "description": "2× on Fragrance weekend"},
]  # fmt: skip
QUOTE_EXAMPLES = [
    OpenApiExample("Basket", request_only=True, value=_BASKET | {"redeem_points": 200}),
    OpenApiExample(
        "Quote",
        response_only=True,
        value={
            "points": 81,
            "lines": [{"sku": "SHAMPOO-250", "points": 28}, {"sku": "PERFUME-50", "points": 53}],
            "max_redeemable_points": 1200,
            "breakdown": _BREAKDOWN,
        },
    ),
]
PURCHASE_EXAMPLES = [
    OpenApiExample(
        "Purchase",
        request_only=True,
        value=_BASKET
        | {
            "receipt_id": "R-1001",
            "occurred_at": "2026-11-24T10:15:00+00:00",
            "redeem_points": 200,
        },
    ),
    OpenApiExample(
        "Recorded",
        response_only=True,
        status_codes=["201"],
        value={
            "id": "4f1c2b8e-2a51-4f0e-9d8c-1f2a3b4c5d6e",
            "receipt_id": "R-1001",
            "points_earned": 81,
            "points_redeemed": 200,
            "breakdown": _BREAKDOWN,
            "lines": [{"sku": "SHAMPOO-250", "points": 28}, {"sku": "PERFUME-50", "points": 53}],
            "points_balance": 1081,
            "points_pending": 0,
        },
    ),
]
RETURN_EXAMPLES = [
    OpenApiExample(
        "One item back",
        request_only=True,
        value={"return_id": "RT-1001-1", "lines": [{"sku": "SHAMPOO-250", "quantity": "1"}]},
    ),
    OpenApiExample("Everything left", request_only=True, value={"return_id": "RT-1001-2"}),
    OpenApiExample(
        "Returned",
        response_only=True,
        status_codes=["201"],
        value={
            "id": "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d",
            "points_reversed": 14,
            "points_restored": 49,
            "points_balance": 1116,
        },
    ),
]
REDEMPTION_EXAMPLES = [
    OpenApiExample(
        "Pay 500 points",
        request_only=True,
        value={"card_number": "6001234567890", "points": 500, "reference": "Coffee"},
    ),
    OpenApiExample(
        "Paid",
        response_only=True,
        status_codes=["201"],
        value={
            "id": "0b1c2d3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e",
            "points": 500,
            "value": {"amount": "5.00", "currency": "EUR"},
            "points_balance": 700,
        },
    ),
]
VOID_EXAMPLES = [
    OpenApiExample(
        "Voided",
        response_only=True,
        value={
            "id": "0b1c2d3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e",
            "status": "voided",
            "points_balance": 1200,
        },
    ),
]
EVENT_EXAMPLES = [
    OpenApiExample(
        "Review written",
        request_only=True,
        value={
            "card_number": "6001234567890",
            "type": "product-review",
            "occurred_at": "2026-11-24T10:15:00+00:00",
            "properties": {"sku": "PERFUME-50", "stars": 5},
        },
    ),
    OpenApiExample(
        "Stored and credited",
        response_only=True,
        status_codes=["201"],
        value={"id": "5d4c3b2a-1f0e-4d9c-8b7a-6f5e4d3c2b1a", "points_earned": 50},
    ),
]


class PurchaseQuoteApi(ApiView):
    required_scope = "purchases:write"

    @extend_schema(
        operation_id="purchases_quote",
        summary="What a purchase would earn (writes nothing)",
        request=QuoteInSerializer,
        responses={200: QuoteOutSerializer},
        examples=QUOTE_EXAMPLES,
        description="Same body as `POST purchases` without `receipt_id`; no Idempotency-Key needed. "
        "The points equal what the purchase then credits: the same earning rules and campaigns "
        "(those in force at `occurred_at`, default now, in this till's store), the member's tier "
        "and limits. `breakdown` lists each rule with `rule` (code), `rule_id`, `version`, "
        "`description` (a sentence to read out) and `points`; the lines add up to `points`. "
        "Errors: `validation_error` 400, "
        "`member_not_found` 404, `currency_mismatch` 422.",
    )
    def post(self, request):
        values = validated(QuoteInSerializer, request.data)
        member = member_by_card(values["card_number"])
        lines = _lines(values)
        quote = purchases.purchase_quote(
            member=member, currency=values["currency"], total=values["total"], lines=lines,
            redeem_points=values["redeem_points"], store=request.user.store,
            occurred_at=values.get("occurred_at"),
        )  # fmt: skip
        body = {
            "points": quote.points,
            "max_redeemable_points": quote.max_redeemable_points,
            "lines": [
                {"sku": line.sku, "points": p}
                for line, p in zip(lines, quote.line_points, strict=True)
            ],
            "breakdown": quote.breakdown,
        }
        return Response(represented(QuoteOutSerializer, body))


class PurchaseApi(ApiView):
    required_scope = "purchases:write"

    @extend_schema(
        operation_id="purchases_record",
        summary="Record a purchase: points are added automatically",
        request=PurchaseInSerializer,
        responses={201: PurchaseOutSerializer},
        examples=PURCHASE_EXAMPLES,
        description="Needs an `Idempotency-Key`. A `receipt_id` is credited once per store, ever. "
        "Points come from the earning rules in force at `occurred_at` (see `purchases/quote`); "
        "the purchase keeps its `breakdown` and each line's points as earned, whatever later "
        "happens to the rules, and a return takes back each line's points in proportion. "
        "A line with a paid membership plan's SKU (e.g. Plus) starts the member's membership, "
        "or extends it from its current end, by one term per unit (whole quantities only); "
        "that line earns the plan's bonus points, not purchase points, and the plan's benefits "
        "apply from the member's next purchase. Returning the line shortens the membership in "
        "proportion (all of it: cancelled). "
        "Errors: `validation_error`/`malformed_json`/`idempotency_key_required` 400, "
        "`member_not_found` 404, `duplicate_receipt` (with the existing `id`), `insufficient_points`, "
        "`idempotency_key_in_use` 409, `currency_mismatch`, `idempotency_key_reused` 422.",
    )
    @idempotent(key_check_along=True)
    def post(self, request):
        return purchase_handler(request.user.store, _cause(request), request.data)


class PurchaseReturnApi(ApiView):
    required_scope = "purchases:write"

    @extend_schema(
        operation_id="purchases_return",
        summary="Return all or part of a purchase",
        request=ReturnInSerializer,
        responses={201: ReturnOutSerializer},
        examples=RETURN_EXAMPLES,
        description="Give `lines` for a partial return, or none for everything not yet returned. "
        "Reverses the points the goods earned and gives back the points that paid for them, in "
        "proportion; the balance may go negative if the points were spent. Errors: "
        "`validation_error` 400, `permission_denied` 403 (another store's purchase), "
        "`purchase_not_found` 404, `duplicate_receipt` 409 (same `return_id`), "
        "`return_exceeds_purchase` 422.",
    )
    @idempotent
    def post(self, request, purchase_id):
        return return_handler(request.user.store, _cause(request), purchase_id, request.data)


class RedemptionApi(ApiView):
    required_scope = "redemptions:write"

    @extend_schema(
        operation_id="redemptions_create",
        summary="Pay with points",
        request=RedemptionInSerializer,
        responses={201: RedemptionOutSerializer},
        examples=REDEMPTION_EXAMPLES,
        description="Errors: `validation_error` 400, `member_not_found` 404, `insufficient_points` 409.",
    )
    @idempotent
    def post(self, request):
        values = validated(RedemptionInSerializer, request.data)
        member = member_by_card(values["card_number"])
        redemption = purchases.redemption_create(
            store=request.user.store,
            member=member,
            points=values["points"],
            reference=values["reference"],
            cause=_cause(request),
        )
        points, _pending = _balance_after(member)
        body = {
            "id": redemption.public_id,
            "points": redemption.points,
            "value": selectors.points_value(redemption.points, program_settings()),
            "points_balance": points,
        }
        return 201, represented(RedemptionOutSerializer, body)


class RedemptionVoidApi(ApiView):
    required_scope = "redemptions:write"

    @extend_schema(
        operation_id="redemptions_void",
        summary="Void a points payment: the points come back",
        request=None,
        responses={200: VoidOutSerializer},
        examples=VOID_EXAMPLES,
        description="Voiding twice changes nothing. Errors: `permission_denied` 403, `not_found` 404.",
    )
    @idempotent
    def post(self, request, redemption_id):
        redemption = (
            Redemption.objects.select_related("member", "entry")
            .filter(public_id=redemption_id)
            .first()
            if _is_uuid(redemption_id)
            else None
        )
        if redemption is None:
            raise ApiProblem("not_found", 404, "No redemption has this id.")
        if redemption.store_id != request.user.store.pk:
            raise ApiProblem("permission_denied", 403, "This redemption belongs to another store.")
        redemption = purchases.redemption_void(redemption=redemption, cause=_cause(request))
        points, _pending = _balance_after(redemption.member)
        return 200, represented(
            VoidOutSerializer,
            {"id": redemption.public_id, "status": redemption.status, "points_balance": points},
        )


class VoucherApi(ApiView):
    required_scope = "vouchers:read"

    @extend_schema(
        operation_id="vouchers_retrieve",
        summary="Check a voucher",
        responses={200: None},
        description="Vouchers arrive with the rewards catalog; until then every code answers `voucher_not_found` 404.",
    )
    def get(self, request, code):
        raise ApiProblem("voucher_not_found", 404, "No voucher has this code.")


class VoucherRedeemApi(ApiView):
    required_scope = "vouchers:write"

    @extend_schema(
        operation_id="vouchers_redeem",
        summary="Redeem a voucher",
        request=None,
        responses={200: None},
        description="Until the rewards catalog exists every code answers `voucher_not_found` 404.",
    )
    @idempotent
    def post(self, request, code):
        raise ApiProblem("voucher_not_found", 404, "No voucher has this code.")


class EventApi(ApiView):
    required_scope = "events:write"

    @extend_schema(
        operation_id="events_record",
        summary="Record a member activity",
        request=EventInSerializer,
        responses={201: EventOutSerializer},
        examples=EVENT_EXAMPLES,
        description="Stores the activity and credits the points its activity rules give (set up in the back office), within each rule's per-member limits and cool-down; `points_earned` is 0 when no rule applies or a limit was reached. Types match whatever case or `-`/`_` the app sends. Errors: `validation_error` 400, `member_not_found` 404.",
    )
    @idempotent
    def post(self, request):
        values = validated(EventInSerializer, request.data)
        event = purchases.event_record(
            store=request.user.store,
            member=member_by_card(values["card_number"]),
            type=values["type"],
            occurred_at=values["occurred_at"],
            properties=values["properties"],
            cause=_cause(request),
        )
        return 201, represented(
            EventOutSerializer, {"id": event.public_id, "points_earned": event.points_earned}
        )


urlpatterns = [
    path("members/lookup", MemberLookupApi.as_view(), name="api-members-lookup"),
    path("members", MemberEnrolApi.as_view(), name="api-members-enrol"),
    path("members/<str:card_number>", MemberDetailApi.as_view(), name="api-members-detail"),
    path("purchases/quote", PurchaseQuoteApi.as_view(), name="api-purchases-quote"),
    path("purchases", PurchaseApi.as_view(), name="api-purchases"),
    path(
        "purchases/<str:purchase_id>/returns",
        PurchaseReturnApi.as_view(),
        name="api-purchases-returns",
    ),
    path("redemptions", RedemptionApi.as_view(), name="api-redemptions"),
    path(
        "redemptions/<str:redemption_id>/void",
        RedemptionVoidApi.as_view(),
        name="api-redemptions-void",
    ),
    path("vouchers/<str:code>", VoucherApi.as_view(), name="api-vouchers"),
    path("vouchers/<str:code>/redeem", VoucherRedeemApi.as_view(), name="api-vouchers-redeem"),
    path("events", EventApi.as_view(), name="api-events"),
]
