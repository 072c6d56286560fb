from django.contrib.auth.base_user import AbstractBaseUser, BaseUserManager
from django.contrib.auth.models import PermissionsMixin
from django.db import models
from django.db.models.functions import ExtractDay, ExtractMonth, Lower
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from members.validators import birth_date_validate, phone_validate


class UserManager(BaseUserManager):
    use_in_migrations = True

    def _create_user(self, email, password, **extra):
        if not email:
            raise ValueError("An e-mail address is required.")
        user = self.model(email=self.normalize_email(email).lower(), **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_user(self, email, password=None, **extra):
        extra.setdefault("is_staff", False)
        extra.setdefault("is_superuser", False)
        return self._create_user(email, password, **extra)

    def create_superuser(self, email, password=None, **extra):
        extra.setdefault("is_staff", True)
        extra.setdefault("is_superuser", True)
        return self._create_user(email, password, **extra)


class User(AbstractBaseUser, PermissionsMixin):
    """A login: members and staff alike sign in with their e-mail address."""

    email = models.EmailField(_("e-mail address"), unique=True)
    first_name = models.CharField(_("first name"), max_length=150, blank=True)
    last_name = models.CharField(_("last name"), max_length=150, blank=True)
    is_staff = models.BooleanField(_("staff status"), default=False)
    is_active = models.BooleanField(_("active"), default=True)
    date_joined = models.DateTimeField(_("date joined"), default=timezone.now)

    objects = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS: list[str] = []

    class Meta:
        verbose_name = _("user")
        verbose_name_plural = _("users")
        constraints = [
            models.UniqueConstraint(Lower("email"), name="user_email_ci_unique"),
        ]

    def __str__(self) -> str:
        return self.email

    def get_full_name(self) -> str:
        return f"{self.first_name} {self.last_name}".strip() or self.email

    def get_short_name(self) -> str:
        return self.first_name or self.email


class Member(models.Model):
    """A shopper in the program. May exist without a login (enrolled at the till)."""

    user = models.OneToOneField(
        User, on_delete=models.PROTECT, null=True, blank=True, related_name="member"
    )
    card_number = models.CharField(_("card number"), max_length=13, unique=True, editable=False)
    first_name = models.CharField(_("first name"), max_length=150, blank=True)
    last_name = models.CharField(_("last name"), max_length=150, blank=True)
    phone = models.CharField(
        _("phone (E.164)"), max_length=16, null=True, blank=True, unique=True,
        validators=[phone_validate],
    )  # fmt: skip
    # Members set it once on their profile; later changes go through staff, so a birthday
    # gift can't be had twice by editing it.
    birth_date = models.DateField(
        _("birth date"), null=True, blank=True, validators=[birth_date_validate]
    )
    marketing_consent = models.BooleanField(_("marketing consent"), default=False)
    created_at = models.DateTimeField(_("joined"), default=timezone.now, editable=False)
    # When the member first had a complete profile (the "profile completed" activity).
    profile_completed_at = models.DateTimeField(
        _("profile completed"), null=True, blank=True, editable=False
    )

    class Meta:
        verbose_name = _("member")
        verbose_name_plural = _("members")
        constraints = [
            models.CheckConstraint(
                condition=models.Q(card_number__regex=r"^[0-9]{13}$"), name="member_card_13_digits"
            ),
        ]
        indexes = [
            # The birthday job asks for today's birthdays: (month, day) of those who gave one.
            models.Index(
                ExtractMonth("birth_date"),
                ExtractDay("birth_date"),
                name="member_birthday",
                condition=models.Q(birth_date__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.display_name} ({self.card_number})"

    @property
    def email(self) -> str:
        return self.user.email if self.user_id else ""

    @property
    def profile_complete(self) -> bool:
        """Everything the profile page asks for is there (consent is a choice, not a gap)."""
        return bool(self.first_name and self.last_name and self.phone and self.birth_date)

    @property
    def display_name(self) -> str:
        """The friendly short form shown at the till: "Ayşe K."."""
        if self.first_name:
            initial = f" {self.last_name[0]}." if self.last_name else ""
            return f"{self.first_name}{initial}"
        return self.email.split("@")[0] if self.user_id else self.card_number
