"""The ledger's invariants (loyalty/ledger.py's docstring), checked set-based over the
whole bench database: after loading it, and again after the jobs ran."""

from django.db import connection

CHECKS = {
    "entries whose postings do not sum to zero": """
        SELECT count(*) FROM (
            SELECT entry_id FROM loyalty_posting GROUP BY entry_id
            HAVING sum(amount) <> 0 OR count(*) < 2) AS unbalanced""",
    "entries without postings": """
        SELECT count(*) FROM loyalty_journalentry AS e
        WHERE NOT EXISTS (SELECT 1 FROM loyalty_posting AS p WHERE p.entry_id = e.id)""",
    "member accounts whose balance is not the sum of their postings": """
        SELECT count(*) FROM loyalty_account AS a
        LEFT JOIN (SELECT account_id, sum(amount) AS total FROM loyalty_posting
                   GROUP BY account_id) AS p ON p.account_id = a.id
        WHERE a.member_id IS NOT NULL AND a.balance <> coalesce(p.total, 0)""",
    "members whose lots do not add up to their balances": """
        SELECT count(*) FROM loyalty_account AS a
        JOIN loyalty_account AS held ON held.member_id = a.member_id
            AND held.kind = 'member_pending'
        LEFT JOIN (SELECT account_id,
                          sum(remaining) FILTER (WHERE NOT pending) AS available,
                          sum(remaining) FILTER (WHERE pending) AS pending
                   FROM loyalty_lot GROUP BY account_id) AS l ON l.account_id = a.id
        WHERE a.kind = 'member' AND (coalesce(l.available, 0) <> greatest(a.balance, 0)
                                     OR coalesce(l.pending, 0) <> held.balance)""",
    "lots with a remainder outside 0..points": """
        SELECT count(*) FROM loyalty_lot WHERE remaining < 0 OR remaining > points""",
}


def invariants_check() -> dict[str, int]:
    """{what is wrong: how many rows} for every check that fails; empty when all hold."""
    problems = {}
    with connection.cursor() as cursor:
        for what, sql in CHECKS.items():
            cursor.execute(sql)
            bad = cursor.fetchone()[0]
            if bad:
                problems[what] = bad
    return problems
