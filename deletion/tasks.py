from celery import shared_task

from deletion import services
from deletion.ledger import ledger_checkpoint_write


@shared_task(name="deletion.mark_deadlines", queue="default")
def mark_deadlines() -> tuple[int, int]:
    return services.deadlines_mark()


@shared_task(name="deletion.ledger_checkpoint", queue="default")
def ledger_checkpoint() -> str:
    return str(ledger_checkpoint_write())
