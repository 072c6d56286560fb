"""The ledger's public services refuse bad input with a clear error and write nothing;
and the behaviours a member notices: which lots are spent, when points expire or become
spendable, what a return does to a balance that was already spent, and what points are
worth in money."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from dateutil.relativedelta import relativedelta
from django.db.models import Sum
from django.utils import timezone, translation

from loyalty import ledger, selectors, services
from loyalty.exceptions import (
    AlreadyReversed,
    InsufficientPoints,
    InvalidAccount,
    InvalidPoints,
    NotReversible,
    ReasonRequired,
    UnknownMember,
)
from loyalty.explain import entry_text
from loyalty.ledger import Cause
from loyalty.models import (
    Account,
    AccountKind,
    EntryKind,
    JournalEntry,
    Lot,
    LotMovement,
    Posting,
    Source,
)
from loyalty.money import Money
from members.models import Member
from tests.factories import MemberFactory, StaffFactory

T0 = datetime(2030, 1, 15, 12, 0, tzinfo=UTC)
TILL = Cause(source=Source.API, client="till-1")
SHOPPER = Cause(source=Source.MEMBER)


# --- helpers and fixtures ----------------------------------------------------------


def ledger_state() -> tuple:
    """Everything a refused operation must leave exactly as it was."""
    return (
        JournalEntry.objects.count(),
        Posting.objects.count(),
        Lot.objects.count(),
        LotMovement.objects.count(),
        tuple(Account.objects.order_by("pk").values_list("pk", "balance")),
        tuple(Lot.objects.order_by("pk").values_list("pk", "remaining", "pending")),
    )


def points(member: Member) -> int:
    return selectors.member_balance(member=member).points


def earn(member: Member, amount: int, **kwargs) -> JournalEntry:
    return services.points_credit(
        member=member, points=amount, description="Purchase", cause=TILL, **kwargs
    )


def redeem(member: Member, amount: int) -> JournalEntry:
    return services.points_redeem(member=member, points=amount, description="Reward", cause=SHOPPER)


def lot_of(entry: JournalEntry) -> Lot:
    return Lot.objects.get(entry=entry)


def system_balance(kind: str) -> int:
    return Posting.objects.filter(account__kind=kind).aggregate(s=Sum("amount", default=0))["s"]


class Clock:
    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs) -> datetime:
        self.now += relativedelta(**kwargs)
        return self.now


@pytest.fixture
def clock(monkeypatch):
    """The ledger's idea of "now", moved by the test."""
    clock = Clock(T0)
    monkeypatch.setattr(timezone, "now", clock)
    return clock


@pytest.fixture
def staff(db):
    return StaffFactory()


@pytest.fixture
def charity(db):
    return Account.objects.create(kind=AccountKind.CHARITY, code="charity-x", name="X")


@pytest.fixture
def funded_member(member):
    earn(member, 100)
    return member


# --- bad points --------------------------------------------------------------------

NOT_POSITIVE_WHOLE_NUMBERS = [0, -5, 1.5, 10.0, "10", True, Decimal("10"), None]


@pytest.mark.django_db
@pytest.mark.parametrize("bad", NOT_POSITIVE_WHOLE_NUMBERS, ids=repr)
@pytest.mark.parametrize("operation", ["credit", "redeem", "transfer"])
def test_points_that_are_not_a_positive_whole_number_are_refused(
    funded_member, charity, operation, bad
):
    call = {
        "credit": lambda: earn(funded_member, bad),
        "redeem": lambda: redeem(funded_member, bad),
        "transfer": lambda: services.points_transfer(
            member=funded_member, points=bad, to=charity, description="Gift", cause=SHOPPER
        ),
    }[operation]
    before = ledger_state()
    with pytest.raises(InvalidPoints, match="Points must be a positive whole number"):
        call()
    assert ledger_state() == before
    assert points(funded_member) == 100


@pytest.mark.django_db
@pytest.mark.parametrize("bad", [0, 1.5, -1.5, "10", "-10", True, False, Decimal("5"), None])
def test_adjustment_by_zero_or_a_non_integer_is_refused(funded_member, staff, bad):
    before = ledger_state()
    with pytest.raises(InvalidPoints):
        services.points_adjust(member=funded_member, points=bad, reason="Typo", staff=staff)
    assert ledger_state() == before


