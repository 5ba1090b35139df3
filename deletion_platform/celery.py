"""The Celery app. Queues: ``gpu`` (training, unlearning), ``audit`` and ``default``."""

from __future__ import annotations

import os

from celery import Celery
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "deletion_platform.settings")

app = Celery("deletion_platform")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_queues = (Queue("default"), Queue("gpu"), Queue("audit"))
app.autodiscover_tasks(["workers", "deletion", "audits"])
