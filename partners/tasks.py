from celery import shared_task

from partners.api.idempotency import idempotency_purge


@shared_task
def purge_idempotency_records() -> int:
    """Forget idempotency records past the 7 days the API promises (safe to run twice)."""
    return idempotency_purge()
