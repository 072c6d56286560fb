"""The periodic jobs as staff and operators meet them: every job is registered with a
Celery task and a default beat schedule; running every job twice changes nothing the
second time; runs are recorded with their progress; `run_job` runs and lists them; the
back office shows runs read-only and lets a permitted staff member run one now."""

from datetime import timedelta
from io import StringIO

import pytest
from celery import current_app
from django.contrib.auth.models import Permission
from django.core import mail
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from loyalty import jobs, tasks
from loyalty.models import JobRun
from tests.factories import StaffFactory, UserFactory
from tests.loyalty.population import ledger_snapshot, mixed_population

NIGHTLY = ["mature_pending", "expire_points", "expiry_notices", "purge_idempotency"]


def test_every_job_has_a_celery_task_of_its_own():
    assert set(NIGHTLY) <= set(jobs.JOBS)
    registered = current_app.tasks
    for job in jobs.JOBS.values():
        assert job.task in registered, f"{job.name}: add its task to loyalty/tasks.py"
        assert job.task == getattr(tasks, job.name).name


@pytest.mark.django_db
def test_migrate_gives_each_job_a_default_schedule_and_keeps_staff_edits():
    scheduled = dict(PeriodicTask.objects.values_list("task", "enabled"))
    assert {job.task for job in jobs.JOBS.values()} <= set(scheduled)
    assert all(scheduled.values())

    expire = PeriodicTask.objects.get(task="loyalty.tasks.expire_points")
    expire.crontab, _ = CrontabSchedule.objects.get_or_create(minute="45", hour="4")
    expire.enabled = False
    expire.save()
    PeriodicTask.objects.filter(task="loyalty.tasks.expiry_notices").delete()

    assert jobs.schedules_setup() == ["expiry_notices"]  # what `migrate` runs afterwards
    assert jobs.schedules_setup() == []
    expire.refresh_from_db()
    assert (expire.crontab.minute, expire.crontab.hour, expire.enabled) == ("45", "4", False)
    assert PeriodicTask.objects.filter(task="loyalty.tasks.expiry_notices").count() == 1


def run_all(now):
    return {name: jobs.job_run(name, now=now, batch_size=4).counts for name in NIGHTLY}


@pytest.mark.django_db
def test_running_every_job_twice_changes_nothing_the_second_time():
    _, run_at = mixed_population(copies=2)

    first = run_all(run_at)
    after_first = ledger_snapshot()
    mails = len(mail.outbox)
    second = run_all(run_at)

    assert ledger_snapshot() == after_first
    assert len(mail.outbox) == mails
    assert first["expire_points"]["points"] > 0 and first["mature_pending"]["points"] > 0
    assert first["expiry_notices"]["members"] > 0, "members with a login were told"
    for name in NIGHTLY:
        assert not any(second[name].values()), f"{name} did something again: {second[name]}"


@pytest.mark.django_db
def test_a_run_records_its_progress_and_the_command_prints_it():
    mixed_population(copies=1)  # 9 members
    out = StringIO()
    now = timezone.now() + timedelta(days=20)

    call_command("run_job", "expire_points", "--now", now.isoformat(), "--batch-size", "4",
                 stdout=out)  # fmt: skip

    lines = out.getvalue().splitlines()
    progress = [line.split(",")[0] for line in lines if "/9 members" in line]
    assert progress == [
        "expire_points: 0/9 members", "expire_points: 4/9 members",
        "expire_points: 8/9 members", "expire_points: 9/9 members",
        "expire_points: done",
    ]  # fmt: skip
    assert "points expired from" in lines[-2] and "peak memory" in lines[-2]
    run = JobRun.objects.get()
    assert (run.job, run.status, run.trigger) == ("expire_points", "succeeded", "command")
    assert (run.processed, run.total, run.percent) == (9, 9, 100)
    assert run.counts == {"members": 3, "points": 100 + 30 + 20, "lots": 3}
    assert run.as_of == now and run.started_at <= run.finished_at


