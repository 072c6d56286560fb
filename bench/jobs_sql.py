"""The lower bound for the nightly jobs: the same ledger writes as mature_pending and
expire_points (one entry per member, two postings, lot movements, lots and balances
updated), hand-written as a few set-based statements over the whole table in one
transaction, with no Python and no batching. bench/jobs_bench.py times them and rolls
them back, so the jobs then run on the very same data.

Parameters: %(now)s (the jobs' "now") and %(expiry)s (the expiry account's id).
"""

MATURE = [
    """CREATE TEMP TABLE mdue ON COMMIT DROP AS
        SELECT l.id, l.account_id, a.member_id, l.remaining
        FROM loyalty_lot AS l JOIN loyalty_account AS a ON a.id = l.account_id
        WHERE l.pending AND l.matures_at <= %(now)s""",
    """SELECT count(*) FROM (
        SELECT a.id FROM loyalty_account AS a
        WHERE a.member_id IN (SELECT member_id FROM mdue) ORDER BY a.id FOR UPDATE) AS locked""",
    # A debt is paid off by the maturing lots first, in lot order.
    """CREATE TEMP TABLE mlot ON COMMIT DROP AS
        SELECT d.id, d.account_id, d.member_id, d.remaining,
            least(d.remaining, greatest(0, greatest(0, -a.balance) - coalesce(sum(d.remaining)
                OVER (PARTITION BY d.account_id ORDER BY d.id
                      ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0))) AS absorbed
        FROM mdue AS d JOIN loyalty_account AS a ON a.id = d.account_id""",
    """CREATE TEMP TABLE mper ON COMMIT DROP AS
        SELECT t.*, nextval(pg_get_serial_sequence('loyalty_journalentry', 'id')) AS entry_id,
            h.id AS held_id
        FROM (SELECT account_id, member_id, sum(remaining) AS total FROM mlot
              GROUP BY account_id, member_id HAVING sum(remaining) > 0) AS t
        JOIN loyalty_account AS h ON h.member_id = t.member_id AND h.kind = 'member_pending'""",
    """INSERT INTO loyalty_journalentry (id, public_id, kind, description, reason, details,
            source, client, effective_at, created_at, created_by_id, member_id, reversal_of_id)
        SELECT entry_id, gen_random_uuid(), 'maturation',
            total || ' pending points are now available', '', jsonb_build_object('points', total),
            'system', '', now(), now(), NULL::bigint, member_id, NULL::bigint
        FROM mper""",
    """INSERT INTO loyalty_posting (entry_id, account_id, amount, balance_after)
        SELECT p.entry_id, p.held_id, -p.total, h.balance - p.total
        FROM mper AS p JOIN loyalty_account AS h ON h.id = p.held_id
        UNION ALL
        SELECT p.entry_id, p.account_id, p.total, a.balance + p.total
        FROM mper AS p JOIN loyalty_account AS a ON a.id = p.account_id""",
    """UPDATE loyalty_lot AS l SET pending = false, remaining = l.remaining - m.absorbed
        FROM mlot AS m WHERE l.id = m.id""",
    """UPDATE loyalty_account AS a SET balance = a.balance + d.delta
        FROM (SELECT held_id AS id, -total AS delta FROM mper
              UNION ALL SELECT account_id, total FROM mper) AS d
        WHERE a.id = d.id""",
]
MATURE_COUNTS = "SELECT count(*), coalesce(sum(total), 0), (SELECT count(*) FROM mlot) FROM mper"

EXPIRE = [
    """CREATE TEMP TABLE due ON COMMIT DROP AS
        SELECT l.id, l.account_id, a.member_id, l.remaining, l.earned_at, l.expires_at
        FROM loyalty_lot AS l JOIN loyalty_account AS a ON a.id = l.account_id
        WHERE NOT l.pending AND l.remaining > 0 AND l.expires_at <= %(now)s""",
    """SELECT count(*) FROM (
        SELECT a.id FROM loyalty_account AS a
        WHERE a.id IN (SELECT account_id FROM due) ORDER BY a.id FOR UPDATE) AS locked""",
    """CREATE TEMP TABLE per ON COMMIT DROP AS
        SELECT account_id, member_id, sum(remaining) AS total,
            jsonb_build_object('lots', jsonb_agg(jsonb_build_object(
                'earned_at', to_char(earned_at AT TIME ZONE 'UTC',
                                     'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'),
                'points', remaining,
                'expired_at', to_char(expires_at AT TIME ZONE 'UTC',
                                      'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'))
                ORDER BY expires_at, id)) AS details,
            nextval(pg_get_serial_sequence('loyalty_journalentry', 'id')) AS entry_id
        FROM due GROUP BY account_id, member_id""",
    """INSERT INTO loyalty_journalentry (id, public_id, kind, description, reason, details,
            source, client, effective_at, created_at, created_by_id, member_id, reversal_of_id)
        SELECT entry_id, gen_random_uuid(), 'expiry', total || ' points reached their expiry date',
            'Points reached their expiry date', details, 'system', '', now(), now(),
            NULL::bigint, member_id, NULL::bigint
        FROM per""",
    """INSERT INTO loyalty_posting (entry_id, account_id, amount, balance_after)
        SELECT p.entry_id, p.account_id, -p.total, a.balance - p.total
        FROM per AS p JOIN loyalty_account AS a ON a.id = p.account_id
        UNION ALL
        SELECT entry_id, %(expiry)s, total, NULL::bigint FROM per""",
    """INSERT INTO loyalty_lotmovement (entry_id, lot_id, points, refund_of_id)
        SELECT p.entry_id, d.id, -d.remaining, NULL::bigint
        FROM due AS d JOIN per AS p ON p.account_id = d.account_id""",
    "UPDATE loyalty_lot AS l SET remaining = 0 FROM due AS d WHERE l.id = d.id",
    """UPDATE loyalty_account AS a SET balance = a.balance - p.total
        FROM per AS p WHERE a.id = p.account_id""",
]
EXPIRE_COUNTS = "SELECT count(*), coalesce(sum(total), 0), (SELECT count(*) FROM due) FROM per"

# The ledger's deferred trigger (every entry's postings sum to zero) runs at commit; the
# jobs pay for it, so the lower bound does too, before rolling back.
CHECK_DEFERRED = "SET CONSTRAINTS ALL IMMEDIATE"
