from django.apps import AppConfig


class AuditsConfig(AppConfig):
    name = "audits"
    verbose_name = "Audits and reports"

    def ready(self) -> None:
        from audits.runner import run_audit_job  # torch is imported inside the runner
        from workers.jobs import job_runner_register
        from workers.models import JobKind

        job_runner_register(JobKind.AUDIT, run_audit_job)
