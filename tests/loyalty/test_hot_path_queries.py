"""The tills' hot path skips Django's per-call SQL building (loyalty.compiled_query for the
member lookup, loyalty.db_copy for the inserts): what it reads and writes must be exactly
what the ORM would have read and written."""

import functools
from datetime import UTC, timedelta
from decimal import Decimal

import psycopg
import pytest
from django.db import IntegrityError, connection, transaction
from django.db.models import Min, Q, Sum
from django.db.models.functions import TruncDate
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from loyalty import ledger, memberships, selectors, services
from loyalty.compiled_query import CompiledQuery, FirstRead
from loyalty.db_copy import family_insert, objects_insert, statement_cursor, unsaved
from loyalty.exceptions import UnknownMember
from loyalty.models import (
    Account,
    AccountKind,
    JournalEntry,
    Lot,
    Membership,
    MembershipPlan,
    MemberTier,
    ProgramSettings,
    Purchase,
    PurchaseLine,
)
from loyalty.purchases import LineIn, ReceiptTaken, purchase_record
from members.models import Member
from tests.concurrency import other_connection
from tests.factories import MemberFactory, StaffFactory, StoreFactory
from tests.loyalty.tiers_helpers import TILL, buy, make_three_tiers


def orm_lookup_by_card(card):
    """The till's member lookup as the ORM writes it."""
    return (
        Account.objects.select_for_update(of=("self",))
        .select_related("member__tier_state__tier")
        .filter(member__card_number=card)
        .order_by("pk")
    )


def orm_lock_by_card(card):
    return list(orm_lookup_by_card(card))


def described(accounts):
    """What the till's code reads off the accounts and their member, tier state and tier."""
    out = []
    for account in accounts:
        member = account.member
        try:
            state = member.tier_state
            tier = (state.member_id, state.since, state.tier and state.tier.code)
        except MemberTier.DoesNotExist:
            tier = None
        out.append((account.pk, account.kind, account.balance, member.pk, member.card_number,
                    member.first_name, tier, account._state.adding, account._state.db))  # fmt: skip
    return out


@pytest.mark.django_db
def test_the_compiled_member_lookup_reads_what_the_orm_reads(django_assert_num_queries):
    _, vib, _ = make_three_tiers()
    store = StoreFactory()
    plain, climber = MemberFactory(), MemberFactory()
    for member in (plain, climber):
        buy(member, store, "10.00")  # makes the member's accounts
    buy(climber, store, "400.00")  # reaches VIB: a tier state row with a tier
    assert MemberTier.objects.get(member=climber).tier == vib
    with transaction.atomic():
        for member in (plain, climber):
            with django_assert_num_queries(1):
                fast = ledger.member_lock_by_card(member.card_number)
                # the related objects came with the one query: reading them costs nothing
                details = described([fast[1].available, fast[1].pending])
            assert details == described(orm_lock_by_card(member.card_number))
            assert fast[0].pk == member.pk
        with pytest.raises(UnknownMember):
            ledger.member_lock_by_card("0000000000000")


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("proceed", [True, False])
def test_a_read_ahead_of_the_member_lookup_shares_its_statement_and_can_stop_it(
    postgres_only, django_assert_num_queries, proceed
):
    """`run_after`: the read's row and the member's locked accounts in one statement; where
    the read says stop, the accounts are neither read nor locked."""
    member = MemberFactory()
    buy(member, StoreFactory(), "10.00")  # makes the member's accounts
    seen = []
    first = FirstRead(
        sql="SELECT %s::int AS n, %s::bool AS go", params=[7, proceed], width=2,
        proceed="first.go", then=seen.append,
    )  # fmt: skip
    query = CompiledQuery(orm_lookup_by_card)
    with transaction.atomic():
        with django_assert_num_queries(1):
            found = query.run_after(first, member.card_number)
        assert seen == [(7, proceed)]
        if proceed:
            assert described(found) == described(orm_lock_by_card(member.card_number))
        else:
            assert found == []
        with other_connection() as other:
            lock = "SELECT id FROM loyalty_account WHERE member_id = %s FOR UPDATE NOWAIT"
            if proceed:
                with pytest.raises(psycopg.errors.LockNotAvailable):
                    other.execute(lock, [member.pk])
            else:
                assert len(other.execute(lock, [member.pk]).fetchall()) == 2


