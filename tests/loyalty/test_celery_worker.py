"""The Celery wiring, proven with a real worker process and the real Redis broker."""

import os
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from celery import Celery
from django.db import connection
from django.utils import timezone

from loyalty import selectors, services, tasks
from loyalty.models import JobRun
from tests.conftest import skip_or_fail

ROOT = Path(__file__).resolve().parents[2]


def _credit_already_expired(member, cause, *, points):
    expired = timezone.now() - timedelta(minutes=1)
    services.points_credit(
        member=member, points=points, description="Old purchase", cause=cause, expires_at=expired
    )


@pytest.mark.django_db
def test_without_a_broker_tasks_run_in_process(member, api_cause):
    _credit_already_expired(member, api_cause, points=40)
    assert tasks.expire_points.delay().get()["points"] == 40
    assert selectors.member_balance(member=member).points == 0


@pytest.fixture
def redis_url():
    url = os.environ.get("REDIS_URL")
    if not url:
        skip_or_fail("needs Redis (set REDIS_URL)")
    return url.rsplit("/", 1)[0] + "/15"  # a database of its own


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_runs_a_job_queued_through_redis(postgres_only, redis_url, member, api_cause):
    """As "Run now" in the back office does with a broker configured: the run is recorded
    as queued, the task goes through Redis, the worker runs the job and records it."""
    _credit_already_expired(member, api_cause, points=75)
    queued = JobRun.objects.create(job="expire_points", trigger=JobRun.Trigger.STAFF)
    queue = f"test-{uuid.uuid4().hex[:8]}"
    db = connection.settings_dict
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.dev",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "CELERY_BROKER_URL": redis_url,
    }
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "--pool=solo",
            "-Q",
            queue,
            "--without-heartbeat",
            "--without-mingle",
            "--without-gossip",
            "--loglevel=INFO",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    client = Celery(broker=redis_url)  # a producer like the web tier's when a broker is set
    try:
        client.send_task(tasks.expire_points.name, kwargs={"run_id": queued.pk}, queue=queue)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and JobRun.objects.get(pk=queued.pk).status in (
            JobRun.Status.QUEUED,
            JobRun.Status.RUNNING,
        ):
            time.sleep(0.5)
        run = JobRun.objects.get(pk=queued.pk)
        assert run.status == JobRun.Status.SUCCEEDED, run.error
        assert run.counts["points"] == 75 and run.processed == run.total == 1
        assert selectors.member_balance(member=member).points == 0
        assert member.entries.filter(kind="expiry").count() == 1
    finally:
        client.close()
        worker.terminate()
        output = worker.communicate(timeout=30)[0]
    assert "loyalty.tasks.expire_points" in output and "succeeded" in output, output[-2000:]
    assert "expire_points: 1/1 members, 75 points expired" in output, output[-2000:]
