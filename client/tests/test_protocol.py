"""The client against a fake platform: membership streamed in chunks, a connection cut mid-upload
(before or after the platform applied a chunk), a crashed client resumed, idempotent retries, and
the platform's errors raised naming its message."""

from __future__ import annotations

import unittest

from fake_platform import TOKEN, FakePlatform
from lineage_client import (
    ConnectionFailed,
    MembershipRow,
    PlatformClient,
    PlatformError,
    UploadRefused,
)
from lineage_client.streaming import membership_chunks

ROWS = [MembershipRow(f"k{i}", i % 2, 0, i // 2) for i in range(10)]
CHUNKS = "/api/v1/membership-uploads/1/chunks/{}/"


def client(platform: FakePlatform, **options) -> PlatformClient:
    return PlatformClient(platform.url, TOKEN, backoff=0.001, timeout=5, **options)


class MembershipStreamingTest(unittest.TestCase):
    def test_rows_arrive_in_chunks_each_applied_once(self):
        with FakePlatform() as platform:
            done = client(platform).upload_membership(7, 3, ROWS, chunk_rows=4)
        self.assertEqual(done["status"], "complete")
        self.assertEqual(done["chunks"], [0, 1, 2])
        self.assertEqual(platform.applied, [(1, 0), (1, 1), (1, 2)])
        self.assertEqual(platform.membership_lines(1), [f"{r.record_key},{r.shard},0,{r.position}" for r in ROWS])

    def test_a_connection_cut_mid_upload_is_retried_and_each_chunk_applied_once(self):
        with FakePlatform() as platform:
            platform.faults = {("PUT", CHUNKS.format(1)): ["cut_after", "cut_before"],  # applied, answer lost
                               ("PUT", CHUNKS.format(2)): ["cut_before", "503"]}
            done = client(platform).upload_membership(7, 3, ROWS, chunk_rows=4)
        self.assertEqual(done["rows"], 10)
        self.assertEqual(platform.applied, [(1, 0), (1, 1), (1, 2)])
        self.assertEqual(platform.requests.count(("PUT", CHUNKS.format(1))), 3)
        self.assertEqual(platform.requests.count(("PUT", CHUNKS.format(2))), 3)

    def test_a_crashed_client_resumes_with_the_chunks_the_platform_lacks(self):
        with FakePlatform() as platform:
            platform.faults = {("PUT", CHUNKS.format(2)): ["cut_before"] * 3}
            with self.assertRaises(ConnectionFailed) as failed:
                client(platform, retries=2).upload_membership(7, 3, ROWS, chunk_rows=4)
            self.assertIn("3 attempt(s)", str(failed.exception))
            self.assertEqual(platform.uploads[1]["status"], "open")

            done = client(platform).upload_membership(7, 3, ROWS, chunk_rows=4)  # a new process
            self.assertEqual(done["status"], "complete")
            self.assertEqual(platform.applied, [(1, 0), (1, 1), (1, 2)])
            # Resumed: the chunks held were not sent again.
            self.assertEqual(platform.requests.count(("PUT", CHUNKS.format(0))), 1)

            again = client(platform).upload_membership(7, 3, ROWS, chunk_rows=4)  # complete: nothing is sent
            self.assertEqual(again, done)
            self.assertEqual(len(platform.applied), 3)

    def test_chunks_are_the_same_bytes_for_the_same_rows(self):
        first = list(membership_chunks(ROWS, 4))
        self.assertEqual(first, list(membership_chunks(iter(ROWS), 4)))
        self.assertEqual([count for _, count in first], [4, 4, 2])
        body = first[0][0].decode()
        self.assertEqual(body.splitlines()[:2], ["record_key,shard,slice,position", "k0,0,0,0"])
        quoted = list(membership_chunks([('a "b",c', 0, 0, 0)], 4))[0][0].decode()
        self.assertIn('"a ""b"",c",0,0,0', quoted)
        with self.assertRaises(TypeError):
            list(membership_chunks(["k1", "k2"], 4))


class PlatformCallsTest(unittest.TestCase):
    def test_an_error_of_the_platform_names_its_message(self):
        with FakePlatform() as platform:
            with self.assertRaises(PlatformError) as refused:
                client(platform).register_model(name="churn", task="classification", training_recipe="plain",
                                                architecture={"name": "mlp", "config": {}})
        error = refused.exception
        self.assertEqual((error.status, error.code), (400, "validation_failed"))
        self.assertIn("model 'churn' already exists", str(error))
        self.assertEqual(error.fields, {"name": ["model 'churn' already exists"]})

    def test_a_registration_is_not_repeated_when_its_answer_is_lost(self):
        with FakePlatform() as platform:
            platform.faults = {("POST", "/api/v1/models/"): ["cut_after"]}
            with self.assertRaises(ConnectionFailed):
                client(platform).register_model(name="churn", task="classification", training_recipe="plain",
                                                architecture={})
        self.assertEqual(platform.requests, [("POST", "/api/v1/models/")])

    def test_a_wrong_token_is_refused(self):
        with FakePlatform() as platform:
            with self.assertRaises(PlatformError) as refused:
                PlatformClient(platform.url, "wrong").membership_upload(1)
        self.assertEqual(refused.exception.status, 401)

    def test_weights_checked_by_a_worker_are_followed_to_their_version(self):
        with FakePlatform() as platform:
            platform.checks[1] = [{"id": 1, "status": "running"},
                                  {"id": 1, "status": "registered", "version": {"id": 12, "version": 1}}]
            version = client(platform).upload_weights("churn", 7, b"weights", poll=0.001)
            self.assertEqual(version, {"id": 12, "version": 1})

            platform.checks[1] = [{"id": 1, "status": "refused", "refused": {
                "code": "architecture_mismatch", "message": "missing tensors: head.weight"}}]
            with self.assertRaises(UploadRefused) as refused:
                client(platform).upload_weights("churn", 7, b"weights", poll=0.001)
        self.assertEqual(refused.exception.code, "architecture_mismatch")
        self.assertIn("missing tensors: head.weight", str(refused.exception))

    def test_an_unreachable_platform_is_a_connection_error(self):
        with FakePlatform() as platform:
            url = platform.url
        with self.assertRaises(ConnectionFailed):
            PlatformClient(url, TOKEN, retries=1, backoff=0.001).job(1)


if __name__ == "__main__":
    unittest.main()
