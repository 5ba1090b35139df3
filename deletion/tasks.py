from celery import shared_task

from deletion import deadlines, notices, webhooks
from foundation.ledger.services import ledger_checkpoint_write


@shared_task(name="deletion.mark_deadlines")
def mark_deadlines() -> tuple[int, int]:
    return deadlines.deadlines_mark()


@shared_task(name="deletion.ledger_checkpoint")
def ledger_checkpoint() -> str:
    return str(ledger_checkpoint_write())


# Only a failed delivery (the endpoint unreachable or not 2xx) is retried, and the task and the
# delivery row agree on the limit: MAX_ATTEMPTS attempts in all. Anything else is a bug: not retried.
@shared_task(name=webhooks.DELIVER_TASK, acks_late=True,
             autoretry_for=(webhooks.DeliveryFailed,), retry_backoff=5, retry_backoff_max=3600, retry_jitter=True,
             max_retries=webhooks.MAX_ATTEMPTS - 1)
def deliver_webhook(delivery_id: int) -> str:
    return webhooks.webhook_deliver(delivery_id=delivery_id)


# A notice the mail server could not take yet is retried; a permanent failure is recorded, not retried.
@shared_task(name=notices.SEND_TASK, acks_late=True,
             autoretry_for=(notices.NoticeNotSent,), retry_backoff=30, retry_backoff_max=3600, retry_jitter=True,
             max_retries=notices.MAX_ATTEMPTS - 1)
def send_notice(notice_id: int) -> str:
    return notices.notice_deliver(notice_id=notice_id)


@shared_task(name="deletion.expire_external_retrains")
def expire_external_retrains() -> list[str]:
    from deletion.external_retrain import external_retrains_expire

    return external_retrains_expire()
