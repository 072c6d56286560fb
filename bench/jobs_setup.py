"""Fill the jobs-bench database with set-based SQL (generate_series): N members (every
10th with a login), their two ledger accounts, and five ledger entries each, so
10 postings a member: 10,000,000 postings for 1,000,000 members.

Each earn has its purchase (no lines), and three tiers on qualifying points exist, so the
tier review has members to place.

Run by bench/jobs.sh after `migrate`, on an empty database:
    python bench/jobs_setup.py OUT_DIR MEMBERS NOW_ISO

Each member m (ids 1..N; accounts 2m-1 spendable, 2m pending; entries and lots 5(m-1)+k):
- entries k=1..4 earn 10-199 points each as a lot earned at a pseudo-random time in the
  13 months before NOW, expiring 12 months after: lots earned 12-13 months ago are due,
  about 8 % of lots, touching about a quarter of the members: a month's worth of
  expiry, as on the first nightly run after going live (a steady nightly run has ~1/30);
- every 10th member's 4th lot is pending (earned 10 days ago): half of those matured
  yesterday (due), half mature in 5 days;
- entry k=5 spends 5-49 points from the member's earliest-expiring lot (a partly spent
  lot), except for 1 % of members where it is a return that clawed back everything they
  had plus 25: a debt, all lots empty.
Loading runs with the triggers off (session_replication_role = replica: no foreign-key
or ledger-trigger checks per row), then bench/jobs_checks.py checks the ledger's
invariants over the whole data set, set-based, before anything is timed.
"""

import os
import sys
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")

import django

django.setup()

from django.db import connection, transaction  # noqa: E402
from jobs_checks import invariants_check  # noqa: E402
from setup_db import CARD_SQL  # noqa: E402

from loyalty.ledger import program_settings, system_account  # noqa: E402
from loyalty.models import AccountKind  # noqa: E402
from partners.models import Partner, Store  # noqa: E402

TABLES = [
    "members_user", "members_member", "loyalty_account", "loyalty_journalentry",
    "loyalty_posting", "loyalty_lot", "loyalty_lotmovement", "loyalty_purchase",
]  # fmt: skip

# A pseudo-random 32-bit number per (m, k), the same on every run.
HASH = "(((4 * m::bigint + k) * 2654435761) %% 4294967291)"


def _run(cursor, statements, params) -> None:
    for sql in statements:
        started = time.monotonic()
        cursor.execute(sql, params)
        print(f"  {time.monotonic() - started:6.1f} s  {' '.join(sql.split())[:70]}", flush=True)


def _sequences_reset(cursor, tables) -> None:
    for table in tables:
        cursor.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))"
        )