@pytest.mark.django_db
def test_redeem_refuses_more_than_balance(funded_member):
    before = ledger_state()
    with pytest.raises(InsufficientPoints, match="Balance is 100 points; 101 were asked"):
        redeem(funded_member, 101)
    assert ledger_state() == before


@pytest.mark.django_db
def test_negative_adjustment_beyond_the_balance_is_refused(funded_member, staff):
    before = ledger_state()
    with pytest.raises(InsufficientPoints):
        services.points_adjust(member=funded_member, points=-101, reason="Duplicate", staff=staff)
    assert ledger_state() == before


@pytest.mark.django_db
def test_transfer_refuses_more_than_balance(funded_member, charity):
    before = ledger_state()
    with pytest.raises(InsufficientPoints):
        services.points_transfer(
            member=funded_member, points=101, to=charity, description="Gift", cause=SHOPPER
        )
    assert ledger_state() == before


# --- unknown members ---------------------------------------------------------------
# Services take Member objects: finding the member (by card, phone, e-mail) is the
# caller's job. A Member that is not in the database gets a clear UnknownMember and
# never any ledger rows, whether it was never saved or has been deleted.


def _each_service(member, staff, charity):
    return {
        "credit": lambda: earn(member, 10),
        "redeem": lambda: redeem(member, 10),
        "transfer": lambda: services.points_transfer(
            member=member, points=10, to=charity, description="Gift", cause=SHOPPER
        ),
        "adjust up": lambda: services.points_adjust(
            member=member, points=10, reason="Goodwill", staff=staff
        ),
        "adjust down": lambda: services.points_adjust(
            member=member, points=-10, reason="Typo", staff=staff
        ),
    }


@pytest.mark.django_db
@pytest.mark.parametrize("operation", ["credit", "redeem", "transfer", "adjust up", "adjust down"])
def test_a_member_that_was_never_saved_is_refused_and_nothing_is_written(staff, charity, operation):
    before = ledger_state()
    with pytest.raises(UnknownMember):
        _each_service(Member(first_name="Nobody"), staff, charity)[operation]()
    assert ledger_state() == before


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("operation", ["credit", "redeem", "transfer", "adjust up", "adjust down"])
def test_a_deleted_member_is_refused_and_nothing_is_written(operation):
    # transaction=True: nothing may reach the database, even at commit.
    staff = StaffFactory()
    charity = Account.objects.create(kind=AccountKind.CHARITY, code="charity-x", name="X")
    gone = MemberFactory()
    Member.objects.filter(pk=gone.pk).delete()
    before = ledger_state()
    with pytest.raises(UnknownMember):
        _each_service(gone, staff, charity)[operation]()
    assert ledger_state() == before
    assert not Account.objects.filter(member_id=gone.pk).exists()


# --- adjustments need a reason -----------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("reason", ["", "   ", "\n\t ", None], ids=repr)
@pytest.mark.parametrize("amount", [50, -50])
def test_adjustment_without_a_reason_is_refused(funded_member, staff, reason, amount):
    before = ledger_state()
    with pytest.raises(ReasonRequired):
        services.points_adjust(member=funded_member, points=amount, reason=reason, staff=staff)
    assert ledger_state() == before


@pytest.mark.django_db
def test_adjustment_records_the_staff_member_and_the_trimmed_reason(member, staff):
    entry = services.points_adjust(
        member=member, points=40, reason="  Late delivery  ", staff=staff
    )
    assert (entry.kind, entry.created_by, entry.reason) == (
        EntryKind.ADJUSTMENT,
        staff,
        "Late delivery",
    )
    assert entry_text(entry) == "Adjusted by our team: Late delivery"
    assert points(member) == 40


# --- reversals that must be refused ------------------------------------------------


def _reverse(entry: JournalEntry) -> JournalEntry:
    return services.entry_reverse(entry=entry, cause=Cause.system("Returned"))


@pytest.mark.django_db
@pytest.mark.parametrize("original", ["earn", "redeem"])
def test_reversing_an_entry_twice_is_refused(member, original):
    purchase = earn(member, 100)
    entry = purchase if original == "earn" else redeem(member, 60)
    _reverse(entry)
    before = ledger_state()
    with pytest.raises(AlreadyReversed):
        _reverse(JournalEntry.objects.get(pk=entry.pk))
    assert ledger_state() == before