@pytest.mark.django_db
def test_run_job_lists_the_jobs_and_refuses_bad_input():
    out = StringIO()
    call_command("run_job", "--list", stdout=out)
    for name in NIGHTLY:
        assert name in out.getvalue()
    with pytest.raises(CommandError, match="No job named 'nope'"):
        call_command("run_job", "nope")
    with pytest.raises(CommandError, match="not an ISO 8601"):
        call_command("run_job", "expire_points", "--now", "yesterday")
    with pytest.raises(CommandError, match="Name a job"):
        call_command("run_job")
    assert not JobRun.objects.exists()


@pytest.fixture
def failing_job():
    @jobs.job("test_failing", title="Fails", cron="0 0 * * *", summary="{members} members")
    def failing(ctx):
        ctx.progress(0, 2, {"members": 0})
        raise RuntimeError("the disk is full")

    yield "test_failing"
    del jobs.JOBS["test_failing"]


@pytest.mark.django_db
def test_a_failing_job_is_recorded_as_failed_with_its_error(failing_job):
    with pytest.raises(CommandError, match="test_failing failed"):
        call_command("run_job", failing_job, stdout=StringIO())
    run = JobRun.objects.get(job=failing_job)
    assert run.status == JobRun.Status.FAILED and run.finished_at
    assert "RuntimeError: the disk is full" in run.error
    assert (run.processed, run.total) == (0, 2)


@pytest.mark.django_db
def test_eager_tasks_run_the_job_and_record_it(member):
    counts = tasks.expire_points.delay(now=timezone.now().isoformat()).get()
    assert counts == {"members": 0, "points": 0, "lots": 0}
    assert JobRun.objects.get().trigger == JobRun.Trigger.SCHEDULE


# --- back office ---------------------------------------------------------------------


@pytest.mark.django_db
def test_staff_see_runs_with_a_progress_bar_and_can_run_a_job_now(client, member):
    jobs.job_run("mature_pending")
    running = JobRun.objects.create(
        job="expire_points", status=JobRun.Status.RUNNING, processed=250, total=1000,
        started_at=timezone.now(), counts={"members": 3, "points": 40, "lots": 3},
    )  # fmt: skip
    client.force_login(StaffFactory())

    page = client.get(reverse("admin:loyalty_jobrun_changelist")).content.decode()
    assert '<progress max="100" value="25"' in page and "250 / 1,000 (25%)" in page
    assert "40 points expired from 3 members" in page
    assert 'http-equiv="refresh"' in page, "the list refreshes while a job runs"
    assert "Run a job now" in page
    detail = client.get(reverse("admin:loyalty_jobrun_change", args=[running.pk]))
    assert detail.status_code == 200 and b'name="_save"' not in detail.content

    run_page = client.get(reverse("admin:loyalty_jobrun_run")).content.decode()
    for job in jobs.JOBS.values():
        assert str(job.title) in run_page
    answer = client.post(reverse("admin:loyalty_jobrun_run"), {"job": "expire_points"},
                         follow=True)  # fmt: skip
    assert "Expire points finished" in answer.content.decode()
    run = JobRun.objects.filter(job="expire_points").exclude(pk=running.pk).get()
    assert run.status == JobRun.Status.SUCCEEDED and run.trigger == JobRun.Trigger.STAFF
    assert run.requested_by is not None


@pytest.mark.django_db
def test_running_a_job_needs_the_permission(client):
    viewer = UserFactory(is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_jobrun"))
    client.force_login(viewer)

    page = client.get(reverse("admin:loyalty_jobrun_changelist"))
    assert page.status_code == 200 and b"Run a job now" not in page.content
    assert client.get(reverse("admin:loyalty_jobrun_run")).status_code == 403
    assert (
        client.post(reverse("admin:loyalty_jobrun_run"), {"job": "expire_points"}).status_code
        == 403
    )
    assert not JobRun.objects.exists()

    viewer.user_permissions.add(Permission.objects.get(codename="run_job"))
    client.force_login(viewer)
    answer = client.post(reverse("admin:loyalty_jobrun_run"), {"job": "no_such_job"}, follow=True)
    assert b"There is no job called no_such_job" in answer.content
    assert not JobRun.objects.exists()
