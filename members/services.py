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
        try:
            with transaction.atomic():
                return Member.objects.create(
                    user=user,
                    card_number=card_number_generate(),
                    first_name=first_name,
                    last_name=last_name,
                    phone=phone or None,
                    marketing_consent=marketing_consent,
                )
        except IntegrityError:
            if user is not None and Member.objects.filter(user=user).exists():
                raise
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
