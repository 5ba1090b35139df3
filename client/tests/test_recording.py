"""Recording membership from what a loader yields: keys from the items, from a key function, or from
the row indices a DataLoader draws; first yields fix shard, slice and position."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import unittest

from lineage_client import (
    DuplicateShardMembership,
    MembershipRecorder,
    MembershipRow,
    RecordingLoader,
)

HAS_TORCH = importlib.util.find_spec("torch") is not None


class FakeTensor:
    """What ``tolist`` gives for a collated batch of integer keys."""

    def __init__(self, values):
        self.values = values

    def tolist(self):
        return list(self.values)


class IndexLoader:
    """Iterates like a torch DataLoader: draws index batches from ``batch_sampler``, fetches the rows."""

    def __init__(self, rows, batch_size):
        self.rows = rows
        self.batch_sampler = [list(range(i, min(i + batch_size, len(rows)))) for i in range(0, len(rows), batch_size)]

    def __iter__(self):
        for indices in self.batch_sampler:
            yield [self.rows[i] for i in indices]


class RecorderTest(unittest.TestCase):
    def test_first_yield_fixes_shard_slice_and_position(self):
        recorder = MembershipRecorder()
        recorder.record(["a", "b"], shard=0, slice=1, epoch=0)
        recorder.record(["c", "a"], shard=0, slice=1, epoch=1)  # next epoch: "a" keeps its place
        recorder.record(["d"], shard=1, slice=0)
        recorder.record(["b"], shard=0, slice=0)  # an earlier stage recorded late: the earliest holds
        self.assertEqual(recorder.rows(), [
            MembershipRow("b", 0, 0, 0, 0), MembershipRow("a", 0, 1, 0, 0), MembershipRow("c", 0, 1, 2, 1),
            MembershipRow("d", 1, 0, 0, 0)])
        self.assertEqual((len(recorder), recorder.yields), (4, 6))

    def test_a_record_in_two_shards_is_refused(self):
        recorder = MembershipRecorder()
        recorder.record(["a"], shard=0)
        with self.assertRaisesRegex(DuplicateShardMembership, "record 'a' was yielded to shard 2 after shard 0"):
            recorder.record(["a"], shard=2)


class RecordingLoaderTest(unittest.TestCase):
    def test_keys_from_items_batches_and_a_key_function(self):
        recorder = MembershipRecorder()
        items = [{"record_key": f"r{i}", "x": i} for i in range(3)]
        self.assertEqual(list(recorder.wrap(items)), items)  # yields what the loader yields
        batches = [{"id": FakeTensor([10, 11]), "x": None}, {"id": FakeTensor([12]), "x": None}]
        list(recorder.wrap(batches, key_column="id", shard=1))
        pairs = [(("p0", 1.0), 0), (("p1", 2.0), 1)]
        list(recorder.wrap(pairs, key_fn=lambda batch: batch[0][0], shard=2))
        self.assertEqual([(r.record_key, r.shard) for r in recorder.rows()],
                         [("r0", 0), ("r1", 0), ("r2", 0), ("10", 1), ("11", 1), ("12", 1), ("p0", 2), ("p1", 2)])

    def test_each_pass_is_an_epoch(self):
        recorder = MembershipRecorder()
        loader = RecordingLoader([{"record_key": "a"}], recorder)
        for _ in loader:
            pass
        recorder_rows = recorder.rows()
        more = RecordingLoader([{"record_key": "b"}], recorder)
        more.set_epoch(4)
        list(more)
        list(more)
        self.assertEqual(recorder_rows[0].epoch, 0)
        self.assertEqual(recorder.rows()[1], MembershipRow("b", 0, 0, 1, 4))
        self.assertEqual(more.epoch, 6)

    def test_row_indices_drawn_by_the_sampler_name_the_records(self):
        keys = [f"key-{i}" for i in range(5)]
        recorder = MembershipRecorder()
        loader = IndexLoader([[float(i)] for i in range(5)], batch_size=2)
        wrapped = RecordingLoader(loader, recorder, keys=keys, slice=3)
        batches = list(wrapped)
        self.assertEqual(batches[0], [[0.0], [1.0]])
        self.assertEqual([(r.record_key, r.slice, r.position) for r in recorder.rows()],
                         [(k, 3, i) for i, k in enumerate(keys)])
        list(wrapped)  # a second epoch records nothing new
        self.assertEqual(recorder.yields, 10)

    def test_a_batch_without_keys_says_how_to_give_them(self):
        recorder = MembershipRecorder()
        with self.assertRaisesRegex(KeyError, "without a 'record_key' column .* key_fn="):
            list(recorder.wrap([{"x": 1}]))
        with self.assertRaisesRegex(TypeError, "pass key_fn="):
            list(recorder.wrap([(1, 2)]))
        with self.assertRaisesRegex(TypeError, "needs a torch DataLoader"):
            RecordingLoader([1, 2], recorder, keys=["a", "b"])
        with self.assertRaisesRegex(ValueError, "not both"):
            RecordingLoader([], recorder, keys=["a"], key_fn=len)

    @unittest.skipUnless(HAS_TORCH, "torch is not installed")
    def test_a_shuffled_torch_dataloader(self):
        import torch
        from torch.utils.data import DataLoader, TensorDataset

        keys = [f"row{i}" for i in range(40)]
        loader = DataLoader(TensorDataset(torch.arange(40)), batch_size=8, shuffle=True, num_workers=0,
                            generator=torch.Generator().manual_seed(0))
        recorder = MembershipRecorder()
        seen = [int(x) for (batch,) in RecordingLoader(loader, recorder, keys=keys) for x in batch]
        self.assertEqual([r.record_key for r in recorder.rows()], [keys[i] for i in seen])


class PackageTest(unittest.TestCase):
    def test_importing_the_client_imports_no_heavy_package(self):
        code = ("import sys, lineage_client; "
                "print(*[m for m in ('torch', 'transformers', 'django') if m in sys.modules])")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        self.assertEqual(done.stdout.strip(), "")


if __name__ == "__main__":
    unittest.main()