def looked_up(member):
    """What the till's summary reads off a member found by card."""
    annotated = tuple(
        getattr(member, name, "absent")
        for name in (memberships.CURRENT, memberships.UNTIL, memberships.RENEW)
    )
    return (member.pk, member.card_number, member.user_id, member.user.email, annotated)


@pytest.mark.django_db
def test_the_compiled_till_lookup_reads_what_with_membership_reads(django_assert_num_queries):
    _, vib, _ = make_three_tiers()
    plus = MembershipPlan.objects.create(
        code="plus", name="Plus", sku="PLUS-1Y", fee=Decimal("49.00"), tier=vib
    )
    staff = StaffFactory()
    subscriber, lapsed, plain = MemberFactory(), MemberFactory(), MemberFactory()
    memberships.membership_grant(
        member=subscriber, plan=plus, months=12, reason="Prize", staff=staff
    )
    memberships.membership_grant(
        member=lapsed, plan=plus, months=1, reason="Trial", staff=staff,
        now=timezone.now() - timedelta(days=90),
    )  # fmt: skip
    for member in (subscriber, lapsed, plain):
        orm = memberships.with_membership(Member.objects.select_related("user")).get(pk=member.pk)
        with django_assert_num_queries(1):
            fast = memberships.member_by_card(member.card_number)
            seen = looked_up(fast)
        assert seen == looked_up(orm)
    assert getattr(memberships.member_by_card(subscriber.card_number), memberships.CURRENT)
    assert getattr(memberships.member_by_card(lapsed.card_number), memberships.CURRENT) is None
    assert memberships.member_by_card("0000000000000") is None


@pytest.mark.django_db
def test_the_compiled_plan_lookup_finds_the_plan_the_orm_finds(django_assert_num_queries):
    """Each purchase in a program with plans asks which plan the member held when they
    bought: running, lapsed, cancelled, none, or the next one granted after it."""
    _, vib, gold = make_three_tiers()
    plus, premium = (
        MembershipPlan.objects.create(code=code, name=code, sku=f"{code}-1Y", fee=Decimal("9"),
                                      tier=tier)
        for code, tier in (("plus", vib), ("premium", gold))
    )  # fmt: skip
    staff, now = StaffFactory(), timezone.now()
    running, lapsed, cancelled, upgraded, plain = (MemberFactory() for _ in range(5))
    grant = memberships.membership_grant
    grant(member=running, plan=plus, months=12, reason="Prize", staff=staff)
    grant(member=lapsed, plan=plus, months=1, reason="Trial", staff=staff,
          now=now - timedelta(days=90))  # fmt: skip
    gone = grant(member=cancelled, plan=plus, months=12, reason="Prize", staff=staff)
    memberships.membership_cancel(membership=gone, reason="Asked to", staff=staff)
    grant(member=upgraded, plan=plus, months=12, reason="Prize", staff=staff,
          now=now - timedelta(days=10))  # fmt: skip
    grant(member=upgraded, plan=premium, months=12, reason="Upgrade", staff=staff)  # next

    def orm(member, at):
        plan_id = (
            Membership.objects.filter(memberships.covering(at), member_id=member.pk)
            .order_by("-starts_at")
            .values_list("plan_id", flat=True)
            .first()
        )
        return plan_id and MembershipPlan.objects.get(pk=plan_id).code

    catalog = memberships.plan_catalog()
    soon, earlier, next_year = (
        now + timedelta(seconds=1),
        now - timedelta(days=75),
        now + timedelta(days=400),
    )
    expected = {
        running: ("plus", None, None), lapsed: (None, "plus", None), cancelled: (None, None, None),
        upgraded: ("plus", None, "premium"), plain: (None, None, None),
    }  # fmt: skip
    for member, codes in expected.items():
        for at, code in zip((soon, earlier, next_year), codes, strict=True):
            with django_assert_num_queries(1):
                found = memberships.member_plan_at(member=member, at=at, catalog=catalog)
            assert (found and found.code) == orm(member, at) == code


