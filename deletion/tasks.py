from celery import shared_task

from deletion import deadlines
from foundation.ledger.services import ledger_checkpoint_write


@shared_task(name="deletion.mark_deadlines")
def mark_deadlines() -> tuple[int, int]:
    return deadlines.deadlines_mark()


@shared_task(name="deletion.ledger_checkpoint")
def ledger_checkpoint() -> str:
    return str(ledger_checkpoint_write())


@shared_task(name="deletion.deliver_webhook", acks_late=True,
             autoretry_for=(Exception,), retry_backoff=5, retry_backoff_max=3600, retry_jitter=True,
             max_retries=10)
def deliver_webhook(delivery_id: int) -> str:
    from deletion.webhooks import webhook_deliver

    return webhook_deliver(delivery_id=delivery_id)
