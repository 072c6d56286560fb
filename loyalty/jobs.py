"""Periodic jobs: named, idempotent, set-based, recorded, schedulable.

Each job is a function registered here with @job under a name. It is run by
- celery beat, through the job's Celery task in loyalty/tasks.py, on the schedule staff
  edit in the back office (Periodic tasks; the defaults below are created by `migrate`);
- staff, with "Run now" on Loyalty → Job runs (needs the loyalty.run_job permission);
- hand: `python manage.py run_job <name> [--now ISO]`, `run_job --list`.
Every run is recorded as a JobRun (status, members processed of the total, counts, error)
and logs its progress: "expire_points: 120,000/1,000,000 members, 3,456 points expired, 12 s".

Rules for a job: it is idempotent (a second run the same day changes nothing); it works
on members in set-based batches (ledger_bulk.in_batches: a range of member ids per
transaction, a constant number of queries per batch, no query per member); it takes
`ctx.now` as the time (never timezone.now() for what is due) and reports with
`ctx.progress(done, total, result)` where `result` has the attributes its `summary` names.

To add one (e.g. tier_review, birthday_gifts, membership_renewals):

    @job("tier_review", title=_("Review tiers"), cron="30 2 * * *",
         summary="{moved_up:,} up, {moved_down:,} down")
    def tier_review(ctx: JobContext):
        return tiers.tiers_review(now=ctx.now, batch_size=ctx.batch_size, progress=ctx.progress)

here (or in a module imported at the end of this file), then give it its Celery task in
loyalty/tasks.py (tests fail for a job without one). The next `migrate` creates its
default schedule; staff can change or disable it in the back office from then on.
"""

import dataclasses
import logging
import resource
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import connections
from django.utils import timezone, translation
from django.utils.translation import gettext_lazy as _

from loyalty import birthdays, memberships, notices, services, tier_notices, tiers
from loyalty.models import JobRun

log = logging.getLogger("loyalty.jobs")


@dataclass(frozen=True, slots=True)
class Job:
    name: str
    title: str
    run: Callable
    cron: str  # the default schedule: "minute hour day-of-month month day-of-week"
    summary: str  # how a result reads, formatted with its attributes
    unit: str = "members"

    @property
    def task(self) -> str:
        """The Celery task that runs this job (loyalty/tasks.py)."""
        return f"loyalty.tasks.{self.name}"


JOBS: dict[str, Job] = {}


def job(name: str, *, title, cron: str, summary: str, unit: str = "members"):
    """Register a job function under `name` (see the module docstring)."""

    def register(func):
        if name in JOBS:
            raise ValueError(f"job {name!r} is registered twice")
        JOBS[name] = Job(name=name, title=title, run=func, cron=cron, summary=summary, unit=unit)
        return func

    return register


@dataclass(slots=True)
class JobContext:
    job: Job
    run: JobRun
    now: datetime
    batch_size: int | None
    out: Callable[[str], None] | None
    started: float
    result: object = None

    def progress(self, done: int, total: int, result) -> None:
        """Record how far the run got (visible in the back office at once) and log it."""
        self.result = result
        counts = _counts(result)
        JobRun.objects.filter(pk=self.run.pk).update(processed=done, total=total, counts=counts)
        self.run.processed, self.run.total, self.run.counts = done, total, counts
        self.say(f"{done:,}/{total:,} {self.job.unit}, {self.job.summary.format(**counts)}")

    def say(self, text: str) -> None:
        line = f"{self.job.name}: {text}, {time.monotonic() - self.started:.0f} s"
        if self.out:  # the command prints it; the log keeps it quieter
            self.out(line)
            log.debug(line)
        else:
            log.info(line)


def _counts(result) -> dict:
    if result is None:
        return {}
    return dict(result) if isinstance(result, dict) else dataclasses.asdict(result)


def job_get(name: str) -> Job:
    try:
        return JOBS[name]
    except KeyError:
        raise LookupError(f"No job named {name!r}. Jobs: {', '.join(sorted(JOBS))}.") from None


