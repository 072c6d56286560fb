"""The lower bound for the nightly jobs: the same ledger writes as mature_pending and
expire_points (one entry per member, two postings, lot movements, lots and balances
updated), and the same decisions and rows as tier_review (member tiers and tier changes),
hand-written as a few set-based statements over the whole table in one transaction, with
no Python and no batching. bench/jobs_bench.py times them and rolls them back, so the
jobs then run on the very same data.

Parameters: %(now)s (the jobs' "now"), %(expiry)s (the expiry account's id) and %(zone)s
(settings.TIME_ZONE: the review's "today" starts at its midnight).
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
MATURE_COUNTS = """SELECT count(*) AS members, coalesce(sum(total), 0) AS points,
    (SELECT count(*) FROM mlot) AS lots FROM mper"""

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
EXPIRE_COUNTS = """SELECT count(*) AS members, coalesce(sum(total), 0) AS points,
    (SELECT count(*) FROM due) AS lots FROM per"""

# tier_review (loyalty/tiers.py: tiers_review, _review_batch, _decide, _write_moves), for
# every member at once. Month arithmetic (the window, the guaranteed periods) is done on
# UTC's calendar, as relativedelta does on the bench's "now" (given as +00:00).
REVIEW = [
    # The program's settings: the window starts `tier_window_months` before now.
    """CREATE TEMP TABLE rset ON COMMIT DROP AS
        SELECT tier_basis AS basis, tier_window_months AS months, point_value, currency,
            %(now)s::timestamptz AS now,
            (%(now)s::timestamptz AT TIME ZONE 'UTC' - make_interval(months => tier_window_months))
                AT TIME ZONE 'UTC' AS since,
            date_trunc('day', %(now)s::timestamptz, %(zone)s) AS day_start
        FROM loyalty_programsettings WHERE id = 1""",
    # Every tier, with the active tier below it and the end of the guaranteed period it
    # would get now (none for a tier with threshold 0: guarantee_end).
    """CREATE TEMP TABLE rtier ON COMMIT DROP AS
        SELECT t.id, t.rank, t.threshold, t.is_active,
            (SELECT b.id FROM loyalty_tier AS b WHERE b.is_active AND b.rank < t.rank
             ORDER BY b.rank DESC LIMIT 1) AS below_id,
            CASE WHEN t.threshold > 0 THEN (r.now AT TIME ZONE 'UTC'
                + make_interval(months => greatest(t.guaranteed_months, 1))) AT TIME ZONE 'UTC'
            END AS until
        FROM loyalty_tier AS t CROSS JOIN rset AS r""",
    # Without statistics PostgreSQL takes these two for hundreds of rows each, and the
    # wildly inflated estimates send the next statements through JIT compilation.
    "ANALYZE rset, rtier",
    # The review locks the tier rows it decides about (in batches; here all at once).
    """SELECT count(*) FROM (
        SELECT member_id FROM loyalty_membertier ORDER BY member_id FOR UPDATE) AS locked""",
    # Qualification of every member with a purchase in the window (_purchase_contribution):
    # points earned less points returns took back, or money paid less the returned share;
    # the joins the basis does not need are skipped (one-time filters). Rounded to cents
    # half-to-even, as Decimal.quantize does.
    """CREATE TEMP TABLE rq ON COMMIT DROP AS
        SELECT member_id, round(CASE
                WHEN q * 100 - trunc(q * 100) = 0.5 * sign(q) AND mod(trunc(q * 100), 2) = 0
                THEN trunc(q * 100) / 100 ELSE q END, 2) AS q
        FROM (
            SELECT p.member_id, sum(CASE WHEN r.basis = 'points'
                THEN p.points_earned - coalesce(pr.points, 0)
                ELSE coalesce(
                    greatest(p.total - p.points_redeemed * r.point_value, 0)
                        * (1 - coalesce(rl.amount, 0) / nullif(pl.amount, 0)),
                    greatest(p.total - p.points_redeemed * r.point_value, 0))
                END) AS q
            FROM loyalty_purchase AS p
            CROSS JOIN rset AS r
            LEFT JOIN (
                SELECT purchase_id, sum(points_reversed) AS points FROM loyalty_purchasereturn
                WHERE (SELECT basis FROM rset) = 'points' GROUP BY purchase_id
            ) AS pr ON pr.purchase_id = p.id
            LEFT JOIN (
                SELECT purchase_id, sum(quantity * unit_price) AS amount FROM loyalty_purchaseline
                WHERE (SELECT basis FROM rset) <> 'points' GROUP BY purchase_id
            ) AS pl ON pl.purchase_id = p.id
            LEFT JOIN (
                SELECT l.purchase_id, sum(x.quantity * l.unit_price) AS amount
                FROM loyalty_purchasereturnline AS x
                JOIN loyalty_purchaseline AS l ON l.id = x.line_id
                WHERE (SELECT basis FROM rset) <> 'points' GROUP BY l.purchase_id
            ) AS rl ON rl.purchase_id = p.id
            WHERE p.occurred_at > r.since
            GROUP BY p.member_id
        ) AS s""",
    "ANALYZE rq",
    # _decide for every member with a tier row or a purchase in the window: up (straight to
    # the highest tier reached), nothing for the entry tier (or none), and once the
    # guaranteed period has ended (and the tier was not set today) renew, or down one
    # level unless a running paid membership holds the tier (held); below the threshold
    # but still guaranteed: later. Nothing at all when no tier is active.
    """CREATE TEMP TABLE rmove ON COMMIT DROP AS
        WITH entry AS (
            SELECT id FROM (SELECT id, threshold FROM rtier WHERE is_active
                            ORDER BY rank LIMIT 1) AS lowest WHERE threshold <= 0
        ), paid AS (
            SELECT m.member_id, max(t.rank) AS rank
            FROM loyalty_membership AS m
            JOIN loyalty_membershipplan AS plan ON plan.id = m.plan_id
            JOIN loyalty_tier AS t ON t.id = plan.tier_id
            CROSS JOIN rset AS r
            WHERE m.starts_at <= r.now AND m.ends_at > r.now AND m.status <> 'cancelled'
            GROUP BY m.member_id
        ), candidate AS (
            SELECT coalesce(s.member_id, q.member_id) AS member_id,
                s.member_id IS NOT NULL AS has_row, s.tier_id, s.since, s.guaranteed_until,
                coalesce(q.q, 0) AS q, coalesce(q.q::text, '0') AS q_text
            FROM loyalty_membertier AS s FULL JOIN rq AS q ON q.member_id = s.member_id
        ), decided AS (
            SELECT c.*, held.id AS old_id, held.threshold AS held_threshold,
                reached.id AS reached_id, reached.threshold AS reached_threshold,
                CASE
                    WHEN coalesce(reached.rank, -1) > coalesce(held.rank, -1) THEN 'up'
                    WHEN NOT c.has_row OR c.tier_id IS NULL OR held.id IS NULL
                        OR (held.is_active AND held.threshold <= 0) THEN NULL
                    WHEN NOT ((c.guaranteed_until IS NULL OR c.guaranteed_until <= r.now)
                              AND c.since < r.day_start)
                        THEN CASE WHEN held.is_active AND c.q >= held.threshold THEN NULL
                                  ELSE 'later' END
                    WHEN held.is_active AND c.q >= held.threshold THEN 'renew'
                    WHEN coalesce(f.rank, -1) >= held.rank THEN 'held'
                    ELSE 'down'
                END AS kind,
                held.below_id
            FROM candidate AS c
            CROSS JOIN rset AS r
            LEFT JOIN rtier AS held ON held.id = coalesce(c.tier_id, (SELECT id FROM entry))
            LEFT JOIN LATERAL (
                SELECT id, rank, threshold FROM rtier
                WHERE is_active AND threshold <= c.q ORDER BY rank DESC LIMIT 1
            ) AS reached ON true
            LEFT JOIN paid AS f ON f.member_id = c.member_id
            WHERE EXISTS (SELECT 1 FROM rtier WHERE is_active)
        )
        SELECT d.member_id, d.has_row, d.kind, d.old_id,
            CASE d.kind WHEN 'up' THEN d.reached_id WHEN 'down' THEN d.below_id
                        ELSE d.old_id END AS new_id,
            nt.until,
            CASE WHEN d.kind IN ('up', 'down') THEN jsonb_build_object(
                'basis', r.basis, 'qualification', d.q_text,
                'threshold', (CASE d.kind WHEN 'up' THEN d.reached_threshold
                              ELSE d.held_threshold END)::text,
                'window_months', r.months, 'currency', r.currency) END AS details
        FROM decided AS d
        CROSS JOIN rset AS r
        LEFT JOIN rtier AS nt ON nt.id = CASE d.kind WHEN 'up' THEN d.reached_id
                                          WHEN 'down' THEN d.below_id ELSE d.old_id END
        WHERE d.kind IS NOT NULL""",
    # _write_moves: moves and renewals of existing rows (a renewal keeps tier and since).
    """UPDATE loyalty_membertier AS s
        SET tier_id = m.new_id, guaranteed_until = m.until,
            since = CASE WHEN m.kind = 'renew' THEN s.since ELSE r.now END
        FROM rmove AS m CROSS JOIN rset AS r
        WHERE s.member_id = m.member_id AND m.has_row AND m.kind IN ('up', 'down', 'renew')""",
    # New rows (a row a purchase inserted meanwhile wins), then a change for every move
    # of a row that was there or was inserted here.
    """WITH inserted AS (
            INSERT INTO loyalty_membertier (member_id, tier_id, since, guaranteed_until)
            SELECT m.member_id, m.new_id, r.now, m.until
            FROM rmove AS m CROSS JOIN rset AS r WHERE NOT m.has_row AND m.kind = 'up'
            ON CONFLICT (member_id) DO NOTHING
            RETURNING member_id
        )
        INSERT INTO loyalty_tierchange (member_id, from_tier_id, to_tier_id, cause, reason,
            details, staff_id, at)
        SELECT m.member_id, m.old_id, m.new_id, 'review', '', m.details, NULL::bigint, r.now
        FROM rmove AS m CROSS JOIN rset AS r
        WHERE m.kind IN ('up', 'down')
            AND (m.has_row OR m.member_id IN (SELECT member_id FROM inserted))""",
]
# The job's ReviewResult, field by field.
REVIEW_COUNTS = """SELECT count(*) FILTER (WHERE kind = 'up') AS up,
    count(*) FILTER (WHERE kind = 'down') AS down,
    count(*) FILTER (WHERE kind = 'renew') AS renewed,
    count(*) FILTER (WHERE kind = 'later') AS down_later,
    count(*) FILTER (WHERE kind = 'held') AS held_by_plan
    FROM rmove"""

# The ledger's deferred trigger (every entry's postings sum to zero) runs at commit; the
# jobs pay for it, so the lower bound does too, before rolling back.
CHECK_DEFERRED = "SET CONSTRAINTS ALL IMMEDIATE"
