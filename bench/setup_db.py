"""Fill the bench database: N members (set-based SQL), their two ledger accounts, the
program settings and system accounts, and a store with a terminal and an all-scopes key.

Run by bench/run.sh after `migrate`, on an empty database:
    python bench/setup_db.py OUT_DIR [MEMBERS]
Writes OUT_DIR/cards.txt (one card number a line) and OUT_DIR/api_key.txt.

Member ids are 1..N and card numbers are derived from the id ("60" + the id on ten digits
+ the EAN-13 check digit); member m's accounts have ids 2m-1 (points) and 2m (pending).
bench/pgbench_script.py relies on this scheme to pick a random member in pgbench.
"""

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")

import django

django.setup()

from django.db import connection, transaction  # noqa: E402

from loyalty.ledger import program_settings, system_account  # noqa: E402
from loyalty.models import Account, AccountKind  # noqa: E402
from members.cards import card_number_is_valid  # noqa: E402
from members.models import Member  # noqa: E402
from partners.models import Partner, Store, Terminal  # noqa: E402
from partners.services import api_key_create  # noqa: E402

STORE_CODE = "bench-store"
POINTS = "(10 + m.id % 90)"  # each member's points from the seeded purchase
SEED_AT = "(now() - interval '10 days')"
SEEDED = [
    "loyalty_journalentry", "loyalty_posting", "loyalty_lot", "loyalty_purchase",
    "loyalty_purchaseline", "partners_idempotencyrecord",
]  # fmt: skip

# The EAN-13 check digit of the 12-digit body b, in SQL (weights 1,3,1,3... from the left,
# as members.cards.ean13_check_digit computes it).
CARD_SQL = """
    b || ((10 - (SELECT sum(substr(b, k, 1)::int * CASE WHEN k %% 2 = 0 THEN 3 ELSE 1 END)
                 FROM generate_series(1, 12) AS k) %% 10) %% 10)::text
"""


def load_members(count: int) -> None:
    member, account = Member._meta.db_table, Account._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {member}")
        if cursor.fetchone()[0]:
            raise SystemExit("setup_db: the database already has members; start from a fresh one")
        cursor.execute(
            f"""
            INSERT INTO {member} (id, card_number, first_name, last_name, phone,
                                  marketing_consent, created_at, user_id)
            SELECT i, {CARD_SQL}, 'Bench', 'Member ' || i, NULL, i %% 2 = 0, now(), NULL
            FROM (SELECT i, '60' || lpad(i::text, 10, '0') AS b
                  FROM generate_series(1, %s) AS i) AS s
            """,
            [count],
        )
        cursor.execute(
            f"""
            INSERT INTO {account} (id, kind, code, name, balance, created_at, member_id)
            SELECT 2 * m.id - 1 + k.n, k.kind, NULL, '',
                   CASE WHEN k.n = 0 THEN {POINTS.replace("%", "%%")} ELSE 0 END, now(), m.id
            FROM {member} AS m
            CROSS JOIN (VALUES (0, %s), (1, %s)) AS k(n, kind)
            """,
            [AccountKind.MEMBER, AccountKind.MEMBER_PENDING],
        )
        for table in (member, account):
            cursor.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT max(id) FROM {table}))"
            )


