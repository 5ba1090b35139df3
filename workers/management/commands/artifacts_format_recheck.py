from django.core.management.base import BaseCommand

from workers.jobs import job_retry, jobs_failed_on_foreign_looking_files
from workers.runners.storage import artifact_store


class Command(BaseCommand):
    help = ("List what the store's old first-bytes check hit: stored weights that are valid safetensors "
            "but whose header length begins like a pickle or a zip (releases before 2026-12-06 refused "
            "to load them), and failed jobs whose error says so. --retry runs the failed jobs that "
            "belong to no deletion request again (training, shadow models); a request whose job failed "
            "ended FAILED and is submitted again.")

    def add_arguments(self, parser):
        parser.add_argument("--retry", action="store_true",
                            help="re-queue the listed failed jobs that belong to no deletion request")

    def handle(self, *args, retry: bool = False, **options):
        blobs = artifact_store().foreign_looking_blobs()
        self.stdout.write(f"{len(blobs)} stored file(s) load now but were refused by the old check")
        for blob in blobs:
            named = ", ".join(blob.artifact_ids) or "no artifact"
            self.stdout.write(f"  blob {blob.sha256} ({blob.bytes} bytes), looked like: {blob.looked_like}; "
                              f"named by {named}")
        jobs = jobs_failed_on_foreign_looking_files()
        self.stdout.write(f"{len(jobs)} failed job(s) hit it")
        for job in jobs:
            where = (f"request {job.deletion_request.public_id} ({job.deletion_request.status}): submit it again"
                     if job.deletion_request_id else "no request: retryable with --retry")
            self.stdout.write(f"  job {job.id} {job.kind} {job.method or ''} model "
                              f"{job.registered_model.name if job.registered_model_id else '-'} version "
                              f"{job.source_version_id or '-'}; {where}")
            if retry and not job.deletion_request_id:
                job_retry(job=job)
                self.stdout.write(f"  job {job.id} re-queued")
