"""Shared start-up for benchmark scripts: embedded services (unless configured) and Django."""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def django_setup(*, data_dir: Path | None = None, fresh_database: str | None = None, reuse: bool = False) -> None:
    """Start the embedded services under ``data_dir`` when DATABASE_URL is unset, optionally
    point Django at a freshly created database ``fresh_database``, migrate, and set Django up."""
    sys.path.insert(0, str(REPO))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "deletion_platform.settings")
    if data_dir is not None:
        os.environ["DATA_DIR"] = str(data_dir)
    if not os.environ.get("DATABASE_URL"):
        from deletion_platform import embedded

        services = embedded.ensure_running(data_dir)
        if fresh_database:
            import psycopg

            admin_url = services.database_url.replace(f"/{embedded.DATABASE_NAME}?", "/postgres?")
            with psycopg.connect(admin_url, autocommit=True) as conn:
                if not reuse:  # reuse: keep what an earlier run of the benchmark loaded
                    conn.execute(f'DROP DATABASE IF EXISTS "{fresh_database}"')
                    conn.execute(f'CREATE DATABASE "{fresh_database}"')
            os.environ["DATABASE_URL"] = services.database_url.replace(
                f"/{embedded.DATABASE_NAME}?", f"/{fresh_database}?"
            )
            os.environ.setdefault("CELERY_BROKER_URL", services.broker_url)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
