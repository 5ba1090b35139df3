#!/usr/bin/env python
"""Django's command-line utility. With no DATABASE_URL / CELERY_BROKER_URL set, it starts the
embedded PostgreSQL and Redis under DATA_DIR first, so a newcomer needs no configuration."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "deletion_platform.settings")
    if not os.environ.get("DATABASE_URL") or not os.environ.get("CELERY_BROKER_URL"):
        from deletion_platform import embedded

        try:
            embedded.ensure_running()
        except embedded.EmbeddedServiceError as exc:
            sys.exit(f"error: {exc}")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
