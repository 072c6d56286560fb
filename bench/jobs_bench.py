"""Time the nightly jobs on the database bench/jobs_setup.py loaded, against the lower
bound of the same writes in hand-written SQL; check the results agree and the ledger's
invariants still hold. Run by bench/jobs.sh:
    python bench/jobs_bench.py OUT_DIR NOW_ISO

1. The lower bound: bench/jobs_sql.py's statements for maturation, expiry and the tier
   review, in one transaction, timed, then rolled back (and the touched tables
   vacuumed), so the jobs meet the very same data.
2. Each nightly job as operators run it by hand, `manage.py run_job <job> --now NOW`,
   under /usr/bin/time -v: wall time and peak memory (maximum resident set size) of the
   whole process; its counts from its JobRun.
3. The counts of the jobs must equal the lower bound's (exit 1 otherwise); a second
   expire_points run must find nothing; the invariants are checked over everything.
"""

import os
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")

import django

django.setup()

from django.conf import settings  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from jobs_checks import invariants_check  # noqa: E402
from jobs_sql import EXPIRE, EXPIRE_COUNTS, MATURE, MATURE_COUNTS, REVIEW, REVIEW_COUNTS  # noqa: E402

from loyalty import jobs  # noqa: E402
from loyalty.ledger import system_account  # noqa: E402
from loyalty.models import AccountKind, JobRun  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
NIGHTLY = ["mature_pending", "expire_points", "expiry_notices", "tier_review"]
TOUCHED = ["loyalty_lot", "loyalty_account", "loyalty_journalentry", "loyalty_posting",
           "loyalty_lotmovement", "loyalty_membertier", "loyalty_tierchange"]  # fmt: skip


def scalar(sql: str, params=None):
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()[0]


def data_summary(now: datetime) -> str:
    members = scalar("SELECT count(*) FROM members_member")
    postings = scalar("SELECT count(*) FROM loyalty_posting")
    lots = scalar("SELECT count(*) FROM loyalty_lot")
    due = scalar(
        "SELECT count(*) FROM loyalty_lot WHERE NOT pending AND remaining > 0 AND expires_at <= %s",
        [now],
    )
    maturing = scalar("SELECT count(*) FROM loyalty_lot WHERE pending AND matures_at <= %s", [now])
    return (
        f"{members:,} members, {postings:,} postings, {lots:,} lots: {due:,} due to expire "
        f"({due / max(lots, 1):.1%}), {maturing:,} pending lots due to mature"
    )


def lower_bound(now: datetime) -> dict[str, tuple[float, dict]]:
    """{job: (seconds, counts)} of the hand-written SQL, rolled back afterwards; the counts
    are named as the job's (its JobRun.counts), so they compare as they are."""
    params = {
        "now": now, "expiry": system_account(AccountKind.EXPIRY).pk, "zone": settings.TIME_ZONE,
    }  # fmt: skip
    results = {}
    with transaction.atomic(), connection.cursor() as cursor:
        # The ledger's balanced-entry trigger fires at each statement's end instead of at
        # commit, which never comes here: the SQL pays for it as the jobs do.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        for name, statements, counts_sql in [
            ("mature_pending", MATURE, MATURE_COUNTS),
            ("expire_points", EXPIRE, EXPIRE_COUNTS),
            ("tier_review", REVIEW, REVIEW_COUNTS),
        ]:
            started = time.monotonic()
            for sql in statements:
                cursor.execute(sql, params)
            seconds = time.monotonic() - started
            cursor.execute(counts_sql)
            names = [column.name for column in cursor.description]
            results[name] = (seconds, dict(zip(names, cursor.fetchone(), strict=True)))
        transaction.set_rollback(True)
    return results


def run_job(name: str, now: datetime, out: Path) -> tuple[float, float, float, dict]:
    """(process seconds, job seconds, peak MB, counts) of `manage.py run_job name --now now`:
    the process includes Django's start-up, the job's own time is its JobRun's."""
    command = [sys.executable, str(ROOT / "manage.py"), "run_job", name, "--now", now.isoformat()]
    timer = Path("/usr/bin/time").exists()  # Debian package "time"
    if timer:
        command = ["/usr/bin/time", "-v", *command]
    started = time.monotonic()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    log = done.stdout + done.stderr
    (out / f"job-{name}.log").write_text(log)
    if done.returncode:
        raise SystemExit(f"jobs_bench: {name} failed:\n{log[-3000:]}")
    peak = float("nan")
    if timer:
        found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", log)
        peak = int(found.group(1)) / 1024 if found else peak
    else:
        found = re.search(r"peak memory (\d+) MB", log)
        peak = float(found.group(1)) if found else peak
    run = JobRun.objects.filter(job=name).latest("created_at")
    return seconds, (run.finished_at - run.started_at).total_seconds(), peak, run.counts


def main() -> None:
    out, now = Path(sys.argv[1]), datetime.fromisoformat(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"data         : {data_summary(now)}"]
    print(lines[0], flush=True)

    print("lower bound: hand-written SQL, rolled back", flush=True)
    bound = lower_bound(now)
    started = time.monotonic()
    with connection.cursor() as cursor:
        cursor.execute(f"VACUUM {', '.join(TOUCHED)}")  # what the rollback left behind
    print(f"  vacuumed the rolled-back rows in {time.monotonic() - started:.0f} s", flush=True)

    mismatches = []
    for name in [n for n in NIGHTLY if n in jobs.JOBS]:
        print(f"job {name}", flush=True)
        seconds, job_seconds, peak, counts = run_job(name, now, out)
        summary = jobs.JOBS[name].summary.format(**counts)
        line = (
            f"{name:15}: {job_seconds:6.1f} s ({seconds:.1f} s with start-up), "
            f"peak {peak:4.0f} MB; {summary}"
        )
        if name in bound:
            sql_seconds, sql_counts = bound[name]
            ratio = job_seconds / sql_seconds
            line += f" | SQL lower bound {sql_seconds:.1f} s (job/SQL {ratio:.1f}x)"
            if sql_counts != counts:
                mismatches.append(f"{name}: job {counts} != SQL {sql_counts}")
        else:
            line += "   | no SQL lower bound"
        lines.append(line)
        print(f"  {line}", flush=True)

    _, job_seconds, _, counts = run_job("expire_points", now, out)
    again = f"{'expire_points again':15}: {job_seconds:6.1f} s (nothing left to do): {counts}"
    if any(counts.values()):
        mismatches.append(f"a second expire_points run changed something: {counts}")
    lines.append(again)
    print(f"  {again}", flush=True)

    started = time.monotonic()
    problems = invariants_check()
    lines.append(
        f"invariants   : {problems or 'hold'} "
        f"(checked over everything in {time.monotonic() - started:.0f} s)"
    )
    (out / "jobs-lines.txt").write_text("\n".join(lines) + "\n")
    if problems or mismatches:
        print("\n".join(lines))
        raise SystemExit(f"jobs_bench: FAILED {problems or ''} {mismatches or ''}")


if __name__ == "__main__":
    main()