@pytest.mark.django_db
def test_a_members_points_are_their_accounts_stored_balances(django_assert_num_queries):
    """The till's lookup (and the quote, a return's answer) read spendable and pending
    points in one query: what the ledger's aggregate over the accounts says."""
    make_three_tiers()
    store = StoreFactory()
    paying, pending, newcomer = MemberFactory(), MemberFactory(), MemberFactory()
    buy(paying, store, "30.00")
    buy(paying, store, "12.00", redeem_points=10)
    ProgramSettings.objects.filter(pk=1).update(pending_days=14)  # points wait for returns
    ledger.program_settings_forget()
    buy(pending, store, "25.00")
    for member in (paying, pending, newcomer):
        orm = member.accounts.aggregate(
            points=Sum("balance", filter=Q(kind=AccountKind.MEMBER), default=0),
            pending=Sum("balance", filter=Q(kind=AccountKind.MEMBER_PENDING), default=0),
        )
        with django_assert_num_queries(1):
            assert selectors.member_points(member=member) == (orm["points"], orm["pending"])
    assert selectors.member_points(member=paying)[0] > 0
    assert selectors.member_points(member=pending) == (0, 25)
    assert selectors.member_points(member=newcomer) == (0, 0)


@pytest.mark.django_db
def test_the_next_expiry_days_are_what_the_orm_groups(django_assert_num_queries):
    """The lookup shows the points expiring on the next three days: lots grouped by day
    in the program's time zone, spent and pending points left out."""
    member = MemberFactory()
    noon = timezone.now().replace(hour=12, minute=0, second=0, microsecond=0)
    days = [noon + timedelta(days=d) for d in (40, 10, 10, 20, 30)]  # 10 twice: one day
    earn = functools.partial(services.points_credit, member=member, cause=TILL)
    for i, expires_at in enumerate(days):
        earn(points=10 + i, description="Earned", expires_at=expires_at + timedelta(minutes=i))
    earn(points=99, description="Waiting", pending_days=14, expires_at=noon + timedelta(days=5))
    with transaction.atomic():
        ledger.debit(member=member, points=5, description="Spent", cause=TILL)
    orm = list(
        Lot.objects.filter(
            account__member=member, pending=False, remaining__gt=0, expires_at__isnull=False
        )
        .annotate(day=TruncDate("expires_at"))
        .values("day")
        .annotate(points=Sum("remaining"), first=Min("expires_at"))
        .order_by("day")[:3]
    )
    settings = ledger.program_settings()
    with django_assert_num_queries(2):  # the points, then the expiry days
        balance = selectors.member_balance(member=member, settings=settings)
    assert [(e.points, e.expires_at) for e in balance.expiring] == [
        (r["points"], r["first"]) for r in orm
    ]
    # day 10: 11 + 12 less the 5 spent from its earliest lot; then days 20 and 30
    assert [e.points for e in balance.expiring] == [18, 13, 14]
    assert (balance.points, balance.pending) == (10 + 11 + 12 + 13 + 14 - 5, 99)


def test_a_compiled_query_refuses_a_queryset_whose_sql_depends_on_the_value(postgres_only):
    by_cards = CompiledQuery(lambda cards: Account.objects.filter(member__card_number__in=cards))
    with pytest.raises(ValueError, match="each parameter must reach the SQL"):
        by_cards.run(["1", "2"])


@pytest.mark.django_db
def test_a_few_rows_are_inserted_in_one_statement_with_their_ids_and_defaults(
    django_assert_num_queries,
):
    member, store = MemberFactory(), StoreFactory()
    before = timezone.now()
    purchases = [
        Purchase(store=store, member=member, receipt_id=f"R-{i}", occurred_at=before,
                 currency="EUR", total=Decimal("12.50"), points_earned=i)
        for i in range(3)
    ]  # fmt: skip
    with django_assert_num_queries(1):
        objects_insert(Purchase, purchases)
    stored = {p.pk: p for p in Purchase.objects.filter(store=store)}
    assert sorted(stored) == sorted(p.pk for p in purchases)
    for purchase in purchases:
        row = stored[purchase.pk]
        assert (row.receipt_id, row.points_earned, row.total) == (
            purchase.receipt_id, purchase.points_earned, Decimal("12.50"),
        )  # fmt: skip
        assert row.public_id == purchase.public_id  # the model's default went in
        assert row.created_at >= before  # auto_now_add, as save() would set it
        assert not purchase._state.adding


def _fields(obj):
    """What an unsaved instance holds: its columns (random or timed defaults as their
    type), its cached related instances, and its state."""
    columns = {}
    for field in type(obj)._meta.concrete_fields:
        value = getattr(obj, field.attname)
        columns[field.attname] = type(value) if field.name in ("public_id", "created_at") else value
    return columns, obj._state.fields_cache, obj._state.adding, obj._state.db


