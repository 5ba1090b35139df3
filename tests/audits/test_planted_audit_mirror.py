"""tests/audits/checks/planted_audit.py (the planted cases of issue 23 and their benchmark) repeats
what it cannot import without Django: the shadow halves and their count (workers/runners/shadow.py).
These hold the copies to the originals."""

from __future__ import annotations

from tests.audits.checks import planted_audit
from workers.runners import shadow


def test_the_planted_cases_build_shadows_as_the_platform_does():
    assert planted_audit.SHADOWS == shadow.SHADOW_COUNT_DEFAULT
    assert planted_audit.SHADOW_FRACTION == shadow.SHADOW_FRACTION
    keys = [f"s3-r{i:04d}" for i in range(300)]
    for version_id, index in [(0, 0), (3, 7), (19, 31)]:
        assert (planted_audit.shadow_half(keys, version_id=version_id, index=index)
                == shadow.shadow_half(keys, version_id=version_id, index=index))