@pytest.mark.django_db
def test_a_reversal_cannot_be_reversed(member):
    reversal = _reverse(earn(member, 100))
    before = ledger_state()
    with pytest.raises(NotReversible):
        _reverse(reversal)
    assert ledger_state() == before


@pytest.mark.django_db
def test_an_expiry_cannot_be_reversed(member, clock):
    earn(member, 100)
    services.lots_expire_due(now=clock.advance(months=12))
    expiry = JournalEntry.objects.get(kind=EntryKind.EXPIRY)
    before = ledger_state()
    with pytest.raises(NotReversible):
        _reverse(expiry)
    assert ledger_state() == before
    assert points(member) == 0


@pytest.mark.django_db
def test_a_maturation_cannot_be_reversed(member, clock):
    earn(member, 100, pending_days=14)
    services.pending_mature_due(now=clock.advance(days=14))
    maturation = JournalEntry.objects.get(kind=EntryKind.MATURATION)
    before = ledger_state()
    with pytest.raises(NotReversible):
        _reverse(maturation)
    assert ledger_state() == before
    assert points(member) == 100


# --- transfers go only to charities and partners -----------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "target",
    ["issuance", "redemption", "expiry", "adjustment", "own account", "own pending", "other"],
)
def test_transfer_to_an_account_that_is_not_a_charity_or_partner_is_refused(funded_member, target):
    other = MemberFactory()
    earn(other, 5)
    to = {
        "own account": lambda: Account.objects.get(member=funded_member, kind=AccountKind.MEMBER),
        "own pending": lambda: Account.objects.get(
            member=funded_member, kind=AccountKind.MEMBER_PENDING
        ),
        "other": lambda: Account.objects.get(member=other, kind=AccountKind.MEMBER),
    }.get(target, lambda: ledger.system_account(target))()
    before = ledger_state()
    with pytest.raises(InvalidAccount):
        services.points_transfer(
            member=funded_member, points=10, to=to, description="Gift", cause=SHOPPER
        )
    assert ledger_state() == before


@pytest.mark.django_db
@pytest.mark.parametrize("kind", [AccountKind.CHARITY, AccountKind.PARTNER])
def test_transfer_to_a_charity_or_partner_moves_the_points(funded_member, kind):
    to = Account.objects.create(kind=kind, code=f"{kind}-x", name="Seaside Shelter")
    entry = services.points_transfer(
        member=funded_member, points=30, to=to, description="Donation", cause=SHOPPER
    )
    assert points(funded_member) == 70
    assert system_balance(kind) == 30
    assert entry_text(entry) == "Given to Seaside Shelter: Donation"


# --- which lots are spent ----------------------------------------------------------


@pytest.mark.django_db
def test_redeem_takes_points_from_the_soonest_expiring_lot_first(member, clock):
    late = earn(member, 100, expires_at=T0 + timedelta(days=300))
    soon = earn(member, 50, expires_at=T0 + timedelta(days=30))
    middle = earn(member, 100, expires_at=T0 + timedelta(days=100))

    redemption = redeem(member, 120)

    assert [lot_of(e).remaining for e in (soon, middle, late)] == [0, 30, 100]
    taken = [(m.lot.entry_id, m.points) for m in selectors.entry_lot_movements(entry=redemption)]
    assert taken == [(soon.pk, -50), (middle.pk, -70)]


@pytest.mark.django_db
def test_never_expiring_points_are_spent_after_expiring_ones(member, clock):
    settings = ledger.program_settings()
    settings.points_lifetime_months = None
    settings.save()
    forever = earn(member, 100)
    settings.points_lifetime_months = 12
    settings.save()
    clock.advance(days=1)
    dated = earn(member, 100)
    assert lot_of(forever).expires_at is None

    redeem(member, 150)

    assert (lot_of(dated).remaining, lot_of(forever).remaining) == (0, 50)


# --- expiry ------------------------------------------------------------------------


