"""The Django project: settings from the environment, root URLs, the Celery app."""

# Load the Celery app with Django so that @shared_task uses its broker settings.
from deletion_platform.celery import app as celery_app

__all__ = ["celery_app"]
