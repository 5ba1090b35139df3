"""The Django project: settings from the environment, root URLs, the Celery app."""