def load(count: int, now: datetime) -> None:
    plan = [
        "SET LOCAL session_replication_role = replica",
        "SET LOCAL work_mem = '256MB'",
        # The four earns of each member, as lots.
        f"""CREATE TEMP TABLE earn ON COMMIT DROP AS
            SELECT m, k, 5 * (m - 1) + k AS id, 10 + ({HASH} / 395) %% 190 AS points,
                (m %% 10 = 0 AND k = 4) AS pending,
                CASE WHEN m %% 10 = 0 AND k = 4 THEN %(now)s - interval '10 days'
                     ELSE %(now)s - make_interval(secs => {HASH} %% (395 * 86400))
                END AS earned_at
            FROM generate_series(1, %(n)s) AS m CROSS JOIN generate_series(1, 4) AS k""",
        """ALTER TABLE earn ADD COLUMN expires_at timestamptz, ADD COLUMN matures_at timestamptz,
            ADD COLUMN remaining bigint""",
        """UPDATE earn SET expires_at = earned_at + interval '12 months',
            matures_at = CASE WHEN pending THEN %(now)s + CASE WHEN m %% 20 = 0
                THEN interval '-1 day' ELSE interval '5 days' END END,
            remaining = CASE WHEN m %% 100 = 7 AND NOT pending THEN 0 ELSE points END""",
        # The fifth entry: spend from the earliest-expiring lot, or (1 %%) a clawback.
        """CREATE TEMP TABLE spend ON COMMIT DROP AS
            SELECT DISTINCT ON (m) m, 5 * m AS id, id AS lot_id, m %% 100 = 7 AS debt,
                CASE WHEN m %% 100 = 7 THEN 0 ELSE least(points, 5 + m %% 45) END AS points
            FROM earn WHERE NOT pending ORDER BY m, expires_at, id""",
        """UPDATE spend AS s SET points = t.total + 25 FROM (
                SELECT m, sum(points) AS total FROM earn WHERE NOT pending GROUP BY m
            ) AS t WHERE s.debt AND t.m = s.m""",
        """UPDATE earn AS e SET remaining = e.points - s.points
            FROM spend AS s WHERE e.id = s.lot_id AND NOT s.debt""",
        # What each entry moves on the member's own accounts.
        """CREATE TEMP TABLE leg ON COMMIT DROP AS
            SELECT id AS entry_id, CASE WHEN pending THEN 2 * m ELSE 2 * m - 1 END AS account,
                points AS amount
            FROM earn
            UNION ALL
            SELECT id, 2 * m - 1, -points FROM spend""",
    ]
    people = [
        """INSERT INTO members_user (id, password, last_login, is_superuser, email, first_name,
                last_name, is_staff, is_active, date_joined)
            SELECT i, '!', NULL, false, 'member' || i || '@bench.example', 'Bench',
                'Member ' || i, false, true, %(now)s
            FROM generate_series(1, %(n)s) AS i WHERE i %% 10 = 1""",
        f"""INSERT INTO members_member (id, card_number, first_name, last_name, phone,
                marketing_consent, created_at, user_id)
            SELECT i, {CARD_SQL}, 'Bench', 'Member ' || i, NULL, i %% 2 = 0, %(now)s,
                CASE WHEN i %% 10 = 1 THEN i END
            FROM (SELECT i, '60' || lpad(i::text, 10, '0') AS b
                  FROM generate_series(1, %(n)s) AS i) AS s""",
        # Both accounts of each member, with the balance their postings will add up to.
        """INSERT INTO loyalty_account (id, kind, code, name, balance, created_at, member_id)
            SELECT 2 * m - 1 + k.n, k.kind, NULL, '', coalesce(t.total, 0), %(now)s, m
            FROM generate_series(1, %(n)s) AS m
            CROSS JOIN (VALUES (0, 'member'), (1, 'member_pending')) AS k(n, kind)
            LEFT JOIN (SELECT account, sum(amount) AS total FROM leg GROUP BY account) AS t
                ON t.account = 2 * m - 1 + k.n""",
    ]
    with connection.cursor() as cursor:
        _run(cursor, plan + people, {"n": count, "now": now})
        _sequences_reset(cursor, TABLES[:3])
    # The system accounts come after the members' (ids 1..2N, as bench/setup_db.py has it).
    issuance = system_account(AccountKind.ISSUANCE).pk
    redemption = system_account(AccountKind.REDEMPTION).pk
    system_account(AccountKind.EXPIRY)
    partner = Partner.objects.create(code="bench", name="Bench Retail")
    store = Store.objects.create(partner=partner, code="bench-store", name="Bench Store")
    ledger = [
        """INSERT INTO loyalty_journalentry (id, public_id, kind, description, reason, details,
                source, client, effective_at, created_at, created_by_id, member_id,
                reversal_of_id)
            SELECT id, gen_random_uuid(), 'earn', 'Purchase B-' || id || ' at Bench Store', '',
                '{}'::jsonb, 'api', 'bench', earned_at, earned_at, NULL::bigint, m, NULL::bigint
            FROM earn
            UNION ALL
            SELECT id, gen_random_uuid(), CASE WHEN debt THEN 'return' ELSE 'redeem' END,
                CASE WHEN debt THEN 'Return of everything' ELSE 'Reward' END, '',
                '{}'::jsonb, CASE WHEN debt THEN 'api' ELSE 'member' END, '',
                %(now)s - interval '5 days', %(now)s - interval '5 days', NULL, m, NULL
            FROM spend""",
        # The member legs with their account's running balance, then the counter legs.
        """INSERT INTO loyalty_posting (entry_id, account_id, amount, balance_after)
            SELECT entry_id, account, amount,
                sum(amount) OVER (PARTITION BY account ORDER BY entry_id)
            FROM leg
            UNION ALL
            SELECT id, %(issuance)s, -points, NULL::bigint FROM earn
            UNION ALL
            SELECT id, CASE WHEN debt THEN %(issuance)s ELSE %(redemption)s END, points, NULL
            FROM spend""",
        """INSERT INTO loyalty_lot (id, account_id, entry_id, points, remaining, earned_at,
                expires_at, pending, matures_at)
            SELECT id, 2 * m - 1, id, points, remaining, earned_at, expires_at, pending,
                matures_at
            FROM earn""",
        """INSERT INTO loyalty_lotmovement (entry_id, lot_id, points, refund_of_id)
            SELECT s.id, s.lot_id, -s.points, NULL::bigint FROM spend AS s WHERE NOT s.debt
            UNION ALL
            SELECT s.id, e.id, -e.points, NULL
            FROM spend AS s JOIN earn AS e ON e.m = s.m AND NOT e.pending WHERE s.debt""",
        # The purchase behind each earn (what tier qualification counts), without lines.
        """INSERT INTO loyalty_purchase (id, public_id, store_id, receipt_id, member_id,
                occurred_at, currency, total, points_earned, points_redeemed, breakdown,
                earn_entry_id, redeem_entry_id, created_at)
            SELECT id, gen_random_uuid(), %(store)s, 'B-' || id, m, earned_at, 'EUR',
                points + 0.50, points, 0, '[]'::jsonb, id, NULL::bigint, earned_at
            FROM earn""",
    ]
    params = {
        "n": count, "now": now, "issuance": issuance, "redemption": redemption, "store": store.pk,
    }  # fmt: skip
    with connection.cursor() as cursor:
        _run(cursor, ledger, params)
        _sequences_reset(cursor, TABLES[3:])


