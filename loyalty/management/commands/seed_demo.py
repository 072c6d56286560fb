"""Demo data for a first look: the program, a shopper with a history, and a staff user.

Safe to run again: it only adds what is missing, so `make run` can call it every time.
"""

from datetime import timedelta

from allauth.account.models import EmailAddress
from dateutil.relativedelta import relativedelta
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from loyalty import ledger, services
from loyalty.ledger import Cause
from loyalty.models import Account, AccountKind
from members.models import Member, User
from members.services import member_for_user
from partners.keys import key_hash, key_split
from partners.models import ApiKey, Partner, Scope, Store, Terminal

DEMO_MEMBER = ("demo@tally.example", "demo-points-2026")
DEMO_STAFF = ("staff@tally.example", "staff-points-2026")
# A fixed key so the README's curl examples work against `make run`. Demo data only:
# real keys come from `create_api_key` or the back office and are random.
DEMO_CARD = "6000000000011"
DEMO_API_KEY = "tly_demokey1_local-demo-secret-never-use-in-production"


class Command(BaseCommand):
    help = "Create the demo program, a demo member with history and a staff user (idempotent)."

    def handle(self, *args, **options):
        with transaction.atomic():
            settings = ledger.program_settings()
            if settings.name == "Tally Rewards":
                settings.name = "Tally Demo Rewards"
                settings.save()
        staff = self._user(
            *DEMO_STAFF, first_name="Sam", last_name="Staff", is_staff=True, is_superuser=True
        )
        shopper = self._user(*DEMO_MEMBER, first_name="Ayşe", last_name="Kaya")
        member = member_for_user(user=shopper)
        if not member.entries.exists():
            # A fixed card number so the README's curl examples work as written.
            if not Member.objects.filter(card_number=DEMO_CARD).exists():
                Member.objects.filter(pk=member.pk).update(card_number=DEMO_CARD)
                member.refresh_from_db()
            self._history(member, staff)
        store = self._store()
        self.stdout.write(self.style.SUCCESS("Demo data ready."))
        for place, url, (email, password) in [
            ("Member portal", "/", DEMO_MEMBER),
            ("Back office", "/admin/", DEMO_STAFF),
        ]:
            self.stdout.write(
                f"  {place + ':':15}http://127.0.0.1:8000{url}  login {email} / {password}"
            )
        self.stdout.write(f"  Demo member card number: {member.card_number}")
        self.stdout.write(f"  POS API (store {store.code}, all scopes): Api-Key {DEMO_API_KEY}")
        self.stdout.write("  API docs:      http://127.0.0.1:8000/api/docs/")

    def _store(self) -> Store:
        retailer, _ = Partner.objects.get_or_create(
            code="tally-demo", defaults={"name": "Tally Demo Retail", "kind": Partner.Kind.RETAILER}
        )
        store, _ = Store.objects.get_or_create(
            code="kadikoy", defaults={"partner": retailer, "name": "Kadıköy store"}
        )
        till, _ = Terminal.objects.get_or_create(store=store, name="Till 1")
        prefix, secret = key_split(DEMO_API_KEY)
        ApiKey.objects.get_or_create(
            prefix=prefix,
            defaults={"terminal": till, "name": "Demo till key", "hashed_secret": key_hash(secret),
                      "scopes": list(Scope.values)},
        )  # fmt: skip
        return store

    def _user(self, email, password, **fields):
        user = User.objects.filter(email=email).first()
        if user is None:
            user = User.objects.create_user(email=email, password=password, **fields)
        EmailAddress.objects.get_or_create(
            user=user, email=email, defaults={"verified": True, "primary": True}
        )
        return user

    def _history(self, member, staff):
        """A year of shopping: some points expire within the notice window, some are pending."""
        now = timezone.now()
        settings = ledger.program_settings()
        lifetime = relativedelta(months=settings.points_lifetime_months or 12)
        till = Cause(source="api", client="demo-till")
        soon = now - lifetime + timedelta(days=12)  # earned ~a year ago: expires in 12 days
        services.points_credit(
            member=member,
            points=320,
            description="Purchase R-1001 at Kadıköy store",
            cause=till,
            effective_at=soon,
            pending_days=0,
        )
        services.points_credit(
            member=member,
            points=180,
            description="Purchase R-1187 at Moda store",
            cause=till,
            effective_at=now - lifetime + timedelta(days=45),
            pending_days=0,
        )
        services.points_credit(
            member=member,
            points=1240,
            description="Online order W-5521",
            cause=Cause(source="api", client="demo-webshop"),
            effective_at=now - timedelta(days=60),
            pending_days=0,
        )
        services.points_redeem(
            member=member, points=150, description="1.50 off purchase R-1203", cause=till
        )
        charity, _ = Account.objects.get_or_create(
            code="charity-food-bank",
            defaults={"kind": AccountKind.CHARITY, "name": "City Food Bank"},
        )
        services.points_transfer(
            member=member,
            points=100,
            to=charity,
            description="Winter appeal donation",
            cause=Cause(source="member"),
        )
        services.points_adjust(
            member=member,
            points=50,
            staff=staff,
            reason="Sorry the store was out of your size: 50 points on us",
        )
        services.points_credit(
            member=member,
            points=95,
            description="Purchase R-1342 at Kadıköy store",
            cause=till,
            pending_days=14,
        )
