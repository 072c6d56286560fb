"""Capture the SQL that one `POST /api/v1/purchases` executes and turn it into a pgbench
script that runs the same statements, in the same transaction, for a random member.

    python bench/pgbench_script.py OUT_DIR MEMBERS
    python bench/pgbench_script.py --verify OUT_DIR PGBENCH   (after the API run)

Runs one purchase through the whole Django stack in-process (middleware, API-key auth,
throttle, idempotency, ledger), recording every statement with connection.execute_wrapper.
Writes OUT_DIR/purchase.pgbench (the script), OUT_DIR/purchase.sql (the statements as
captured) and OUT_DIR/capture.json (statement count and the rows the purchase added per
table). --verify runs the script once with pgbench and fails unless that transaction
added the same rows to the same tables.

How values become pgbench variables (bench/setup_db.py's id scheme makes this exact):
member id -> :mid, its accounts -> 2*:mid-1 and 2*:mid, card number -> computed from :mid
with the EAN-13 check digit, receipt and idempotency key -> a random :rid, UUIDs ->
gen_random_uuid(), ids returned by an INSERT and used later -> \\gset variables.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")

import django

django.setup()

from django.apps import apps  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from payload import purchase_body  # noqa: E402

from loyalty.models import Account  # noqa: E402
from members.models import Member  # noqa: E402

MARK = "PGBCAPTURE"  # the receipt / idempotency key suffix of the captured purchase
SEQ_BASE = 7_310_000_000  # ids of captured inserts start here: easy to find in the SQL
SEQ_STEP = 10_000_000
APPS = ("members", "partners", "loyalty", "rewards")
UUID_LITERAL = re.compile(r"'(?:[0-9a-f]{32}|[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12})'::uuid")
ADVISORY = re.compile(r"pg_try_advisory_xact_lock\(-?\d+\)")


def table_counts() -> dict[str, int]:
    counts = {}
    with connection.cursor() as cursor:
        for model in apps.get_models():
            if model._meta.app_label in APPS and not model._meta.proxy:
                table = model._meta.db_table
                cursor.execute(f'SELECT count(*) FROM "{table}"')
                counts[table] = cursor.fetchone()[0]
    return counts


def post_purchase(client: Client, key: str, card: str, suffix: str):
    response = client.post(
        "/api/v1/purchases",
        data=json.dumps(purchase_body(card, f"R-{suffix}")),
        content_type="application/json",
        headers={"Authorization": f"Api-Key {key}", "Idempotency-Key": f"K-{suffix}"},
    )
    if response.status_code != 201:
        raise SystemExit(f"pgbench_script: purchase answered {response.status_code}: "
                         f"{response.content[:500]!r}")  # fmt: skip


def distinct_sequences() -> dict[str, int]:
    """Move the id sequence of every table that a purchase may insert into to a distinctive
    base, so the captured ids can be recognised in later statements."""
    bases = {}
    with connection.cursor() as cursor:
        models = [
            m for m in apps.get_models()
            if m._meta.app_label in APPS and m not in (Member, Account) and not m._meta.proxy
            and m._meta.pk.get_internal_type() in ("AutoField", "BigAutoField")
        ]  # fmt: skip
        for i, model in enumerate(sorted(models, key=lambda m: m._meta.db_table)):
            table = model._meta.db_table
            cursor.execute("SELECT pg_get_serial_sequence(%s, 'id')", [table])
            if cursor.fetchone()[0] is None:
                continue
            base = SEQ_BASE + i * SEQ_STEP
            cursor.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), {base})")
            bases[table] = base
    return bases


QUOTED = re.compile(r"'(?:[^']|'')*'")
VARIABLE = re.compile(r":([a-z_][a-z0-9_]*)")


def variables_unquoted(sql: str) -> str:
    """Pull pgbench variables out of string literals: 'K-:rid' -> ('K-' || :rid). pgbench
    -M prepared sends variables as parameters, and a parameter inside quotes is just text.
    The string pieces keep the expression text, so a following ::type cast still applies."""

    def split(match: re.Match) -> str:
        literal = match.group(0)
        if not VARIABLE.search(literal):
            return literal
        pieces = VARIABLE.split(literal[1:-1])  # text, name, text, name, ..., text
        parts = [
            f":{piece}" if i % 2 else "'" + piece + "'"
            for i, piece in enumerate(pieces)
            if i % 2 or piece or i == 0
        ]
        return "(" + " || ".join(parts) + ")"

    return QUOTED.sub(split, sql)


def card_expression() -> str:
    """pgbench expression: the EAN-13 card number of member :mid ("60" + 10-digit id + check)."""
    weights = [1 if i % 2 == 0 else 3 for i in range(12)]
    digits = [f"{w} * ((:body / {10 ** (11 - i)}) % 10)" for i, w in enumerate(weights)]
    return f":body * 10 + (10 - ({' + '.join(digits)}) % 10) % 10"


def main() -> None:
    out = Path(sys.argv[1])
    members = int(sys.argv[2])
    key = (out / "api_key.txt").read_text().strip()
    client = Client(HTTP_HOST="127.0.0.1")

    # A first purchase warms the process up (and moves the key's last_used_at, which is
    # written at most once a minute): the captured one is the steady-state path.
    warm = Member.objects.get(pk=1)
    post_purchase(client, key, warm.card_number, "PGBWARMUP")

    member = Member.objects.get(pk=min(54_321, members))
    accounts = {a.kind: a.pk for a in Account.objects.filter(member=member)}
    assert sorted(accounts.values()) == [2 * member.pk - 1, 2 * member.pk], accounts
    bases = distinct_sequences()
    before = table_counts()

    captured: list[tuple[str, bool]] = []

    def record(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        db = context["connection"]
        text = db.ops.last_executed_query(context["cursor"].cursor, sql, params)
        captured.append((text, db.in_atomic_block))
        return result

    with connection.execute_wrapper(record):
        post_purchase(client, key, member.card_number, MARK)
    after = table_counts()
    added = {t: after[t] - before[t] for t in after if after[t] != before[t]}
    (out / "purchase.sql").write_text(
        "".join(f"-- {'in transaction' if tx else 'autocommit'}\n{sql};\n" for sql, tx in captured)
    )

    # Values of the captured purchase -> pgbench variables.
    replace = [
        (re.compile(rf"'{member.card_number}'"), "':card'"),
        (re.compile(rf"\b{member.pk}\b"), ":mid"),
        (re.compile(rf"\b{2 * member.pk - 1}\b"), ":acc"),
        (re.compile(rf"\b{2 * member.pk}\b"), ":accp"),
        (re.compile(MARK), ":rid"),
        (UUID_LITERAL, "gen_random_uuid()"),
        (ADVISORY, "pg_try_advisory_xact_lock(:rid)"),
    ]
    returned_id = re.compile(r'RETURNING "(\w+)"\."id"$')
    # db_copy.family_insert: a parent row with its children, the ids of all coming back
    # tagged by table; a later statement only ever uses the parent's (t0).
    family = re.compile(r'^WITH t0 AS \(INSERT INTO "(\w+)".*? (SELECT 0, "id" FROM t0 .*)$')
    lines = [
        f"-- One POST /api/v1/purchases as Django executes it ({len(captured)} statements),",
        "-- generated by bench/pgbench_script.py. Run with pgbench -M prepared: the app",
        "-- prepares its statements too (DB_PREPARED_STATEMENTS).",
        f"\\set mid random(1, {members})",
        "\\set rid random(1, 9000000000000000000)",
        "\\set body 600000000000 + :mid",
        f"\\set card {card_expression()}",
        "\\set acc 2 * :mid - 1",
        "\\set accp 2 * :mid",
    ]
    later_ids: dict[str, str] = {}  # literal id -> variable
    in_tx = False
    for index, (sql, tx) in enumerate(captured):
        if tx and not in_tx:
            lines.append("BEGIN;")
        if not tx and in_tx:
            lines.append("COMMIT;")
        in_tx = tx
        for pattern, variable in replace:
            sql = pattern.sub(variable, sql)
        for literal, variable in later_ids.items():
            sql = re.sub(rf"\b{literal}\b", variable, sql)
        sql = variables_unquoted(" ".join(sql.split()))  # pgbench reads a statement a line
        found = returned_id.search(sql) or family.search(sql)
        if found and found.group(1) in bases:
            table = found.group(1)
            first_id = str(bases[table] + 1)
            rest = " ".join(text for text, _ in captured[index + 1 :])
            if re.search(rf"\b{first_id}\b", rest):
                prefix = f"{table}_"
                later_ids[first_id] = f":{prefix}id"
                if found.re is family:  # \gset takes one row: the parent's id alone
                    sql = sql[: found.start(2)] + 'SELECT "id" FROM t0'
                lines.append(f"{sql} \\gset {prefix}")
                continue
        lines.append(f"{sql};")
    if in_tx:
        lines.append("COMMIT;")
    script = "\n".join(lines) + "\n"
    leftover = re.findall(r"\b7[3-9]\d{8}\b|'[0-9a-f-]{32,36}'::uuid|" + MARK, script)
    if leftover:
        raise SystemExit(f"pgbench_script: captured ids left in the script: {leftover[:5]}")
    (out / "purchase.pgbench").write_text(script)
    (out / "capture.json").write_text(
        json.dumps({"statements": len(captured), "rows_added": added}, indent=2)
    )
    print(f"pgbench_script: {len(captured)} statements per purchase; rows added {added}")


def verify(out: Path, pgbench: str) -> None:
    expected = json.loads((out / "capture.json").read_text())["rows_added"]
    before = table_counts()
    settings = connection.settings_dict
    run = subprocess.run(
        [pgbench, "-n", "-M", "prepared", "-t", "1", "-c", "1", "-h", settings["HOST"],
         "-p", str(settings["PORT"]), "-U", settings["USER"], "-f", str(out / "purchase.pgbench"),
         settings["NAME"]],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if run.returncode != 0 or "number of failed transactions: 0" not in run.stdout:
        raise SystemExit(f"pgbench_script: the script failed:\n{run.stdout}\n{run.stderr}")
    after = table_counts()
    added = {t: after[t] - before[t] for t in after if after[t] != before[t]}
    if added != expected:
        raise SystemExit(f"pgbench_script: pgbench added {added}, the API added {expected}")
    print(f"pgbench_script: one pgbench transaction added the same rows as the API: {added}")


if __name__ == "__main__":
    if sys.argv[1] == "--verify":
        verify(Path(sys.argv[2]), sys.argv[3])
    else:
        main()
