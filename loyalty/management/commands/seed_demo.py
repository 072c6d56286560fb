"""Demo data for a first look: the program, a shopper with a history, and a staff user.

Safe to run again: it only adds what is missing, so `make run` can call it every time.
"""

from datetime import timedelta
from decimal import Decimal

from allauth.account.models import EmailAddress
from dateutil.relativedelta import relativedelta
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from loyalty import ledger, services
from loyalty.ledger import Cause
from loyalty.models import Account, AccountKind, MembershipPlan, Tier
from loyalty.purchases import LineIn, purchase_record
from members.models import Member, User
from members.services import member_for_user
from partners.keys import key_hash, key_split
from partners.models import ApiKey, Partner, Scope, Store, Terminal

DEMO_MEMBER = ("demo@tally.example", "demo-points-2026")
DEMO_PLUS_MEMBER = ("plus@tally.example", "plus-points-2026")
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
        self._tiers()
        self._spend(member, store)
        plus = self._plans()
        self._plus_member(plus, store)
        self.stdout.write(self.style.SUCCESS("Demo data ready."))
        for place, url, (email, password) in [
            ("Member portal", "/", DEMO_MEMBER),
            ("Plus member", "/", DEMO_PLUS_MEMBER),
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

    def _tiers(self) -> None:
        """Three tiers, Sephora-style; an existing tier (maybe edited by staff) is kept."""
        for code, name, rank, threshold, multiplier, birthday, exclusive, perks in [
            ("insider", "Insider", 0, 0, "1", 100, False, "Free samples with online orders"),
            ("vib", "VIB", 1, 350, "1.25", 250, False,
             "Free standard shipping\nEarly access to sales"),
            ("rouge", "Rouge", 2, 1000, "1.5", 500, True,
             "Free express shipping\nInvitations to private events"),
        ]:  # fmt: skip
            Tier.objects.get_or_create(
                code=code,
                defaults={
                    "name": name, "rank": rank, "threshold": Decimal(threshold),
                    "earn_multiplier": Decimal(multiplier), "birthday_points": birthday,
                    "exclusive_rewards": exclusive, "perks": perks,
                },
            )  # fmt: skip

    def _plans(self) -> MembershipPlan:
        """A paid plan that clearly beats the free tiers: VIB at once (free members need
        350 EUR of spend for it), +0.5× on top of VIB's 1.25× (1.75× the base points against
        Rouge's 1.5×) and 200 bonus points a year, for 49 EUR. Kept if it exists."""
        plan, _ = MembershipPlan.objects.get_or_create(
            code="plus",
            defaults={
                "name": "Plus", "sku": "PLUS-1Y", "fee": Decimal("49.00"), "term_months": 12,
                "tier": Tier.objects.filter(code="vib").first(),
                "earn_multiplier": Decimal("1.5"), "bonus_points": 200,
                "perks": "Free gift wrapping\nA beauty consultation each season",
            },
        )  # fmt: skip
        return plan

    def _plus_member(self, plan: MembershipPlan, store) -> None:
        """A second shopper who bought Plus at the till a month ago (through the POS path,
        so the bonus, the tier and the membership are real); added once."""
        user = self._user(*DEMO_PLUS_MEMBER, first_name="Deniz", last_name="Yılmaz")
        member = member_for_user(user=user)
        if member.purchases.exists():
            return
        till = Cause(source="api", client="demo-till")
        settings = ledger.program_settings()
        bought = timezone.now() - timedelta(days=30)
        for receipt, at, lines in [
            ("R-3001", bought, [LineIn(sku=plan.sku, quantity=Decimal(1), unit_price=plan.fee)]),
            ("R-3042", bought + timedelta(days=10),
             [LineIn(sku="EDP-50", quantity=Decimal(1), unit_price=Decimal("80.00"))]),
        ]:  # fmt: skip
            with transaction.atomic():
                purchase_record(
                    store=store, member=member, receipt_id=receipt, occurred_at=at,
                    currency=settings.currency, total=sum(li.amount for li in lines),
                    lines=lines, cause=till,
                )  # fmt: skip

    def _spend(self, member, store) -> None:
        """Two past purchases (260 EUR, VIB starts at 350) so the tier progress bar shows
        something; added once."""
        if member.purchases.exists():
            return
        now = timezone.now()
        till = Cause(source="api", client="demo-till")
        settings = ledger.program_settings()
        for receipt, days_ago, sku, price in [
            ("R-2001", 75, "SERUM-30", Decimal("145.00")),
            ("R-2077", 20, "EDP-50", Decimal("115.00")),
        ]:
            with transaction.atomic():
                purchase_record(
                    store=store, member=member, receipt_id=receipt,
                    occurred_at=now - timedelta(days=days_ago), currency=settings.currency,
                    total=price, lines=[LineIn(sku=sku, quantity=Decimal(1), unit_price=price)],
                    cause=till,
                )  # fmt: skip

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