def seed_history(store: Store) -> None:
    """One earlier purchase per member, as the ledger would have written it (entry, two
    balanced postings, lot, purchase, line, idempotency record): the tables a purchase
    writes to start with 100,000 rows, as in production, not empty. (With empty tables
    PostgreSQL plans the foreign-key and ledger-trigger lookups of a fresh connection as
    sequential scans and keeps those plans while the tables grow: the API slows down as
    the run goes on, which says nothing about production.)"""
    issuance = system_account(AccountKind.ISSUANCE).pk
    points = POINTS.replace("m.id", "e.member_id")
    statements = [
        f"""INSERT INTO loyalty_journalentry (id, public_id, kind, description, reason, details,
                source, client, effective_at, created_at, created_by_id, member_id,
                reversal_of_id)
            SELECT m.id, gen_random_uuid(), 'earn', 'Purchase SEED-' || m.id || ' at Bench Store',
                '', '{{}}'::jsonb, 'api', 'seed', {SEED_AT}, {SEED_AT}, NULL, m.id, NULL
            FROM members_member AS m""",
        f"""INSERT INTO loyalty_posting (entry_id, account_id, amount, balance_after)
            SELECT e.id, p.account, p.amount, p.after
            FROM loyalty_journalentry AS e CROSS JOIN LATERAL (VALUES
                ({issuance}, -{points}, NULL::bigint),
                (2 * e.member_id - 1, {points}, {points})) AS p(account, amount, after)""",
        f"""INSERT INTO loyalty_lot (account_id, entry_id, points, remaining, earned_at,
                expires_at, pending, matures_at)
            SELECT 2 * e.member_id - 1, e.id, {points}, {points}, e.effective_at,
                e.effective_at + interval '12 months', false, NULL
            FROM loyalty_journalentry AS e""",
        f"""INSERT INTO loyalty_purchase (id, public_id, store_id, receipt_id, member_id,
                occurred_at, currency, total, points_earned, points_redeemed, breakdown,
                earn_entry_id, redeem_entry_id, created_at)
            SELECT e.id, gen_random_uuid(), {store.pk}, 'SEED-' || e.member_id, e.member_id,
                e.effective_at, 'EUR', {points} + 0.50, {points}, 0, '[]'::jsonb, e.id, NULL,
                e.effective_at
            FROM loyalty_journalentry AS e""",
        """INSERT INTO loyalty_purchaseline (purchase_id, position, sku, category, quantity,
                unit_price, points)
            SELECT p.id, 0, 'SEED-SKU', 'misc', 1, p.total, p.points_earned
            FROM loyalty_purchase AS p""",
        f"""INSERT INTO partners_idempotencyrecord (store_id, key, fingerprint, status, body,
                created_at)
            SELECT {store.pk}, 'K-SEED-' || p.member_id, md5(p.receipt_id) || md5(p.receipt_id),
                201, '{{}}', p.created_at
            FROM loyalty_purchase AS p""",
    ]
    with connection.cursor() as cursor:
        for sql in statements:
            cursor.execute(sql)
        for table in SEEDED:
            cursor.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT max(id) FROM {table}))"
            )


def main() -> None:
    out = Path(sys.argv[1])
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with transaction.atomic():
        load_members(count)
        program_settings()
        for kind in (AccountKind.ISSUANCE, AccountKind.REDEMPTION, AccountKind.EXPIRY):
            system_account(kind)
        partner = Partner.objects.create(code="bench", name="Bench Retail")
        store = Store.objects.create(partner=partner, code=STORE_CODE, name="Bench Store")
        terminal = Terminal.objects.create(store=store, name="Bench till")
        api_key, full_key = api_key_create(terminal=terminal, name="bench")  # all scopes
        seed_history(store)
    cards = list(Member.objects.order_by("id").values_list("card_number", flat=True))
    bad = [c for c in cards if not card_number_is_valid(c)]
    if len(cards) != count or bad or len(set(cards)) != count:
        raise SystemExit(f"setup_db: card numbers wrong ({len(cards)} loaded, {len(bad)} invalid)")
    accounts = Account.objects.filter(member__isnull=False).count()
    if accounts != 2 * count:
        raise SystemExit(f"setup_db: {accounts} member accounts, expected {2 * count}")
    (out / "cards.txt").write_text("\n".join(cards) + "\n")
    (out / "api_key.txt").write_text(full_key + "\n")
    with connection.cursor() as cursor:  # settle the fresh tables, or autovacuum runs mid-bench
        tables = [Member._meta.db_table, Account._meta.db_table, *SEEDED]
        cursor.execute(f"VACUUM (ANALYZE) {', '.join(tables)}")
        cursor.execute("ANALYZE")
    print(
        f"setup_db: {count} members, {accounts} member accounts, store {STORE_CODE!r}, "
        f"key {api_key.prefix} in {time.monotonic() - started:.1f} s"
    )


if __name__ == "__main__":
    main()