def job_queue(name: str, *, user=None) -> JobRun:
    """Staff asked to run a job now: record it as queued and hand it to Celery (which
    runs it in-process, before this returns, when no broker is configured)."""
    from celery import current_app

    from loyalty import tasks  # noqa: F401  (registers the jobs' tasks)

    job = job_get(name)
    run = JobRun.objects.create(job=name, trigger=JobRun.Trigger.STAFF, requested_by=user)
    try:
        current_app.tasks[job.task].delay(run_id=run.pk)
    except Exception:  # the broker is down, or (run in-process) the job failed
        log.exception("%s: run %s failed", name, run.pk)
        JobRun.objects.filter(pk=run.pk, status=JobRun.Status.QUEUED).update(
            status=JobRun.Status.FAILED, finished_at=timezone.now(),
            error=traceback.format_exc()[-4000:],
        )  # fmt: skip
    run.refresh_from_db()
    return run


def job_run(
    name: str,
    *,
    now: datetime | None = None,
    batch_size: int | None = None,
    run_id: int | None = None,
    trigger: str = JobRun.Trigger.SCHEDULE,
    out: Callable[[str], None] | None = None,
) -> JobRun:
    """Run a job now, recording it. `run_id` is a JobRun queued by job_queue. A failure
    is recorded on the run and raised again (so Celery and the command report it)."""
    job = job_get(name)
    now = now or timezone.now()
    started_at = timezone.now()
    fields = {"status": JobRun.Status.RUNNING, "as_of": now, "started_at": started_at}
    run = JobRun.objects.filter(pk=run_id, job=name).first() if run_id else None
    if run is None:
        run = JobRun.objects.create(job=name, trigger=trigger, **fields)
    else:
        JobRun.objects.filter(pk=run.pk).update(**fields)
        for field, value in fields.items():
            setattr(run, field, value)
    ctx = JobContext(
        job=job, run=run, now=now, batch_size=batch_size, out=out, started=time.monotonic()
    )
    try:
        with translation.override(settings.LANGUAGE_CODE):
            result = job.run(ctx)
    except Exception:
        _finish(run, JobRun.Status.FAILED, error=traceback.format_exc()[-4000:])
        ctx.say(f"FAILED after {run.processed:,}/{run.total:,} {job.unit}")
        raise
    counts = _counts(result if result is not None else ctx.result)
    _finish(run, JobRun.Status.SUCCEEDED, counts=counts)
    ctx.say(
        f"done, {run.processed:,}/{run.total:,} {job.unit}, {job.summary.format(**counts)}, "
        f"peak memory {peak_memory_mb():.0f} MB"
    )
    return run


def _finish(run: JobRun, status: str, **fields) -> None:
    # A failed batch may have left the connection in a broken transaction only inside an
    # outer atomic block (tests); outside, each batch's transaction is already over.
    fields.update(status=status, finished_at=timezone.now())
    if not connections["default"].needs_rollback:
        JobRun.objects.filter(pk=run.pk).update(**fields)
    for field, value in fields.items():
        setattr(run, field, value)


def peak_memory_mb() -> float:
    """This process's peak resident memory so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# The jobs ------------------------------------------------------------------------------


@job(
    "mature_pending",
    title=_("Release pending points"),
    cron="5 * * * *",
    summary="{points:,} points released to {members:,} members",
)
def mature_pending(ctx: JobContext):
    """Points held for the return window become spendable once it has closed."""
    services.pending_mature_due(now=ctx.now, batch_size=ctx.batch_size, progress=ctx.progress)


@job(
    "expire_points",
    title=_("Expire points"),
    cron="15 0 * * *",
    summary="{points:,} points expired from {members:,} members",
)
def expire_points(ctx: JobContext):
    """The unspent remainder of lots past their expiry date goes to breakage."""
    services.lots_expire_due(now=ctx.now, batch_size=ctx.batch_size, progress=ctx.progress)


@job(
    "expiry_notices",
    title=_("Send expiry notices"),
    cron="0 9 * * *",
    summary="{members:,} e-mails about {points:,} points",
)
def expiry_notices(ctx: JobContext):
    """E-mail members whose points expire within the program's notice window."""
    return notices.expiry_notices_send(
        now=ctx.now, batch_size=ctx.batch_size, progress=ctx.progress
    )