@pytest.mark.django_db
def test_an_unsaved_row_is_what_the_models_constructor_builds():
    """db_copy.unsaved builds new rows from positional values (Django's keyword path is
    slow); the result must be the very instance `Model(**values)` gives."""
    member, store = MemberFactory(), StoreFactory()
    entry = JournalEntry.objects.create(member=member, kind="earn", description="x")
    sale = dict(store=store, member=member, receipt_id="R-1", occurred_at=timezone.now(),
                currency="EUR", total=Decimal("3.00"), earn_entry=entry,
                redeem_entry=None)  # fmt: skip
    built, expected = unsaved(Purchase, **sale), Purchase(**sale)
    assert _fields(built) == _fields(expected)
    assert built.store is store and built.earn_entry is entry and built.pk is None
    # A parent not saved yet: its id is unknown, the instance is kept for the insert.
    line = dict(purchase=built, position=0, sku="A", quantity=Decimal(1), unit_price=Decimal(1))
    assert _fields(unsaved(PurchaseLine, **line)) == _fields(PurchaseLine(**line))
    assert unsaved(PurchaseLine, **line).purchase is built
    # By column name, as the constructor takes it too.
    assert unsaved(Purchase, store_id=store.pk).store == store
    with pytest.raises(TypeError, match="unexpected keyword arguments: colour"):
        unsaved(Purchase, store=store, colour="red")


@pytest.mark.django_db(transaction=True)
def test_a_refused_insert_raises_djangos_error_and_writes_nothing(postgres_only):
    member, store = MemberFactory(), StoreFactory()
    sale = dict(store=store, member=member, receipt_id="R-1", occurred_at=timezone.now(),
                currency="EUR", total=Decimal("1.00"))  # fmt: skip
    objects_insert(Purchase, [Purchase(**sale)])
    with pytest.raises(IntegrityError), transaction.atomic():
        objects_insert(Purchase, [Purchase(**sale | {"receipt_id": "R-2"}), Purchase(**sale)])
    assert list(Purchase.objects.values_list("receipt_id", flat=True)) == ["R-1"]


@pytest.mark.django_db
def test_purchase_lines_keep_their_ids_for_the_plans_they_sell():
    make_three_tiers()
    purchase = buy(
        MemberFactory(), StoreFactory(), "20.00",
        lines=[LineIn(sku="A", quantity=Decimal(1), unit_price=Decimal("20.00"))],
    )  # fmt: skip
    assert [line.pk for line in purchase.recorded_lines] == list(
        purchase.lines.values_list("pk", flat=True)
    )


def _sale(store, member, receipt_id="R-1"):
    return Purchase(
        store=store, member=member, receipt_id=receipt_id, occurred_at=timezone.now(),
        currency="EUR", total=Decimal("3.00"),
    )  # fmt: skip


def _lines(purchase, *quantities):
    return [
        PurchaseLine(purchase=purchase, position=i, sku=f"SKU-{i}", quantity=Decimal(q),
                     unit_price=Decimal("1.00"), points=i)
        for i, q in enumerate(quantities)
    ]  # fmt: skip


@pytest.mark.django_db
def test_a_row_and_its_children_go_in_together_with_their_ids(django_assert_max_num_queries):
    """A sale's purchase and its lines (or an entry with its postings and lot) are one
    statement on PostgreSQL; elsewhere one per table. Either way every row gets its id and
    the children point at their parent."""
    member, store = MemberFactory(), StoreFactory()
    purchase = _sale(store, member)
    lines = _lines(purchase, 2, 1, 5)
    also = ("UPDATE members_member SET first_name = %s WHERE id = %s", ["Ayşe", member.pk])
    with django_assert_max_num_queries(1 if connection.vendor == "postgresql" else 3):
        family_insert(purchase, lines, also=also)
    stored = Purchase.objects.get(store=store)
    assert stored.pk == purchase.pk and stored.public_id == purchase.public_id
    rows = list(stored.lines.order_by("position").values_list("pk", "sku", "quantity", "points"))
    assert rows == [(line.pk, line.sku, line.quantity, line.points) for line in lines]
    assert all(line.purchase_id == purchase.pk and not line._state.adding for line in lines)
    member.refresh_from_db()
    assert member.first_name == "Ayşe"  # the extra statement ran in it