@pytest.mark.django_db
def test_expiry_moves_exactly_the_due_remainder_to_the_expiry_account(member, clock):
    first = earn(member, 100)  # expires T0 + 12 months
    clock.advance(months=1)
    redeem(member, 30)  # from the first lot, which expires first
    clock.advance(months=1)
    second = earn(member, 40)  # expires T0 + 14 months

    clock.advance(months=10)
    assert services.lots_expire_due(now=clock.now) == 70

    assert points(member) == 40
    assert (lot_of(first).remaining, lot_of(second).remaining) == (0, 40)
    assert system_balance(AccountKind.EXPIRY) == 70
    expiry = JournalEntry.objects.get(kind=EntryKind.EXPIRY)
    assert expiry.member == member
    history = selectors.member_history(member=member)
    assert history.get(pk=expiry.pk).points == -70
    with translation.override("en"):
        assert entry_text(expiry) == (
            "Expired: points earned on Jan. 15, 2030 reached the end of their lifetime"
        )

    before = ledger_state()
    assert services.lots_expire_due(now=clock.now) == 0, "a second run expires nothing"
    assert ledger_state() == before


@pytest.mark.django_db
def test_a_lot_expires_at_its_expiry_instant_not_a_moment_before(member, clock):
    earn(member, 100)
    expires_at = T0 + relativedelta(months=12)
    assert services.lots_expire_due(now=expires_at - timedelta(microseconds=1)) == 0
    assert services.lots_expire_due(now=expires_at) == 100
    assert points(member) == 0


@pytest.mark.django_db
def test_points_can_be_spent_until_the_expiry_job_takes_them(member, clock):
    earn(member, 100, effective_at=T0 - relativedelta(months=13))  # overdue, job not run yet
    redeem(member, 60)
    assert services.lots_expire_due(now=clock.now) == 40
    assert points(member) == 0


# --- pending points ----------------------------------------------------------------


@pytest.mark.django_db
def test_pending_points_are_not_spendable_until_the_return_window_closes(member, clock):
    purchase = earn(member, 100, pending_days=14)
    balance = selectors.member_balance(member=member)
    assert (balance.points, balance.pending) == (0, 100)
    before = ledger_state()
    with pytest.raises(InsufficientPoints):
        redeem(member, 1)
    assert ledger_state() == before

    assert services.pending_mature_due(now=clock.advance(days=13)) == 0
    assert services.pending_mature_due(now=clock.advance(days=1)) == 1

    balance = selectors.member_balance(member=member)
    assert (balance.points, balance.pending) == (100, 0)
    assert not lot_of(purchase).pending
    maturation = JournalEntry.objects.get(kind=EntryKind.MATURATION)
    assert entry_text(maturation) == "Now available: pending points passed the return window"
    redeem(member, 100)
    assert points(member) == 0


@pytest.mark.django_db
def test_the_programs_return_window_applies_when_none_is_given(member, clock):
    settings = ledger.program_settings()
    settings.pending_days = 7
    settings.save()
    earn(member, 100)
    assert selectors.member_balance(member=member).pending == 100
    services.pending_mature_due(now=clock.advance(days=7))
    assert points(member) == 100


@pytest.mark.django_db
def test_returning_a_purchase_inside_its_window_takes_the_pending_points(member, clock):
    purchase = earn(member, 100, pending_days=14)
    _reverse(purchase)
    balance = selectors.member_balance(member=member)
    assert (balance.points, balance.pending) == (0, 0)
    assert services.pending_mature_due(now=clock.advance(days=14)) == 0
    assert not JournalEntry.objects.filter(kind=EntryKind.MATURATION).exists()


@pytest.mark.django_db
def test_matured_points_pay_off_a_debt_first(member, clock):
    purchase = earn(member, 100)
    redeem(member, 100)
    _reverse(purchase)
    pending = earn(member, 150, pending_days=14)
    assert points(member) == -100

    services.pending_mature_due(now=clock.advance(days=14))

    assert points(member) == 50
    assert lot_of(pending).remaining == 50


# --- returns of points already spent (clawback) ------------------------------------


@pytest.mark.django_db
def test_returning_a_purchase_whose_points_were_spent_leaves_a_debt_paid_off_first(member):
    purchase = earn(member, 100)
    redeem(member, 100)

    _reverse(purchase)

    balance = selectors.member_balance(member=member)
    assert balance.points == -100
    assert balance.value == Money(Decimal("-1.00"), "EUR")
    before = ledger_state()
    with pytest.raises(InsufficientPoints, match="Balance is -100 points"):
        redeem(member, 1)
    assert ledger_state() == before

    next_purchase = earn(member, 150)
    assert points(member) == 50
    assert lot_of(next_purchase).remaining == 50, "the debt was paid off from the new lot"
    redeem(member, 50)
    with pytest.raises(InsufficientPoints):
        redeem(member, 1)


