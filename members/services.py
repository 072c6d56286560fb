from django.db import IntegrityError, transaction

from members.cards import card_number_generate
from members.models import Member, User

_CARD_ATTEMPTS = 8


def member_create(
    *,
    user: User | None = None,
    first_name: str = "",
    last_name: str = "",
    phone: str | None = None,
    marketing_consent: bool = False,
) -> Member:
    """Enrol a member with a fresh, unique card number.

    A random card number can collide with an existing one; the unique constraint
    decides and we draw again, inside a savepoint so the caller's transaction survives.
    """
    for _attempt in range(_CARD_ATTEMPTS):
        number = card_number_generate()
        try:
            with transaction.atomic():
                return Member.objects.create(
                    user=user,
                    card_number=number,
                    first_name=first_name,
                    last_name=last_name,
                    phone=phone or None,
                    marketing_consent=marketing_consent,
                )
        except IntegrityError:
            if not Member.objects.filter(card_number=number).exists():
                raise  # another unique field (user, phone) clashed: not ours to retry
    raise RuntimeError("Could not draw an unused card number; the number space is crowded.")


def member_for_user(*, user: User, marketing_consent: bool = False) -> Member:
    """The member profile of a login, creating it on first use (e.g. a staff user who shops).
    `marketing_consent` applies only when the member is created here."""
    try:
        return user.member
    except Member.DoesNotExist:
        pass
    try:
        with transaction.atomic():
            return member_create(
                user=user,
                first_name=user.first_name,
                last_name=user.last_name,
                marketing_consent=marketing_consent,
            )
    except IntegrityError:
        # Another request created it first.
        return Member.objects.get(user=user)


class MemberExists(Exception):
    code = "member_exists"

    def __init__(self, member: Member):
        super().__init__("A member with this e-mail or phone already exists.")
        self.message = str(self)
        self.member = member


def member_find_existing(*, email: str | None, phone: str | None) -> Member | None:
    query = Member.objects.none()
    if email:
        query |= Member.objects.filter(user__email__iexact=email)
    if phone:
        query |= Member.objects.filter(phone=phone)
    return query.first()


def member_enrol(
    *,
    email: str | None,
    phone: str | None,
    first_name: str = "",
    last_name: str = "",
    marketing_consent: bool = False,
) -> Member:
    """Enrol a shopper at the till or online. With an e-mail, a login is made that the
    shopper claims later through "forgot password"; raises MemberExists on a duplicate.
    Runs inside the caller's transaction."""
    existing = member_find_existing(email=email, phone=phone)
    if existing is not None:
        raise MemberExists(existing)
    try:
        with transaction.atomic():
            user = None
            if email:
                # A login (e.g. staff) without a membership gets one attached.
                user = User.objects.filter(email__iexact=email).first()
                if user is None:
                    user = User.objects.create_user(
                        email=email, password=None, first_name=first_name, last_name=last_name
                    )
            return member_create(
                user=user, first_name=first_name, last_name=last_name, phone=phone,
                marketing_consent=marketing_consent,
            )  # fmt: skip
    except IntegrityError:
        # A concurrent enrolment won the race on a unique e-mail or phone.
        existing = member_find_existing(email=email, phone=phone)
        if existing is None:
            raise
        raise MemberExists(existing) from None
