"""Celery entry points: thin callers of the services, safe to run twice."""

from celery import shared_task

from loyalty import services


@shared_task
def expire_due_lots() -> int:
    return services.lots_expire_due()


@shared_task
def mature_pending_points() -> int:
    return services.pending_mature_due()
