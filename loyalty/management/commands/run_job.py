"""Run a periodic job by hand, with its progress on the terminal:

python manage.py run_job expire_points [--now 2027-01-31T00:00] [--batch-size 2000]
python manage.py run_job --list
"""

from datetime import datetime, time

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Max
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from loyalty import jobs
from loyalty.models import JobRun


def _moment(value: str):
    """An ISO 8601 time ('2027-01-31T00:15', with or without an offset) or a day
    (midnight), in TIME_ZONE unless it says otherwise."""
    moment = parse_datetime(value)
    if moment is None:
        day = parse_date(value)
        if day is None:
            raise ValueError(value)
        moment = datetime.combine(day, time())
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment)
    return moment


class Command(BaseCommand):
    help = "Run a periodic job now (as the schedule would), or list the jobs."

    def add_arguments(self, parser):
        parser.add_argument("name", nargs="?", help="the job to run (see --list)")
        parser.add_argument("--list", action="store_true", help="list the jobs and exit")
        parser.add_argument(
            "--now", help="run as of this time (ISO 8601, e.g. 2027-01-31T00:15), not now"
        )
        parser.add_argument("--batch-size", type=int, help="members per transaction")

    def handle(self, *args, name=None, list=False, now=None, batch_size=None, **options):
        if list:
            return self._list()
        if not name:
            raise CommandError("Name a job to run, or use --list to see them.")
        try:
            jobs.job_get(name)
        except LookupError as exc:
            raise CommandError(str(exc)) from None
        try:
            moment = _moment(now) if now else None
        except ValueError:
            raise CommandError(f"--now: {now!r} is not an ISO 8601 date or time.") from None
        if batch_size is not None and batch_size < 1:
            raise CommandError("--batch-size must be at least 1.")
        try:
            run = jobs.job_run(
                name,
                now=moment,
                batch_size=batch_size,
                trigger=JobRun.Trigger.COMMAND,
                out=self.stdout.write,
            )
        except Exception as exc:
            raise CommandError(f"{name} failed: {exc!r} (recorded as a failed job run)") from exc
        self.stdout.write(self.style.SUCCESS(f"{name}: run {run.pk} succeeded"))

    def _list(self):
        latest = JobRun.objects.values("job").annotate(pk=Max("pk")).values("pk")
        last = {run.job: run for run in JobRun.objects.filter(pk__in=latest)}
        width = max(len(n) for n in jobs.JOBS)
        self.stdout.write(f"{'job':{width}}  {'default schedule':16}  {'last run':30}  what")
        for job in jobs.JOBS.values():
            run = last.get(job.name)
            when = (
                f"{run.get_status_display()} {timezone.localtime(run.created_at):%Y-%m-%d %H:%M}"
                if run
                else "never"
            )
            self.stdout.write(f"{job.name:{width}}  {job.cron:16}  {when:30}  {job.title}")
