"""The POS API for members (and, next, purchases): thin views over services and selectors.
Contract: shared/API.md. Composed under /api/v1/ by config/urls.py."""

from django.db.models import Q
from django.urls import path
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from loyalty import exceptions as ledger_errors
from loyalty import selectors
from members.cards import card_number_is_valid
from members.models import Member
from members.services import MemberExists, member_enrol
from partners.api import problems
from partners.api.fields import E164, MoneySerializer, PhoneE164, SafeText
from partners.api.idempotency import idempotent
from partners.api.problems import ApiProblem

problems.register(ledger_errors.InsufficientPoints, 409)
problems.register(ledger_errors.InvalidPoints, 400)
problems.register(ledger_errors.UnknownMember, 404)


def _member_exists(exc: MemberExists):
    raise ApiProblem(
        "member_exists", 409, "A member with this e-mail or phone already exists.",
        card_number=exc.member.card_number,
    )  # fmt: skip


class ExpiringSerializer(serializers.Serializer):
    points = serializers.IntegerField()
    expires_at = serializers.DateTimeField()


class TierSerializer(serializers.Serializer):
    code = serializers.CharField()
    name = serializers.CharField()


class MemberSummarySerializer(serializers.Serializer):
    card_number = serializers.CharField()
    display_name = serializers.CharField()
    points_balance = serializers.IntegerField()
    points_pending = serializers.IntegerField()
    points_value = MoneySerializer()
    tier = TierSerializer(allow_null=True)
    expiring = ExpiringSerializer(many=True)


def member_summary(member: Member) -> dict:
    balance = selectors.member_balance(member=member)
    summary = {
        "card_number": member.card_number,
        "display_name": member.display_name,
        "points_balance": balance.points,
        "points_pending": balance.pending,
        "points_value": balance.value,
        "tier": None,  # tiers arrive with the rules issue
        "expiring": [{"points": e.points, "expires_at": e.expires_at} for e in balance.expiring],
    }
    return MemberSummarySerializer(summary).data


def member_by_card(card_number: str) -> Member:
    if not card_number_is_valid(card_number):
        raise ApiProblem(
            "member_not_found", 404, "No member has this card number (check digit does not match)."
        )
    member = Member.objects.select_related("user").filter(card_number=card_number).first()
    if member is None:
        raise ApiProblem("member_not_found", 404, "No member has this card number.")
    return member


SUMMARY_EXAMPLE = OpenApiExample(
    "A member",
    value={
        "card_number": "6001234567893", "display_name": "Ayşe K.", "points_balance": 1200,
        "points_pending": 150, "points_value": {"amount": "12.00", "currency": "EUR"},
        "tier": None, "expiring": [{"points": 300, "expires_at": "2027-01-31T23:59:59+00:00"}],
    },
    response_only=True,
)  # fmt: skip


class MemberLookupApi(APIView):
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
                "validation_error", 400, "Give exactly one of card, phone or email.",
                errors={"_": ["Give exactly one of card, phone or email."]},
            )  # fmt: skip
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
        member = Member.objects.select_related("user").filter(query).first()
        if member is None:
            raise ApiProblem("member_not_found", 404, f"No member has this {field}.")
        return Response(member_summary(member))


class MemberDetailApi(APIView):
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


class MemberEnrolApi(APIView):
    required_scope = "members:write"

    class InputSerializer(serializers.Serializer):
        email = serializers.EmailField(required=False, allow_blank=True, max_length=254)
        phone = PhoneE164(required=False, allow_blank=True)
        first_name = SafeText(required=False, allow_blank=True, max_length=150)
        last_name = SafeText(required=False, allow_blank=True, max_length=150)
        marketing_consent = serializers.BooleanField(required=False, default=False)

        def validate(self, data):
            if not data.get("email") and not data.get("phone"):
                raise serializers.ValidationError(
                    {"email": ["Give an e-mail or a phone (or both)."]}
                )
            return data

    @extend_schema(
        operation_id="members_enrol",
        summary="Enrol a shopper at the till",
        request=InputSerializer,
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
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        try:
            member = member_enrol(
                email=(values.get("email") or "").lower() or None,
                phone=values.get("phone") or None,
                first_name=values.get("first_name", ""), last_name=values.get("last_name", ""),
                marketing_consent=values["marketing_consent"],
            )  # fmt: skip
        except MemberExists as exc:
            _member_exists(exc)
        return 201, member_summary(member)


urlpatterns = [
    path("members/lookup", MemberLookupApi.as_view(), name="api-members-lookup"),
    path("members", MemberEnrolApi.as_view(), name="api-members-enrol"),
    path("members/<str:card_number>", MemberDetailApi.as_view(), name="api-members-detail"),
]
