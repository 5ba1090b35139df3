"""Merging the membership ranks recorded, with simulated ranks: in memory and through files."""

from __future__ import annotations

import tempfile
import threading
import unittest
from pathlib import Path

from lineage_client import (
    DuplicateShardMembership,
    MembershipRecorder,
    MembershipRow,
    gather_membership,
)
from lineage_client.ranks import exchange_rank_rows, merge_rank_rows


def recorded(*batches, shard=0, slice=0) -> MembershipRecorder:
    """A rank's recorder after drawing ``batches`` (one list of keys per epoch)."""
    recorder = MembershipRecorder()
    for epoch, keys in enumerate(batches):
        recorder.record(keys, shard=shard, slice=slice, epoch=epoch)
    return recorder


class MergeTest(unittest.TestCase):
    def test_ranks_interleave_and_a_padded_repeat_counts_once(self):
        # Two ranks of a DistributedSampler over 5 records: rank 1 is padded with rank 0's first.
        rank0 = recorded(["a", "c", "e"], ["c", "a", "e"])
        rank1 = recorded(["b", "d", "a"], ["d", "a", "b"])
        merged = merge_rank_rows([rank0.rows(), rank1.rows()])
        self.assertEqual([(r.record_key, r.position) for r in merged],
                         [("a", 0), ("b", 1), ("c", 2), ("d", 3), ("e", 4)])

    def test_the_earliest_slice_and_epoch_win_and_two_shards_are_refused(self):
        late = [MembershipRow("a", 0, 2, 0, 0), MembershipRow("b", 0, 0, 0, 3)]
        early = [MembershipRow("a", 0, 1, 5, 1), ("b", 0, 0, 1, 1)]
        merged = merge_rank_rows([late, early])
        self.assertEqual(merged, [MembershipRow("b", 0, 0, 0, 1), MembershipRow("a", 0, 1, 0, 1)])
        with self.assertRaisesRegex(DuplicateShardMembership, "record 'a'"):
            merge_rank_rows([[MembershipRow("a", 0)], [MembershipRow("a", 1)]])

    def test_ranks_without_a_process_group_exchange_files(self):
        recorders = [recorded([f"r{rank}-{i}" for i in range(3)]) for rank in range(3)]
        results: dict[int, list] = {}
        with tempfile.TemporaryDirectory() as folder:
            def rank_main(rank):
                results[rank] = gather_membership(recorders[rank], rank=rank, world_size=3, directory=folder)

            threads = [threading.Thread(target=rank_main, args=(rank,)) for rank in (2, 0, 1)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(10)
        self.assertEqual(results[0], results[1])
        self.assertEqual(results[0], results[2])
        self.assertEqual([r.record_key for r in results[0]][:4], ["r0-0", "r1-0", "r2-0", "r0-1"])
        self.assertEqual(len(results[0]), 9)

    def test_a_missing_rank_is_named(self):
        with tempfile.TemporaryDirectory() as folder:
            with self.assertRaisesRegex(TimeoutError, r"rank\(s\) \[1\] of 2"):
                exchange_rank_rows([], rank=0, world_size=2, directory=Path(folder), timeout=0.05, poll=0.01)

    def test_one_process_keeps_its_own_rows_and_several_need_a_directory(self):
        recorder = recorded(["a", "b"])
        self.assertEqual(gather_membership(recorder, rank=0, world_size=1), recorder.rows())
        with self.assertRaisesRegex(ValueError, "give a directory"):
            gather_membership(recorder, rank=0, world_size=2)


if __name__ == "__main__":
    unittest.main()