def tiers_create() -> None:
    """Three tiers on qualifying points (12-month window), so tier_review has members to
    place: a member earns ~390 points a year here, so about half reach VIB."""
    from loyalty.models import Tier

    settings = program_settings()
    settings.tier_basis, settings.tier_window_months = "points", 12
    settings.save()
    for rank, (code, name, threshold) in enumerate(
        [("insider", "Insider", 0), ("vib", "VIB", 300), ("rouge", "Rouge", 600)]
    ):
        Tier.objects.create(code=code, name=name, rank=rank, threshold=threshold)


def main() -> None:
    out, count, now = Path(sys.argv[1]), int(sys.argv[2]), datetime.fromisoformat(sys.argv[3])
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM members_member")
        if cursor.fetchone()[0]:
            raise SystemExit("jobs_setup: the database already has members; use a fresh one")
    with transaction.atomic():
        program_settings()
        load(count, now)
        tiers_create()
    loaded = time.monotonic() - started
    with connection.cursor() as cursor:
        started = time.monotonic()
        cursor.execute(f"VACUUM (ANALYZE) {', '.join(TABLES)}")  # as autovacuum would have
        vacuumed = time.monotonic() - started
        cursor.execute("SELECT count(*) FROM loyalty_posting")
        postings = cursor.fetchone()[0]
    started = time.monotonic()
    problems = invariants_check()
    checked = time.monotonic() - started
    if problems:
        raise SystemExit(f"jobs_setup: the loaded ledger is inconsistent: {problems}")
    print(
        f"jobs_setup: {count:,} members, {postings:,} postings loaded in {loaded:.0f} s, "
        f"vacuumed in {vacuumed:.0f} s, invariants checked in {checked:.0f} s"
    )


if __name__ == "__main__":
    main()
