"""Entry points the workers call when a job ends (kept apart so workers import little)."""

from deletion.services import on_job_finished  # noqa: F401
