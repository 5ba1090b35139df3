from django.apps import AppConfig


class DeletionConfig(AppConfig):
    name = "deletion"
    verbose_name = "Deletion requests"

    def ready(self) -> None:
        # The request workflow plugs into the job engine below it; the engine names no app above it.
        from deletion.concept_requests import concept_labels_drop
        from deletion.external_retrain import external_retrain_problem, external_retrain_wait_reason
        from deletion.selectors import open_request_counts_by_version, requests_touching_version
        from deletion.workflow import (
            on_job_finished,
            run_report_job,
            unsettled_parent_reason,
            unsettled_source_reason,
            versions_open_requests_use,
        )
        from models_registry.admin import OPEN_REQUESTS
        from models_registry.services import EXTERNAL_RETRAIN_CHECKS, RECORDS_ERASED
        from workers.jobs import JOB_FINISHED, JOB_GATES, VERSIONS_HELD, job_runner_register
        from workers.models import JobKind

        job_runner_register(JobKind.REPORT, run_report_job)
        JOB_FINISHED.add(lambda job_id: on_job_finished(job_id=job_id))
        JOB_GATES.add(unsettled_source_reason)
        JOB_GATES.add(unsettled_parent_reason)
        JOB_GATES.add(external_retrain_wait_reason)
        EXTERNAL_RETRAIN_CHECKS.add(external_retrain_problem)
        RECORDS_ERASED.add(concept_labels_drop)
        VERSIONS_HELD.add(versions_open_requests_use)
        OPEN_REQUESTS.counts_by_version = open_request_counts_by_version
        OPEN_REQUESTS.touching_version = requests_touching_version