@pytest.mark.django_db
def test_returning_a_purchase_takes_its_own_lot_first(member):
    older = earn(member, 100, expires_at=T0 + timedelta(days=30))
    returned = earn(member, 100, expires_at=T0 + timedelta(days=300))
    _reverse(returned)
    assert (lot_of(older).remaining, lot_of(returned).remaining) == (100, 0)
    assert points(member) == 100


@pytest.mark.django_db
@pytest.mark.parametrize(("spent", "owed"), [(0, 0), (30, 30)])
def test_returning_a_purchase_whose_points_expired_claws_back_only_what_was_spent(
    member, clock, spent, owed
):
    """Expired points already left the member (to breakage); a later return must not take
    them a second time. Only points actually spent may become a debt (DESIGN.md: returns
    may go below zero as "a clawback of points already spent")."""
    purchase = earn(member, 100)
    if spent:
        redeem(member, spent)
    services.lots_expire_due(now=clock.advance(months=12))
    assert points(member) == 0

    _reverse(purchase)

    assert points(member) == -owed
    assert system_balance(AccountKind.EXPIRY) == 0, "the breakage is given back"
    assert system_balance(AccountKind.ISSUANCE) == 0, "the purchase's points are void"


# --- reversing a redemption --------------------------------------------------------


@pytest.mark.django_db
def test_reversing_a_redemption_gives_points_back_to_the_lots_they_came_from(member, clock):
    soon = earn(member, 100, expires_at=T0 + timedelta(days=30))
    late = earn(member, 100, expires_at=T0 + timedelta(days=300))
    redemption = redeem(member, 150)
    assert (lot_of(soon).remaining, lot_of(late).remaining) == (0, 50)

    reversal = _reverse(redemption)

    assert (lot_of(soon).remaining, lot_of(late).remaining) == (100, 100)
    assert not Lot.objects.filter(entry=reversal).exists()
    assert points(member) == 200
    assert entry_text(reversal) == "Reversed: Reward"


@pytest.mark.django_db
def test_reversing_a_redemption_after_its_lot_expired_gives_a_fresh_lot(member, clock):
    purchase = earn(member, 100)  # expires T0 + 12 months
    redemption = redeem(member, 60)
    assert services.lots_expire_due(now=clock.advance(months=12)) == 40

    reversal = _reverse(redemption)

    assert points(member) == 60
    assert lot_of(purchase).remaining == 0
    fresh = lot_of(reversal)
    assert (fresh.points, fresh.remaining) == (60, 60)
    assert fresh.expires_at == clock.now + relativedelta(months=12)
    assert services.lots_expire_due(now=clock.now) == 0


@pytest.mark.django_db
def test_reversing_a_redemption_pays_off_a_debt_first(member):
    first = earn(member, 100)
    second = earn(member, 50)
    redemption = redeem(member, 150)
    _reverse(first)
    assert points(member) == -100

    _reverse(redemption)

    assert points(member) == 50
    assert Lot.objects.filter(account__member=member).aggregate(s=Sum("remaining"))["s"] == 50
    assert lot_of(first).remaining + lot_of(second).remaining == 50


# --- money value -------------------------------------------------------------------


@pytest.mark.django_db
def test_balance_is_worth_points_times_the_programs_point_value(member):
    settings = ledger.program_settings()
    settings.point_value = Decimal("0.005")
    settings.save()
    earn(member, 1234)
    earn(member, 101, pending_days=3)

    balance = selectors.member_balance(member=member)

    assert balance.points == 1234
    assert balance.value == Money(Decimal("6.17"), "EUR")
    assert balance.pending_value == Money(Decimal("0.51"), "EUR")  # 0.505, half up


@pytest.mark.django_db
def test_money_value_is_rounded_to_the_currencys_minor_unit(member):
    settings = ledger.program_settings()
    settings.currency = "JPY"
    settings.point_value = Decimal("0.5")
    settings.save()
    earn(member, 3)
    assert selectors.member_balance(member=member).value == Money(Decimal("2"), "JPY")
