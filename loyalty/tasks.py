"""Celery entry points: one task per periodic job (loyalty/jobs.py), each a thin caller
of jobs.job_run, which records the run and calls the job's service. Beat's schedules
(django-celery-beat, edited in the back office) name these tasks.

`now` (ISO 8601) runs the job as of another time; `run_id` is the JobRun that "Run now"
queued. Each returns the run's counts."""

from celery import shared_task
from django.utils.dateparse import parse_datetime

from loyalty import jobs


def _run(name: str, now: str | None, run_id: int | None) -> dict:
    return jobs.job_run(name, now=now and parse_datetime(now), run_id=run_id).counts


@shared_task
def mature_pending(now: str | None = None, run_id: int | None = None) -> dict:
    return _run("mature_pending", now, run_id)


@shared_task
def expire_points(now: str | None = None, run_id: int | None = None) -> dict:
    return _run("expire_points", now, run_id)


@shared_task
def expiry_notices(now: str | None = None, run_id: int | None = None) -> dict:
    return _run("expiry_notices", now, run_id)


@shared_task
def purge_idempotency(now: str | None = None, run_id: int | None = None) -> dict:
    return _run("purge_idempotency", now, run_id)


@shared_task
def tier_review(now: str | None = None, run_id: int | None = None) -> dict:
    return _run("tier_review", now, run_id)


@shared_task
def tier_warnings(now: str | None = None, run_id: int | None = None) -> dict:
    return _run("tier_warnings", now, run_id)


@shared_task
def birthday_gifts(now: str | None = None, run_id: int | None = None) -> dict:
    return _run("birthday_gifts", now, run_id)


@shared_task
def membership_renewals(now: str | None = None, run_id: int | None = None) -> dict:
    return _run("membership_renewals", now, run_id)
