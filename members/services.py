from datetime import date

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from members.cards import card_number_generate
from members.models import Member, User
from members.signals import member_enrolled, member_profile_completed
from members.validators import birth_date_validate, phone_normalise, phone_validate

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
                member = Member.objects.create(
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
            continue
        # Outside the savepoint: a subscriber's error is not mistaken for a card clash.
        member_enrolled.send(sender=Member, member=member)
        return member
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


PHONE_TAKEN = _("Another member already uses this number. If it is yours, ask our team to move it.")
NAME_MAX = Member._meta.get_field("first_name").max_length
NAME_TOO_LONG = _("Use at most %(n)s characters.")
BIRTH_DATE_SET = _(
    "Your birth date is already set. To correct it, ask our team: it decides your birthday gift."
)


class ProfileInvalid(Exception):
    """What is wrong with a profile edit, by field, in words the member reads."""

    def __init__(self, errors: dict[str, str]):
        super().__init__("; ".join(f"{field}: {message}" for field, message in errors.items()))
        self.errors = errors


def member_profile_update(
    *,
    member: Member,
    first_name: str,
    last_name: str,
    phone: str | None,
    marketing_consent: bool,
    birth_date: date | None = None,
) -> Member:
    """A member edits their own profile. The birth date can be set once: a different one
    later is refused (staff correct it in the back office), so a birthday gift can't be
    had twice by editing it; None keeps what is there. The first time the profile is
    complete, `member_profile_completed` is sent (loyalty credits the activity rules).
    One durable transaction; raises ProfileInvalid with nothing written."""
    phone = phone_normalise(phone or "") or None
    errors: dict[str, str] = {}
    for field, value in (("first_name", first_name), ("last_name", last_name)):
        if len(value) > NAME_MAX:
            errors[field] = str(NAME_TOO_LONG) % {"n": NAME_MAX}
    for field, value, check in (
        ("phone", phone, phone_validate),
        ("birth_date", birth_date, birth_date_validate),
    ):
        try:
            check(value)
        except ValidationError as error:
            errors[field] = error.messages[0]
    if errors:
        raise ProfileInvalid(errors)
    try:
        with transaction.atomic(durable=True):
            return _profile_save(
                member=member, first_name=first_name.strip(), last_name=last_name.strip(),
                phone=phone, marketing_consent=marketing_consent, birth_date=birth_date,
            )  # fmt: skip
    except IntegrityError:
        # Another member took the number between our check and the save.
        if phone and Member.objects.filter(phone=phone).exclude(pk=member.pk).exists():
            raise ProfileInvalid({"phone": str(PHONE_TAKEN)}) from None
        raise


def _profile_save(*, member, first_name, last_name, phone, marketing_consent, birth_date):
    # NO KEY UPDATE: concurrent saves of this profile queue here, while a purchase that
    # references the member row (a KEY SHARE lock) is not blocked by it.
    locked = Member.objects.select_for_update(no_key=True).get(pk=member.pk)
    if birth_date is not None and locked.birth_date not in (None, birth_date):
        raise ProfileInvalid({"birth_date": str(BIRTH_DATE_SET)})
    if phone and Member.objects.filter(phone=phone).exclude(pk=member.pk).exists():
        raise ProfileInvalid({"phone": str(PHONE_TAKEN)})
    locked.first_name, locked.last_name = first_name, last_name
    locked.phone, locked.marketing_consent = phone, marketing_consent
    locked.birth_date = locked.birth_date or birth_date
    fields = ["first_name", "last_name", "phone", "marketing_consent", "birth_date"]
    first_completion = locked.profile_complete and locked.profile_completed_at is None
    if first_completion:
        # Before the row is written: the subscribers lock the member's ledger accounts, and
        # every ledger writer takes those before it touches the member row, never after.
        locked.profile_completed_at = timezone.now()
        fields.append("profile_completed_at")
        member_profile_completed.send(sender=Member, member=locked)
    locked.save(update_fields=fields)
    for field in fields:
        setattr(member, field, getattr(locked, field))
    return member
