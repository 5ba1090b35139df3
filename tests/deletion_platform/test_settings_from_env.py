"""Malformed settings fail at start-up and name the variable."""

import os
import subprocess
import sys

import pytest

CASES = [
    ({"DATABASE_URL": "mysql://db/x"}, "DATABASE_URL"),
    ({"DATABASE_URL": "postgresql://host"}, "DATABASE_URL"),
    ({"CELERY_BROKER_URL": "amqp://x"}, "CELERY_BROKER_URL"),
    ({"DJANGO_DEBUG": "maybe"}, "DJANGO_DEBUG"),
    ({"SUBJECT_PEPPER": "short"}, "SUBJECT_PEPPER"),
    ({"SUBJECT_PEPPER_VERSION": "two"}, "SUBJECT_PEPPER_VERSION"),
    ({"DJANGO_DEBUG": "false", "SECRET_KEY": ""}, "SECRET_KEY"),
    ({"CELERY_TASK_SOFT_TIME_LIMIT": "100", "CELERY_TASK_TIME_LIMIT": "50"}, "CELERY_TASK_TIME_LIMIT"),
    ({"SECRET_KEY_FILE": "/nonexistent/secret"}, "SECRET_KEY_FILE"),
    ({"AUDIT_LM_MIN_REFERENCES": "0"}, "AUDIT_LM_MIN_REFERENCES"),
]


@pytest.mark.parametrize("env,name", CASES, ids=[c[1] + ":" + next(iter(c[0].values())) for c in CASES])
def test_malformed_setting_fails_naming_it(env, name):
    result = subprocess.run(
        [sys.executable, "-c", "import deletion_platform.settings"],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0
    assert name in result.stderr.splitlines()[-1], result.stderr[-500:]


def test_good_environment_loads():
    result = subprocess.run(
        [sys.executable, "-c", "import deletion_platform.settings as s; print(s.DATABASES['default']['NAME'])"],
        env={**os.environ, "DATABASE_URL": "postgresql://u:p@db.internal:5433/prod"}, capture_output=True, text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "prod"


@pytest.mark.parametrize("broker,cache", [
    ("redis+socket:///srv/run/redis.sock", "unix:///srv/run/redis.sock?db=1"),
    ("redis://redis:6379/0", "redis://redis:6379/1"),
])
def test_cache_shares_the_brokers_redis(broker, cache):
    result = subprocess.run(
        [sys.executable, "-c", "import deletion_platform.settings as s; print(s.CACHES['default']['LOCATION'])"],
        env={**os.environ, "CELERY_BROKER_URL": broker}, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == cache


def test_beat_keeps_its_schedule_under_the_data_directory(tmp_path):
    # The service `celery beat` and `celery worker -B` (make serve) run.
    code = ("from deletion_platform.celery import app; from celery.beat import Service; "
            "print(Service(app).schedule_filename)")
    result = subprocess.run([sys.executable, "-c", code], env={**os.environ, "DATA_DIR": str(tmp_path)},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == str(tmp_path / "celerybeat-schedule")