@pytest.mark.django_db
def test_a_big_basket_goes_in_as_one_statement_its_text_converted_once(
    django_assert_max_num_queries,
):
    """A basket of 12 lines makes a statement of 87 parameters. psycopg keeps its own
    conversion of %s placeholders only up to 50, so with server-side binding the statement
    goes by psycopg's RawCursor with $1, $2... written in (db_copy.statement_cursor); a
    literal %% in the statement stays a literal %."""
    member, store = MemberFactory(), StoreFactory()
    purchase = _sale(store, member)
    lines = _lines(purchase, *range(1, 13))
    also = ("UPDATE members_member SET first_name = %s || '%%' WHERE id = %s", ["Ayşe", member.pk])
    cursors, sizes = [], []

    def spy(execute, sql, params, many, context):
        cursors.append(type(context["cursor"].cursor))
        sizes.append(len(params))
        return execute(sql, params, many, context)

    queries = 1 if connection.vendor == "postgresql" else 13
    with django_assert_max_num_queries(queries), connection.execute_wrapper(spy):
        family_insert(purchase, lines, also=also)
    if connection.vendor == "postgresql":
        assert sizes == [87]
        if connection.features.uses_server_side_binding:
            assert issubclass(cursors[0], psycopg.RawCursor)
    stored = Purchase.objects.get(store=store)
    assert list(stored.lines.order_by("position").values_list("pk", "quantity")) == [
        (line.pk, line.quantity) for line in lines
    ]
    member.refresh_from_db()
    assert member.first_name == "Ayşe%"


@pytest.mark.django_db(transaction=True)
def test_a_connection_keeps_a_cursor_for_each_hot_statement(postgres_only):
    """Each of a sale's statements keeps its psycopg cursor on the connection (a new one
    costs more than a small statement), and with it the adapters psycopg chose for it. It
    stays open after its `with` block, errors still arrive as Django's, queries are still
    counted, and a new connection gets new cursors."""
    if not connection.features.uses_server_side_binding:
        pytest.skip("kept only with server-side binding")
    used = []

    def spy(execute, sql, params, many, context):
        used.append(context["cursor"].cursor)
        return execute(sql, params, many, context)

    def one(sql, params=()):
        with statement_cursor(connection, sql) as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()

    with connection.execute_wrapper(spy), CaptureQueriesContext(connection) as queries:
        assert one("SELECT %s::int + 1", [1]) == [(2,)]
        adapters = used[0]._tx  # psycopg's adapters for the statement (private: checked here)
        assert one("SELECT 'a%%' || %s", ["b"]) == [("a%b",)]
        assert one("SELECT %s::int + 1", [2]) == [(3,)]
    assert len(queries) == 3 and used[0] is used[2] is not used[1] and not used[0].closed
    assert used[2]._tx is adapters  # kept between the statement's runs, not looked up anew
    with pytest.raises(IntegrityError), transaction.atomic():
        one("INSERT INTO loyalty_account (kind, code, name, balance, created_at) "
            "VALUES ('issuance', NULL, NULL, 0, now())")  # fmt: skip
    assert one("SELECT 1") == [(1,)]  # the failed statement left it usable
    connection.close()
    with connection.execute_wrapper(spy):
        assert one("SELECT 2") == [(2,)]
    assert used[-1] is not used[0] and used[-1].connection is connection.connection


@pytest.mark.django_db
def test_a_hot_statement_reads_times_as_djangos_cursor_does(postgres_only):
    """A hot statement's cursor loads timestamps with psycopg's own loader (Django's is
    written in Python, and a sale's member lookup reads ten): the same values, in UTC."""
    sql = "SELECT %s::timestamptz, %s::timestamptz, now(), NULL::timestamptz"
    params = ["2026-01-01 10:00:00.123456+03", "1999-12-31 23:59:59-08:30"]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        expected = cursor.fetchone()
    with statement_cursor(connection, sql) as cursor:
        cursor.execute(sql, params)
        read = cursor.fetchone()
        loader = cursor.cursor.adapters.get_loader(1184, psycopg.pq.Format.TEXT)  # timestamptz
    assert read == expected and read[3] is None
    assert all(value.tzinfo is expected[0].tzinfo is UTC for value in read[:3])
    if connection.features.uses_server_side_binding:
        assert not loader.__module__.startswith("django")


@pytest.mark.django_db
def test_a_sale_rides_along_with_its_entry_and_every_row_points_at_the_right_one(
    django_assert_max_num_queries,
):
    """An entry (the parent), a purchase that refers to it and the purchase's lines, which
    refer to the purchase: one statement on PostgreSQL, one per table elsewhere."""
    member, store = MemberFactory(), StoreFactory()
    entry = JournalEntry(kind="earn", member=member, description="Sale", source="api")
    purchase = _sale(store, member)
    purchase.earn_entry = entry
    lines = _lines(purchase, 1, 2)
    with django_assert_max_num_queries(1 if connection.vendor == "postgresql" else 3):
        family_insert(entry, [purchase, *lines])
    stored = Purchase.objects.get(store=store)
    assert entry.pk is not None and stored.earn_entry_id == entry.pk == purchase.earn_entry_id
    assert list(stored.lines.values_list("pk", "purchase_id")) == [
        (line.pk, purchase.pk) for line in lines
    ]


