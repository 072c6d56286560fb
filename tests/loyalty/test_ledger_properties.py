"""Random sequences of ledger operations, through the public services, must keep every
invariant listed in loyalty/ledger.py's docstring, and agree with a small model of what
each member should be able to spend.

The machine owns a simulated clock: `django.utils.timezone.now` is patched to it, so
pending windows, lot expiry and "has this lot expired?" checks inside a reversal all see
the same time as the expiry and maturation jobs, which get it passed as `now=`.

The expiry and maturation jobs run in set-based batches of members (loyalty/ledger_bulk.py)
with a batch size drawn per run: one member per batch, or both members in one.

Each Hypothesis example runs inside a savepoint that is rolled back at teardown, so every
example starts from an empty ledger (the services' durable transactions become nested
savepoints inside pytest-django's test transaction, which Django allows).
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from django.db import transaction
from django.db.models import Count, F, Q, Sum
from django.utils import timezone
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from loyalty import services
from loyalty.exceptions import AlreadyReversed, InsufficientPoints, NotReversible
from loyalty.ledger import Cause
from loyalty.models import (
    Account,
    AccountKind,
    EntryKind,
    JournalEntry,
    Lot,
    LotMovement,
    Posting,
    ProgramSettings,
    Source,
)
from tests.factories import MemberFactory, StaffFactory

START = datetime(2030, 1, 15, 9, 0, tzinfo=UTC)
NEVER = datetime.max.replace(tzinfo=UTC)
DEBIT_KINDS = (EntryKind.REDEEM, EntryKind.TRANSFER)
NOT_REVERSIBLE_KINDS = (EntryKind.REVERSAL, EntryKind.EXPIRY, EntryKind.MATURATION)


class SimulatedClock:
    def __init__(self):
        self.now = START

    def __call__(self) -> datetime:
        return self.now


CLOCK = SimulatedClock()


def expiry_key(expires_at: datetime | None) -> datetime:
    """Never-expiring lots sort after every dated one."""
    return NEVER if expires_at is None else expires_at


def ledger_state() -> tuple:
    """Everything a refused operation must leave exactly as it was."""
    return (
        JournalEntry.objects.count(),
        Posting.objects.count(),
        LotMovement.objects.count(),
        tuple(Account.objects.order_by("pk").values_list("pk", "balance")),
        tuple(Lot.objects.order_by("pk").values_list("pk", "remaining", "pending")),
    )


@dataclass
class Tracked:
    """What the model remembers about an entry it caused."""

    pk: int
    member: int  # index into machine.members
    kind: str  # an EntryKind
    effect: str  # "credit", "debit" or "none" (reversal, expiry, maturation)
    points: int = 0
    pending: bool = False  # a credit whose lot is still held for the return window
    matures_at: datetime | None = None
    reversed: bool = False


MEMBER = st.integers(0, 1)
CREDIT_POINTS = st.integers(1, 400)
BACKDATE_DAYS = st.sampled_from([0, 0, 0, 40, 200, 340, 380, 800])
PENDING_DAYS = st.sampled_from([0, 0, 3, 20])
EXPIRES_IN_DAYS = st.none() | st.integers(-10, 500)
# A share of the model balance in percent: above 100 asks for more than there is.
SHARE = st.integers(1, 130)
# Members per batch in the jobs: each member alone, or both in one batch.
BATCH_SIZE = st.sampled_from([1, 1000])


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.savepoint = transaction.savepoint()
        CLOCK.now = START
        self.members = [MemberFactory(), MemberFactory()]
        self.staff = StaffFactory()
        self.charity = Account.objects.create(kind=AccountKind.CHARITY, code="charity-x", name="X")
        self.partner = Account.objects.create(
            kind=AccountKind.PARTNER, code="partner-x", name="Partner X"
        )
        self.balance = [0, 0]  # the model: spendable points per member
        self.pending = [0, 0]  # the model: points held for the return window
        self.entries: list[Tracked] = []
        self.operations = 0

    def teardown(self):
        transaction.savepoint_rollback(self.savepoint)

    # --- helpers -------------------------------------------------------------------

    def _db_balances(self, m: int) -> tuple[int, int]:
        balances = dict(
            Account.objects.filter(member=self.members[m]).values_list("kind", "balance")
        )
        return balances.get(AccountKind.MEMBER, 0), balances.get(AccountKind.MEMBER_PENDING, 0)

    def _available_lots(self, m: int) -> dict[int, Lot]:
        return {
            lot.pk: lot
            for lot in Lot.objects.filter(account__member=self.members[m], pending=False)
        }

    def _description(self, what: str) -> str:
        self.operations += 1
        return f"{what} #{self.operations}"

    def _track(self, entry: JournalEntry, m: int, effect: str, points: int = 0, **kw) -> None:
        self.entries.append(
            Tracked(pk=entry.pk, member=m, kind=entry.kind, effect=effect, points=points, **kw)
        )

    def _debit(self, m: int, points: int, call, kind: str) -> None:
        """Run a debit service; check refusal leaves the ledger alone, success takes the
        earliest-expiring lots and leaves the balance at zero or above."""
        before_state = ledger_state()
        before_lots = self._available_lots(m)
        if self.balance[m] < points:
            with pytest.raises(InsufficientPoints):
                call()
            assert ledger_state() == before_state
            return
        entry = call()
        assert entry.kind == kind
        self.balance[m] -= points
        self._track(entry, m, "debit", points)
        assert self._db_balances(m)[0] >= 0

        taken = {mv.lot_id: -mv.points for mv in entry.lot_movements.all()}
        assert all(take > 0 for take in taken.values())
        assert sum(taken.values()) == points
        after_lots = self._available_lots(m)
        assert set(taken) <= set(before_lots)
        for pk, lot in before_lots.items():
            take = taken.get(pk, 0)
            assert take <= lot.remaining
            assert after_lots[pk].remaining == lot.remaining - take
        latest_taken = max(expiry_key(before_lots[pk].expires_at) for pk in taken)
        for pk, lot in after_lots.items():
            if pk in before_lots and lot.remaining > 0:
                assert expiry_key(lot.expires_at) >= latest_taken, (
                    f"debit {entry.pk} took from a lot expiring {latest_taken} while lot "
                    f"{pk} expiring {lot.expires_at} kept {lot.remaining} points"
                )

    # --- rules ---------------------------------------------------------------------

    @initialize(
        lifetime=st.sampled_from([12, 12, None, 1]),
        lots=st.lists(
            st.tuples(MEMBER, CREDIT_POINTS, BACKDATE_DAYS, PENDING_DAYS, EXPIRES_IN_DAYS),
            max_size=6,
        ),
    )
    def start_with_some_lots(self, lifetime, lots):
        self.change_points_lifetime(lifetime)
        for lot in lots:
            self.credit(*lot)

    @rule(
        m=MEMBER,
        points=CREDIT_POINTS,
        backdate_days=BACKDATE_DAYS,
        pending_days=PENDING_DAYS,
        expires_in_days=EXPIRES_IN_DAYS,
    )
    def credit(self, m, points, backdate_days, pending_days, expires_in_days):
        entry = services.points_credit(
            member=self.members[m],
            points=points,
            description=self._description("Purchase"),
            cause=Cause(source=Source.API, client="till-1"),
            effective_at=CLOCK.now - timedelta(days=backdate_days) if backdate_days else None,
            pending_days=pending_days,
            expires_at=(
                None if expires_in_days is None else CLOCK.now + timedelta(days=expires_in_days)
            ),
        )
        assert entry.kind == EntryKind.EARN
        if pending_days:
            self.pending[m] += points
            matures_at = CLOCK.now + timedelta(days=pending_days)
            self._track(entry, m, "credit", points, pending=True, matures_at=matures_at)
        else:
            self.balance[m] += points
            self._track(entry, m, "credit", points)

    @rule(m=MEMBER, points=CREDIT_POINTS)
    def spend_everything_then_return_the_purchase(self, m, points):
        """The clawback case: the member earns, spends it all, then returns the purchase
        and owes the points."""
        self.credit(m, points, 0, 0, None)
        purchase = self.entries[-1]
        if self.balance[m] > 0:  # unless an older debt swallowed the credit
            self._redeem(m, self.balance[m])
        self._reverse(purchase)
        assert self._db_balances(m)[0] == self.balance[m] < 0

    def _share(self, m: int, share: int) -> int:
        return max(1, self.balance[m] * share // 100)

    @rule(m=MEMBER, share=SHARE)
    def redeem(self, m, share):
        self._redeem(m, self._share(m, share))

    def _redeem(self, m, points):
        self._debit(
            m,
            points,
            lambda: services.points_redeem(
                member=self.members[m],
                points=points,
                description=self._description("Reward"),
                cause=Cause(source=Source.MEMBER),
            ),
            EntryKind.REDEEM,
        )

    @rule(m=MEMBER)
    def redeem_whole_balance(self, m):
        self._redeem(m, max(self.balance[m], 1))

    @rule(m=MEMBER, share=SHARE, to_partner=st.booleans())
    def transfer(self, m, share, to_partner):
        points = self._share(m, share)
        self._debit(
            m,
            points,
            lambda: services.points_transfer(
                member=self.members[m],
                points=points,
                to=self.partner if to_partner else self.charity,
                description=self._description("Donation"),
                cause=Cause(source=Source.MEMBER),
            ),
            EntryKind.TRANSFER,
        )

    @rule(m=MEMBER, share=SHARE, points=st.integers(1, 400), give=st.booleans())
    def adjust(self, m, share, points, give):
        points = points if give else -self._share(m, share)

        def call():
            return services.points_adjust(
                member=self.members[m],
                points=points,
                reason=self._description("Goodwill"),
                staff=self.staff,
            )

        if points < 0:
            self._debit(m, -points, call, EntryKind.ADJUSTMENT)
            return
        entry = call()
        assert entry.kind == EntryKind.ADJUSTMENT
        assert entry.created_by == self.staff
        self.balance[m] += points
        self._track(entry, m, "credit", points)

    @precondition(lambda self: self.entries)
    @rule(index=st.integers(min_value=0))
    def reverse(self, index):
        self._reverse(self.entries[index % len(self.entries)])

    @precondition(lambda self: any(t.effect == "debit" and not t.reversed for t in self.entries))
    @rule()
    def reverse_latest_debit(self):
        self._reverse([t for t in self.entries if t.effect == "debit" and not t.reversed][-1])

    @precondition(lambda self: any(t.effect == "credit" and not t.reversed for t in self.entries))
    @rule()
    def reverse_latest_credit(self):
        self._reverse([t for t in self.entries if t.effect == "credit" and not t.reversed][-1])

    def _reverse(self, tracked: Tracked):
        original = JournalEntry.objects.get(pk=tracked.pk)
        before_state = ledger_state()

        def call():
            return services.entry_reverse(
                entry=original,
                cause=Cause(source=Source.STAFF, user=self.staff, reason="Mistake"),
            )

        if tracked.kind in NOT_REVERSIBLE_KINDS:
            with pytest.raises(NotReversible):
                call()
            assert ledger_state() == before_state
            return
        if tracked.reversed:
            with pytest.raises(AlreadyReversed):
                call()
            assert ledger_state() == before_state
            return
        m = tracked.member
        balance_before = self._db_balances(m)[0]
        lots_before = {lot.pk: lot for lot in Lot.objects.filter(account__member=self.members[m])}
        if tracked.effect == "credit":
            own_lot = Lot.objects.get(entry_id=tracked.pk)
            expired = -LotMovement.objects.filter(
                lot=own_lot, entry__kind=EntryKind.EXPIRY
            ).aggregate(total=Sum("points", default=0))["total"]
        reversal = call()
        assert reversal.kind == EntryKind.REVERSAL
        assert reversal.reversal_of_id == original.pk
        tracked.reversed = True
        self._track(reversal, m, "none")
        if tracked.effect == "debit":
            self.balance[m] += tracked.points
            self._check_debit_given_back(tracked, reversal, balance_before, lots_before)
        else:
            self._check_credit_taken_back(tracked, reversal, balance_before, own_lot, expired)

    def _check_credit_taken_back(self, tracked, reversal, balance_before, lot_before, expired):
        """Points of the credit that expired already went to breakage: they come back from
        the expiry account. The rest is taken from the member, from the credit's own lot
        first, into a debt if they were spent."""
        m = tracked.member
        lot = Lot.objects.get(pk=lot_before.pk)
        postings = dict(reversal.postings.values_list("account__kind", "amount"))
        if tracked.pending:
            assert expired == 0
            self.pending[m] -= tracked.points
            assert lot.remaining == 0
            assert postings.pop(AccountKind.MEMBER_PENDING) == -tracked.points
        else:
            unexpired = min(tracked.points, expired)
            clawback = tracked.points - unexpired
            self.balance[m] -= clawback
            assert lot.remaining == max(0, lot_before.remaining - clawback)
            taken = -sum(reversal.lot_movements.values_list("points", flat=True))
            assert taken == min(clawback, max(balance_before, 0))
            if clawback:
                assert postings.pop(AccountKind.MEMBER) == -clawback
            if unexpired:
                assert postings.pop(AccountKind.EXPIRY) == -unexpired
        assert list(postings.values()) == [tracked.points], "the issuer gets the points back"

    def _check_debit_given_back(self, tracked, reversal, balance_before, lots_before):
        """Points go back to the lots the debit took them from unless those have expired
        meanwhile (then to one fresh lot); a debt is paid off first."""
        now = CLOCK.now
        took = {
            mv.pk: (mv.lot_id, -mv.points)
            for mv in LotMovement.objects.filter(entry_id=tracked.pk, points__lt=0)
        }
        fresh = list(Lot.objects.filter(entry=reversal))
        assert len(fresh) <= 1
        refilled, into_fresh = {}, 0
        for movement in reversal.lot_movements.all():
            assert movement.points > 0
            lot_id, took_points = took[movement.refund_of_id]
            assert movement.points <= took_points
            if fresh and movement.lot_id == fresh[0].pk:
                into_fresh += movement.points
                continue
            assert movement.lot_id == lot_id, "points went back to a lot they did not come from"
            refilled[lot_id] = refilled.get(lot_id, 0) + movement.points
            lot = lots_before[lot_id]
            assert lot.expires_at is None or lot.expires_at > now, "refilled an expired lot"
        for lot in fresh:
            assert lot.remaining == lot.points == into_fresh
            assert lot.earned_at == now
        given = sum(refilled.values()) + into_fresh
        assert given == max(0, tracked.points - max(0, -balance_before))
        unexpired = sum(
            points
            for lot_id, points in took.values()
            if lots_before[lot_id].expires_at is None or lots_before[lot_id].expires_at > now
        )
        if given <= unexpired:
            assert not fresh, "a fresh lot although the original lots could take the points"

    @rule(days=st.sampled_from([1, 5, 20, 31, 90, 200, 370]), run_jobs=st.booleans())
    def advance_clock(self, days, run_jobs):
        CLOCK.now += timedelta(days=days)
        if run_jobs:  # as the nightly jobs would
            self.mature_pending()
            self.expire_due_lots()

    @rule()
    def advance_clock_to_next_deadline(self):
        """Stop exactly on the next expiry or end of a return window: boundaries count."""
        lots = Lot.objects.filter(account__member__in=self.members, remaining__gt=0)
        deadlines = [
            *lots.filter(pending=False, expires_at__gt=CLOCK.now).values_list(
                "expires_at", flat=True
            ),
            *lots.filter(pending=True).values_list("matures_at", flat=True),
        ]
        future = [d for d in deadlines if d > CLOCK.now]
        if future:
            CLOCK.now = min(future)
        self.mature_pending()
        self.expire_due_lots()

    @rule(months=st.sampled_from([None, 1, 12]))
    def change_points_lifetime(self, months):
        ProgramSettings.objects.update_or_create(pk=1, defaults={"points_lifetime_months": months})

    @rule(batch_size=BATCH_SIZE)
    def expire_due_lots(self, batch_size=1000):
        now = CLOCK.now
        due = {m: 0 for m in range(2)}
        due_lots = set()
        for m in range(2):
            for lot in self._available_lots(m).values():
                if lot.remaining > 0 and lot.expires_at is not None and lot.expires_at <= now:
                    due[m] += lot.remaining
                    due_lots.add(lot.pk)
        others_before = dict(Lot.objects.exclude(pk__in=due_lots).values_list("pk", "remaining"))
        last_pk = JournalEntry.objects.order_by("-pk").values_list("pk", flat=True).first() or 0

        assert services.lots_expire_due(now=now, batch_size=batch_size) == sum(due.values())

        assert not Lot.objects.filter(pk__in=due_lots, remaining__gt=0).exists()
        assert (
            dict(Lot.objects.exclude(pk__in=due_lots).values_list("pk", "remaining"))
            == others_before
        )
        new_entries = list(JournalEntry.objects.filter(pk__gt=last_pk))
        for m in range(2):
            mine = [e for e in new_entries if e.member_id == self.members[m].pk]
            assert len(mine) == (1 if due[m] else 0)
            for entry in mine:
                assert entry.kind == EntryKind.EXPIRY
                postings = dict(entry.postings.values_list("account__kind", "amount"))
                assert postings == {AccountKind.MEMBER: -due[m], AccountKind.EXPIRY: due[m]}
                self._track(entry, m, "none")
            self.balance[m] -= due[m]
        assert services.lots_expire_due(now=now, batch_size=batch_size) == 0, (
            "a second run must find nothing due"
        )

    @rule(batch_size=BATCH_SIZE)
    def mature_pending(self, batch_size=1000):
        now = CLOCK.now
        released = [0, 0]
        for tracked in self.entries:
            if tracked.pending and tracked.matures_at <= now:
                tracked.pending = False
                if not tracked.reversed:
                    released[tracked.member] += tracked.points
        assert services.pending_mature_due(now=now, batch_size=batch_size) == sum(
            1 for r in released if r
        )
        for m in range(2):
            self.pending[m] -= released[m]
            self.balance[m] += released[m]
            maturations = JournalEntry.objects.filter(
                member=self.members[m], kind=EntryKind.MATURATION
            ).exclude(pk__in=[t.pk for t in self.entries])
            assert len(maturations) == (1 if released[m] else 0)
            for entry in maturations:
                self._track(entry, m, "none")
        assert not Lot.objects.filter(pending=True, matures_at__lte=now).exists()

    # --- invariants ----------------------------------------------------------------

    @invariant()
    def every_entry_sums_to_zero(self):
        unbalanced = (
            JournalEntry.objects.annotate(
                total=Sum("postings__amount", default=0), n=Count("postings")
            )
            .filter(Q(n__lt=2) | ~Q(total=0))
            .values_list("pk", "kind", "total")
        )
        assert not unbalanced, f"unbalanced entries: {list(unbalanced)}"

    @invariant()
    def stored_balance_equals_sum_of_postings(self):
        for account in Account.objects.filter(member__in=self.members).annotate(
            total=Sum("postings__amount", default=0)
        ):
            assert account.balance == account.total, account
            running = 0
            for amount, balance_after in account.postings.order_by("pk").values_list(
                "amount", "balance_after"
            ):
                running += amount
                assert balance_after == running, account

    @invariant()
    def lots_add_up_to_balances(self):
        for m in range(2):
            available, pending = self._db_balances(m)
            lots = Lot.objects.filter(account__member=self.members[m])
            sums = lots.aggregate(
                available=Sum("remaining", filter=Q(pending=False), default=0),
                pending=Sum("remaining", filter=Q(pending=True), default=0),
            )
            assert sums["available"] == max(available, 0)
            assert sums["pending"] == pending
            assert not lots.filter(Q(remaining__lt=0) | Q(remaining__gt=F("points"))).exists()

    @invariant()
    def debits_never_go_below_zero(self):
        below_zero = Posting.objects.filter(
            account__kind=AccountKind.MEMBER, amount__lt=0, balance_after__lt=0
        ).filter(Q(entry__kind__in=DEBIT_KINDS) | Q(entry__kind=EntryKind.ADJUSTMENT))
        assert not below_zero.exists()

    @invariant()
    def system_accounts_only_move_one_way(self):
        """Issuance only gives points out; the others only collect them (a return of expired
        points takes back from the expiry account no more than it collected)."""
        totals = dict(
            Posting.objects.exclude(
                account__kind__in=[AccountKind.MEMBER, AccountKind.MEMBER_PENDING]
            )
            .values_list("account__kind")
            .annotate(total=Sum("amount"))
            .values_list("account__kind", "total")
        )
        for kind, total in totals.items():
            if kind == AccountKind.ISSUANCE:
                assert total <= 0, totals
            elif kind != AccountKind.ADJUSTMENT:
                assert total >= 0, totals

    @invariant()
    def balances_match_the_model(self):
        for m in range(2):
            assert self._db_balances(m) == (self.balance[m], self.pending[m])


@pytest.mark.django_db
def test_ledger_invariants_hold_for_any_sequence_of_operations(monkeypatch):
    monkeypatch.setattr(timezone, "now", CLOCK)
    run_state_machine_as_test(
        LedgerMachine,
        settings=settings(
            max_examples=30,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
