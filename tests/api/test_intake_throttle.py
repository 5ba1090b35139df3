"""The intake rate limit: a sliding-window counter in the shared Redis, exact under concurrency."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

from deletion.throttling import IntakeThrottle, _seconds_until_allowed

WINDOW = 60.0
START = 1_800_000_000.0  # a whole number of windows, so START + f*WINDOW is a fraction f into a window


@pytest.fixture()
def limited(settings):
    """IntakeThrottle at 3/minute on a clean counter; restored afterwards. (Cleared through Django's
    cache, the same Redis database: a test may replace the counter's client.)"""
    from django.core.cache import cache

    cache.clear()
    IntakeThrottle.THROTTLE_RATES = {"intake": "3/minute"}
    yield
    IntakeThrottle.THROTTLE_RATES = settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]
    cache.clear()


def _check(client_pk: int, at: float) -> tuple[bool, float | None]:
    throttle = IntakeThrottle()
    throttle.timer = lambda: at
    request = SimpleNamespace(method="POST", user=SimpleNamespace(pk=client_pk), META={})
    allowed = throttle.allow_request(request, SimpleNamespace(throttle_scope="intake"))
    return allowed, throttle.wait()


def test_the_previous_window_counts_in_proportion_to_its_overlap(limited):
    # 4 requests late in the previous window; half-way through this one they still weigh 2 of 3.
    assert [_check(1, START - WINDOW + 50 + i)[0] for i in range(4)] == [True, True, True, False]
    half_way = START + WINDOW / 2
    assert _check(1, half_way)[0] is True  # 3 * 0.5 + 1 = 2.5
    allowed, wait = _check(1, half_way)  # 3 * 0.5 + 2 = 3.5 > 3
    assert allowed is False
    # The next one fits when 3 * (1 - t) + 1 + 1 <= 3, i.e. t = 2/3: 10 s from now.
    assert wait == pytest.approx(10.0)
    assert _check(1, START + WINDOW * 2 / 3 + 0.01)[0] is True
    # Another client has its own counter.
    assert _check(2, half_way)[0] is True


def test_refused_requests_do_not_count(limited):
    for _ in range(3):
        assert _check(1, START + 1)[0]
    assert [_check(1, START + 2)[0] for _ in range(20)] == [False] * 20
    # Next window, a third of the way in: 3 * (2/3) + 1 = 3 fits. Had the 20 refusals counted, it would not.
    assert _check(1, START + WINDOW * (1 + 1 / 3) + 0.01)[0] is True


def test_concurrent_requests_admit_exactly_the_limit(limited):
    IntakeThrottle.THROTTLE_RATES = {"intake": "40/minute"}
    results: list[bool] = []
    lock = threading.Lock()

    def hammer() -> None:
        mine = [_check(7, START + 5)[0] for _ in range(25)]
        with lock:
            results.extend(mine)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 200 and results.count(True) == 40


def test_seconds_until_allowed():
    # This window alone is full (3 of 3, none before): wait out the window, then a third of the next.
    assert _seconds_until_allowed(0, 3, 0.25, WINDOW, 3) == pytest.approx(45 + 20)
    # Room in this window once the previous one has decayed enough: 4 * (1 - t) + 1 + 1 <= 3 at t = 3/4.
    assert _seconds_until_allowed(4, 1, 0.5, WINDOW, 3) == pytest.approx(15)


def test_a_refused_create_says_when_to_retry(api_client_for, limited):
    client = api_client_for("intake")
    body = {"identifiers": {"email": "a@example.org"}, "jurisdiction": "GDPR", "legal_ground": "art17_1_a",
            "channel": "web"}
    codes = [client.post("/api/v1/deletion-requests/", body, format="json", HTTP_IDEMPOTENCY_KEY=str(i))
             for i in range(4)]
    assert [r.status_code for r in codes] == [201, 201, 201, 429]
    assert 0 < int(codes[-1]["Retry-After"]) <= 2 * WINDOW
    assert "throttled" in codes[-1].json()["error"]["code"]


def test_with_the_counter_store_down_a_request_is_taken_not_lost(api_client_for, limited, monkeypatch, caplog,
                                                                    tmp_path):
    import time

    import deletion.throttling

    dead = deletion.throttling.counter_client_for(f"unix://{tmp_path / 'no-redis.sock'}?db=1")
    monkeypatch.setattr(deletion.throttling, "_rate_counter_client", dead)
    started = time.perf_counter()
    client = api_client_for("intake")
    body = {"identifiers": {"email": "a@example.org"}, "jurisdiction": "GDPR", "legal_ground": "art17_1_a",
            "channel": "web"}
    codes = [client.post("/api/v1/deletion-requests/", body, format="json", HTTP_IDEMPOTENCY_KEY=str(i)).status_code
             for i in range(5)]
    assert codes == [201] * 5  # 3/minute, but nothing to count with: taken, and said in the log
    assert time.perf_counter() - started < 5  # no waiting on retries
    assert "intake rate limit not applied" in caplog.text
