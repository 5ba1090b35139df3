from django.apps import AppConfig


class WorkersConfig(AppConfig):
    name = "workers"
    verbose_name = "Workers and jobs"

    def ready(self) -> None:
        # The runner modules import torch only inside their functions: the web process may load them.
        from models_registry.services import (
            APPROXIMATE_METHOD_CHECKS,
            ARCHITECTURE_CHECKS,
            DATASET_SOURCE_CHECKS,
            FAMILY_METHOD_CHECKS,
        )
        from workers.artifact_manifests import STORE_OPENERS, STORE_ROOTS
        from workers.data_sources import dataset_source_problem
        from workers.jobs import job_runner_register
        from workers.model_families.base import approximate_method_refusal, architecture_problem
        from workers.models import JobKind
        from workers.runners.shadow import run_shadow_job
        from workers.runners.storage import artifact_root, artifact_store
        from workers.runners.training import run_training_job
        from workers.runners.unlearning import run_unlearning_job
        from workers.runners.upload_check import run_upload_check_job
        from workers.unlearning.catalogue import approximate_method_problem

        job_runner_register(JobKind.TRAIN, run_training_job)
        job_runner_register(JobKind.UNLEARN, run_unlearning_job)
        job_runner_register(JobKind.SHADOW, run_shadow_job)
        job_runner_register(JobKind.UPLOAD_CHECK, run_upload_check_job)
        APPROXIMATE_METHOD_CHECKS.add(approximate_method_problem)
        ARCHITECTURE_CHECKS.add(architecture_problem)
        STORE_ROOTS.add(artifact_root)
        STORE_OPENERS.add(artifact_store)
        FAMILY_METHOD_CHECKS.add(approximate_method_refusal)
        DATASET_SOURCE_CHECKS.add(dataset_source_problem)