@pytest.mark.django_db
def test_a_row_cannot_refer_to_one_that_goes_in_after_it(postgres_only):
    member, store = MemberFactory(), StoreFactory()
    entry = JournalEntry(kind="earn", member=member, description="Sale", source="api")
    purchase = _sale(store, member)
    purchase.earn_entry = entry
    lines = _lines(purchase, 1)
    with pytest.raises(ValueError, match="comes after it"):
        family_insert(entry, [*lines, purchase])
    assert not Purchase.objects.exists() and not JournalEntry.objects.exists()


@pytest.mark.django_db
def test_a_sale_that_earns_writes_its_rows_in_one_statement(postgres_only):
    """Entry, postings, lot, balance, purchase and lines: one INSERT statement (with the
    UPDATE in it), and the purchase points at the entry that credited it."""
    make_three_tiers()
    member, store = MemberFactory(), StoreFactory()
    one = [LineIn(sku="A", quantity=Decimal(2), unit_price=Decimal("5.00"))]
    sale = dict(store=store, member=member, occurred_at=timezone.now(), currency="EUR",
                total=Decimal("10.00"), lines=one, cause=TILL)  # fmt: skip
    with transaction.atomic():  # the first one also opens the member's accounts
        purchase_record(receipt_id="R-0", **sale)
    with CaptureQueriesContext(connection) as queries, transaction.atomic():
        purchase = purchase_record(receipt_id="R-1", **sale)
    writes = [q["sql"] for q in queries if q["sql"].startswith(("INSERT", "UPDATE", "WITH"))]
    assert len(writes) == 1 and writes[0].startswith("WITH")
    stored = Purchase.objects.select_related("earn_entry").get(receipt_id="R-1")
    assert stored.earn_entry_id == purchase.earn_entry_id is not None
    assert stored.earn_entry.postings.get(account__member=member).amount == purchase.points_earned
    assert stored.lines.get().points == purchase.points_earned


@pytest.mark.django_db(transaction=True)
def test_a_refused_child_leaves_out_its_parent_too(postgres_only):
    member, store = MemberFactory(), StoreFactory()
    purchase = _sale(store, member)
    with pytest.raises(IntegrityError), transaction.atomic():
        family_insert(purchase, _lines(purchase, 1, 0))  # a line of quantity 0 is refused
    assert not Purchase.objects.exists() and not PurchaseLine.objects.exists()


@pytest.mark.django_db
def test_a_child_of_another_parent_is_refused_before_anything_is_written(postgres_only):
    member, store = MemberFactory(), StoreFactory()
    purchase, other = _sale(store, member), _sale(store, member, "R-2")
    with pytest.raises(ValueError, match="must refer to the parent"):
        family_insert(purchase, _lines(purchase, 1) + _lines(other, 1))
    assert not Purchase.objects.exists()


@pytest.mark.django_db
def test_only_the_receipts_own_constraint_reads_as_a_duplicate_receipt(postgres_only):
    """A purchase refused for another reason than its receipt (here a line the database
    refuses) is an error, not a 409 naming some other purchase."""
    make_three_tiers()
    member, store = MemberFactory(), StoreFactory()
    sale = dict(store=store, member=member, occurred_at=timezone.now(), currency="EUR",
                total=Decimal("5.00"), cause=TILL)  # fmt: skip
    one = [LineIn(sku="A", quantity=Decimal(1), unit_price=Decimal("5.00"))]
    with transaction.atomic():
        purchase_record(receipt_id="R-1", lines=one, **sale)
    with pytest.raises(ReceiptTaken), transaction.atomic():
        purchase_record(receipt_id="R-1", lines=one, **sale)
    zero = [LineIn(sku="A", quantity=Decimal(0), unit_price=Decimal("5.00"))]
    with pytest.raises(IntegrityError) as refused, transaction.atomic():
        purchase_record(receipt_id="R-2", lines=zero, **sale)
    assert not isinstance(refused.value, ReceiptTaken)
    assert list(Purchase.objects.values_list("receipt_id", flat=True)) == ["R-1"]