@job(
    "purge_idempotency",
    title=_("Forget old API idempotency records"),
    cron="30 3 * * *",
    summary="{deleted:,} records deleted",
    unit="steps",
)
def purge_idempotency(ctx: JobContext):
    """The POS API replays answers for 7 days (API.md); older records are deleted."""
    from partners.api.idempotency import idempotency_purge

    ctx.progress(0, 1, {"deleted": 0})
    deleted = idempotency_purge(now=ctx.now)
    ctx.progress(1, 1, {"deleted": deleted})
    return {"deleted": deleted}


@job(
    "tier_review",
    title=_("Review tiers"),
    cron="30 2 * * *",
    summary="{down:,} down, {up:,} up, {renewed:,} renewed",
)
def tier_review(ctx: JobContext):
    """Missed upgrades; one level down for members whose guaranteed period has ended and
    who no longer qualify; a new period for those who still do (loyalty/tiers.py)."""
    return tiers.tiers_review(now=ctx.now, batch_size=ctx.batch_size, progress=ctx.progress)


@job(
    "tier_warnings",
    title=_("Warn members who may move down a tier"),
    cron="0 10 * * *",
    summary="{members:,} e-mails to {at_risk:,} members at risk",
)
def tier_warnings(ctx: JobContext):
    """E-mail members at risk at a review within the warning window what keeps their tier."""
    return tier_notices.tier_warnings_send(
        now=ctx.now, batch_size=ctx.batch_size, progress=ctx.progress
    )


@job(
    "birthday_gifts",
    title=_("Give birthday gifts"),
    cron="0 6 * * *",
    summary="{members:,} gifts, {points:,} points, {emails:,} e-mails",
)
def birthday_gifts(ctx: JobContext):
    """Members whose birthday is today (or was in the last days and went without, after an
    outage) get their tier's birthday points and the birthday rules' points, once a year."""
    return birthdays.birthday_gifts_give(
        now=ctx.now, batch_size=ctx.batch_size, progress=ctx.progress
    )


@job(
    "membership_renewals",
    title=_("Lapse ended memberships and remind renewals"),
    cron="0 2 * * *",
    summary="{lapsed:,} lapsed, {tiers_restored:,} back to their earned tier, "
    "{reminded:,} renewal reminders",
    unit="memberships",
)
def membership_renewals(ctx: JobContext):
    """Paid memberships whose term has ended lapse (members go back to the tier they
    earned); members whose membership ends soon are reminded to buy the next term at the
    till or online: Tally takes no payments, so it never renews one by itself."""
    return memberships.memberships_renew(
        now=ctx.now, batch_size=ctx.batch_size, progress=ctx.progress
    )


# Default schedules ---------------------------------------------------------------------


def schedules_setup(*, using: str = "default") -> list[str]:
    """Create the schedule of each registered job that has none yet (matched by task, so
    staff edits, renames and disabled schedules are kept). Run after every `migrate`
    (loyalty/apps.py), so a fresh install, a deploy and a newly added job all get theirs.
    Returns the names of the jobs whose schedule was created."""
    from django_celery_beat.models import CrontabSchedule, PeriodicTask

    scheduled = set(PeriodicTask.objects.using(using).values_list("task", flat=True))
    created = []
    for job in JOBS.values():
        if job.task in scheduled:
            continue
        minute, hour, day_of_month, month_of_year, day_of_week = job.cron.split()
        crontab, _ = CrontabSchedule.objects.using(using).get_or_create(
            minute=minute,
            hour=hour,
            day_of_month=day_of_month,
            month_of_year=month_of_year,
            day_of_week=day_of_week,
            timezone=settings.CELERY_TIMEZONE,
        )
        with translation.override(settings.LANGUAGE_CODE):
            title = str(job.title)
        PeriodicTask.objects.using(using).create(
            name=f"{title} ({job.name})",
            task=job.task,
            crontab=crontab,
            description=f"{title}. Run by hand: python manage.py run_job {job.name}",
        )
        created.append(job.name)
    return created
