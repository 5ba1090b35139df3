"""Django settings, read strictly from the environment (see foundation/env.py).

With no DATABASE_URL / CELERY_BROKER_URL the embedded PostgreSQL and Redis under DATA_DIR are
used (deletion_platform/embedded.py); ``manage.py`` starts them when they are not running.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from deletion_platform import embedded
from foundation.env import (
    ImproperlyConfiguredEnv,
    env_bool,
    env_float,
    env_int,
    env_json,
    env_list,
    env_secret,
    env_str,
    env_url,
    parse_database_url,
)

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env_str("DATA_DIR", str(BASE_DIR / ".data"))).resolve()
DEBUG = env_bool("DJANGO_DEBUG", True)


def _dev_secret(name: str, length: int = 48) -> str:
    """A development secret generated once and kept under DATA_DIR/secrets (never in git).

    Only used when DEBUG is on and the variable is unset; production must set it."""
    if os.environ.get(name.upper()) or os.environ.get(f"{name.upper()}_FILE"):
        return ""  # the variable is set: nothing is generated (a worker host keeps no file of it)
    path = DATA_DIR / "secrets" / name
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    value = secrets.token_urlsafe(length)
    path.write_text(value)
    path.chmod(0o600)
    return value


SECRET_KEY = env_secret("SECRET_KEY", minimum_length=32, dev_default=_dev_secret("secret_key") if DEBUG else None)

# Subjects are stored as HMAC-SHA256 of the normalised identifier under a secret pepper.
# Rotation: set a new SUBJECT_PEPPER with a higher SUBJECT_PEPPER_VERSION and keep the old ones in
# SUBJECT_PEPPER_PREVIOUS ("1:oldsecret,2:older"); identifiers are re-keyed as they are seen.
SUBJECT_PEPPER_VERSION = env_int("SUBJECT_PEPPER_VERSION", 1, minimum=1)
_current_pepper = env_secret(
    "SUBJECT_PEPPER", minimum_length=32, dev_default=_dev_secret("subject_pepper") if DEBUG else None
)
SUBJECT_PEPPERS: dict[int, str] = {SUBJECT_PEPPER_VERSION: _current_pepper}
for _item in env_list("SUBJECT_PEPPER_PREVIOUS", []):
    _version, _, _secret = _item.partition(":")
    if not _version.isdigit() or len(_secret) < 32:
        raise ImproperlyConfiguredEnv(
            "SUBJECT_PEPPER_PREVIOUS must be a comma list of VERSION:SECRET with secrets of 32+ characters"
        )
    if int(_version) >= SUBJECT_PEPPER_VERSION:
        raise ImproperlyConfiguredEnv("SUBJECT_PEPPER_PREVIOUS versions must be below SUBJECT_PEPPER_VERSION")
    SUBJECT_PEPPERS[int(_version)] = _secret

# Record content is fingerprinted (HMAC-SHA256) under a key of its own, so that a pepper rotation
# never breaks matching suppressed content. The fingerprint under version n is chained through every
# key 1..n (models_registry.pseudonyms), so a rotation re-keys stored fingerprints without the erased
# content: set a new CONTENT_FINGERPRINT_KEY with the next CONTENT_FINGERPRINT_KEY_VERSION, keep every
# older key in CONTENT_FINGERPRINT_KEY_PREVIOUS ("1:oldest,2:older"), then run
# `manage.py content_fingerprints_rekey`.
CONTENT_FINGERPRINT_KEY_VERSION = env_int("CONTENT_FINGERPRINT_KEY_VERSION", 1, minimum=1)
CONTENT_FINGERPRINT_KEYS: dict[int, str] = {CONTENT_FINGERPRINT_KEY_VERSION: env_secret(
    "CONTENT_FINGERPRINT_KEY", minimum_length=32,
    dev_default=_dev_secret("content_fingerprint_key") if DEBUG else None)}
for _item in env_list("CONTENT_FINGERPRINT_KEY_PREVIOUS", []):
    _version, _, _secret = _item.partition(":")
    if not _version.isdigit() or len(_secret) < 32 or not 1 <= int(_version) < CONTENT_FINGERPRINT_KEY_VERSION:
        raise ImproperlyConfiguredEnv(
            "CONTENT_FINGERPRINT_KEY_PREVIOUS must be a comma list of VERSION:SECRET, versions below "
            "CONTENT_FINGERPRINT_KEY_VERSION, secrets of 32+ characters")
    CONTENT_FINGERPRINT_KEYS[int(_version)] = _secret
if set(CONTENT_FINGERPRINT_KEYS) != set(range(1, CONTENT_FINGERPRINT_KEY_VERSION + 1)):
    raise ImproperlyConfiguredEnv(
        "CONTENT_FINGERPRINT_KEY_PREVIOUS must hold every version from 1 below CONTENT_FINGERPRINT_KEY_VERSION: "
        "a content fingerprint is chained through every key, none may be dropped")

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "testserver"] if DEBUG else [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's files served from here: /api/docs/ works offline
    "foundation.ledger",
    "foundation.access",
    "models_registry",
    "deletion",
    "workers",
    "audits",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # The admin's CSS and scripts under gunicorn (demo, docker) as under runserver: nothing else serves them.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "deletion_platform.urls"
WSGI_APPLICATION = "deletion_platform.wsgi.application"
ASGI_APPLICATION = "deletion_platform.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "deletion_platform" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

_embedded = embedded.services_for(DATA_DIR)
USES_EMBEDDED_DATABASE = env_str("DATABASE_URL") is None
USES_EMBEDDED_BROKER = env_str("CELERY_BROKER_URL") is None
DATABASE_URL = env_url("DATABASE_URL", ("postgres", "postgresql"), _embedded.database_url)
DATABASES = {"default": parse_database_url("DATABASE_URL", DATABASE_URL)}
DATABASES["default"]["CONN_MAX_AGE"] = env_int("DATABASE_CONN_MAX_AGE", 60, minimum=0)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DATABASES["default"]["TEST"] = {"NAME": env_str("TEST_DATABASE_NAME", "test_deletion_platform")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-gb"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# WhiteNoise serves the apps' static files where they are installed (no STATIC_ROOT, no collectstatic
# step to forget; an empty STATIC_ROOT only made it warn on every request).
WHITENOISE_USE_FINDERS = True

# Artifacts (weights, checkpoints, reports) live in a content-addressed store under the data dir.
ARTIFACT_ROOT = Path(env_str("ARTIFACT_ROOT", str(DATA_DIR / "artifacts"))).resolve()
DATASET_ROOT = Path(env_str("DATASET_ROOT", str(DATA_DIR / "datasets"))).resolve()
REPORT_ROOT = Path(env_str("REPORT_ROOT", str(DATA_DIR / "reports"))).resolve()
# Which backend holds the artifact store (docs/object_storage.md): "local", the folder above (the
# embedded default), or "s3", an S3-compatible bucket (AWS S3, MinIO) every worker host reaches.
ARTIFACT_STORE = env_str("ARTIFACT_STORE", "local")
if ARTIFACT_STORE not in {"local", "s3"}:
    raise ImproperlyConfiguredEnv(f"ARTIFACT_STORE={ARTIFACT_STORE!r} must be local or s3")
ARTIFACT_S3_BUCKET = env_str("ARTIFACT_S3_BUCKET", required=ARTIFACT_STORE == "s3")
ARTIFACT_S3_PREFIX = env_str("ARTIFACT_S3_PREFIX", "artifacts")
ARTIFACT_S3_ENDPOINT_URL = env_url("ARTIFACT_S3_ENDPOINT_URL", ("http", "https"), None)  # unset: AWS
ARTIFACT_S3_REGION = env_str("ARTIFACT_S3_REGION")
# Unset: boto3's own chain (AWS_* variables, an instance profile). *_FILE works for both.
ARTIFACT_S3_ACCESS_KEY_ID = env_str("ARTIFACT_S3_ACCESS_KEY_ID")
ARTIFACT_S3_SECRET_ACCESS_KEY = env_str("ARTIFACT_S3_SECRET_ACCESS_KEY")
# Objects above the threshold go up in parts (one PUT stops at 5 GB), each part sealed by itself;
# S3 wants parts of 5 MiB to 5 GiB (workers.object_store).
ARTIFACT_S3_PART_SIZE = env_int("ARTIFACT_S3_PART_SIZE", 64 * 1024 * 1024, minimum=5 * 1024 * 1024)
if ARTIFACT_S3_PART_SIZE > 5 * 1024**3:
    raise ImproperlyConfiguredEnv(f"ARTIFACT_S3_PART_SIZE={ARTIFACT_S3_PART_SIZE} must be <= {5 * 1024**3} (5 GiB)")
ARTIFACT_S3_MULTIPART_THRESHOLD = env_int("ARTIFACT_S3_MULTIPART_THRESHOLD", 256 * 1024 * 1024,
                                          minimum=5 * 1024 * 1024)


# ---------------------------------------------------------------- report signing (audits/signing.py)
def _env_file(name: str) -> Path | None:
    """An optional path setting that must name a readable file when it is set."""
    value = env_str(name)
    if value is None:
        return None
    path = Path(value).expanduser().resolve()
    if not path.is_file() or not os.access(path, os.R_OK):
        raise ImproperlyConfiguredEnv(f"{name}={value!r} is not a readable file")
    return path


# The organisation's signing identity: a PEM key and certificate (+ an optional PEM chain of the
# intermediate CAs), or a PKCS#12 file. REPORT_SIGNING_PASSPHRASE (or _FILE) unlocks either.
# With none set and DJANGO_DEBUG on, a development root CA and signer are generated under
# DATA_DIR/secrets/signing on first use; with it off, signing refuses until they are set.
REPORT_SIGNING_KEY = _env_file("REPORT_SIGNING_KEY")
REPORT_SIGNING_CERT = _env_file("REPORT_SIGNING_CERT")
REPORT_SIGNING_CHAIN = _env_file("REPORT_SIGNING_CHAIN")
REPORT_SIGNING_PKCS12 = _env_file("REPORT_SIGNING_PKCS12")
REPORT_SIGNING_PASSPHRASE = env_str("REPORT_SIGNING_PASSPHRASE")
if bool(REPORT_SIGNING_KEY) != bool(REPORT_SIGNING_CERT):
    raise ImproperlyConfiguredEnv("REPORT_SIGNING_KEY and REPORT_SIGNING_CERT must be set together")
if REPORT_SIGNING_PKCS12 and REPORT_SIGNING_KEY:
    raise ImproperlyConfiguredEnv("set REPORT_SIGNING_PKCS12 or REPORT_SIGNING_KEY/REPORT_SIGNING_CERT, not both")
# An RFC 3161 time-stamping service: signatures become PAdES B-T (B-LT with validation data).
REPORT_TSA_URL = env_url("REPORT_TSA_URL", ("http", "https"))
# Whether the development identity may be used when none is configured: DEBUG as configured at
# start-up (test runners switch settings.DEBUG off later; this stays as the environment says).
REPORT_DEV_SIGNING = DEBUG
# The roots (PEM, one or more) a verifier trusts: the signer's root and, with REPORT_TSA_URL, the
# TSA's root. Default: the development root, if one was generated.
REPORT_TRUST_ROOT = _env_file("REPORT_TRUST_ROOT")

# Largest import accepted through the API (bytes); the management command has no limit.
IMPORT_MAX_UPLOAD_BYTES = env_int("IMPORT_MAX_UPLOAD_BYTES", 200 * 1024 * 1024, minimum=1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 1024 * 1024, minimum=1024)

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "deletion_platform.api.exception_handler",
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "foundation.access.authentication.HashedTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Data-deletion platform API",
    "DESCRIPTION": "Erasure requests carried into trained models, with signed audit reports.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # The schema describes the API; it holds no data, so it is public (schemathesis reads it too).
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    # Swagger UI from the installed drf-spectacular-sidecar, not a CDN: no third-party script on the
    # admin's origin, and the page works where the platform cannot reach the internet.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# ---------------------------------------------------------------- Celery
CELERY_BROKER_URL = env_url(
    "CELERY_BROKER_URL", ("redis", "rediss", "redis+socket"), _embedded.broker_url
)
CELERY_TASK_ALWAYS_EAGER = False
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 3 * 3600, minimum=10)
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 3 * 3600 + 300, minimum=20)
if CELERY_TASK_TIME_LIMIT <= CELERY_TASK_SOFT_TIME_LIMIT:
    raise ImproperlyConfiguredEnv("CELERY_TASK_TIME_LIMIT must exceed CELERY_TASK_SOFT_TIME_LIMIT")
# Redis redelivers an unacknowledged task after visibility_timeout; it must exceed the hard time
# limit, or a long job still running would be handed to a second worker.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_TASK_TIME_LIMIT + 600}
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Where audits of language models go: "audit" (the CPU workers; the embedded default) or "gpu"
# when GPU workers run (their checks run the model over many texts). Classifier audits stay on "audit".
LM_AUDIT_QUEUE = env_str("LM_AUDIT_QUEUE", "audit")
if LM_AUDIT_QUEUE not in {"audit", "gpu"}:
    raise ImproperlyConfiguredEnv(f"LM_AUDIT_QUEUE={LM_AUDIT_QUEUE!r} must be audit or gpu")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
}

# Jobs whose heartbeat is older than this lost their worker; the sweeper re-enqueues them.
JOB_STALE_AFTER_SECONDS = env_int("JOB_STALE_AFTER_SECONDS", 120, minimum=5)
# Artifact files no registry row reaches are removed once older than this (workers/artifact_gc.py);
# files written since a live job started are kept whatever their age.
ARTIFACT_GC_MIN_AGE_SECONDS = env_int("ARTIFACT_GC_MIN_AGE_SECONDS", 3600, minimum=60)
ARTIFACT_GC_EVERY_SECONDS = env_int("ARTIFACT_GC_EVERY_SECONDS", 3600, minimum=60)
# Beat keeps when each periodic task last ran in this file: under the data directory, not wherever
# the worker was started.
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE = {
    "sweep-stale-jobs": {"task": "workers.sweep_stale_jobs", "schedule": 30.0, "options": {"queue": "default"}},
    "collect-orphaned-artifacts": {"task": "workers.collect_orphaned_artifacts",
                                   "schedule": float(ARTIFACT_GC_EVERY_SECONDS), "options": {"queue": "default"}},
    "mark-deadlines": {"task": "deletion.mark_deadlines", "schedule": 3600.0, "options": {"queue": "default"}},
    "ledger-checkpoint": {"task": "deletion.ledger_checkpoint", "schedule": 3600.0, "options": {"queue": "default"}},
    "expire-external-retrains": {"task": "deletion.expire_external_retrains", "schedule": 300.0,
                                 "options": {"queue": "default"}},
}
# Where clients reach the API, for the absolute upload URL in an external-retrain job (e.g.
# https://platform.example.org); unset, the job gives the path only.
PUBLIC_BASE_URL = env_url("PUBLIC_BASE_URL", ("http", "https"))
# The limits a differential-privacy bound must meet to mean something (dp_bounded, deletion.planning):
# a subject's group bound (epsilon, delta) beyond them is shown as vacuous. A model's policy may set its
# own (unlearning_policy.dp_max_epsilon, dp_max_delta). Epsilon 10 is already a weak limit; delta well
# below one over the size of any training set.
DP_MAX_EPSILON = env_float("DP_MAX_EPSILON", 10.0, minimum=0.0)
DP_MAX_DELTA = env_float("DP_MAX_DELTA", 1e-5, minimum=0.0, below=1.0)
# The audit's shadow policy (audits.checks.shadow_policy): an approximate verdict needs at least this
# many shadow models in which each forgotten record was absent (32 shadows in complementary pairs
# give every record 16); a model's unlearning_policy.min_out_shadows may ask for more.
AUDIT_MIN_OUT_SHADOWS = env_int("AUDIT_MIN_OUT_SHADOWS", 16, minimum=1)
# The representation and relearning checks of an approximate result whose forget set is a class or
# a sub-population (audits.forget_references): how many models the audit retrains without the
# forget set (the model's own recipe and config, each a full training run) and how many derived
# controls it fine-tunes at the method's budget. Each costs what one training (one unlearning) run
# costs; 0 references turns the checks off (NOT_APPLICABLE, saying so). An audit job's config may
# set its own ("forget_references": {"references": n, "controls": n}).
AUDIT_FORGET_REFERENCES = env_int("AUDIT_FORGET_REFERENCES", 2, minimum=0)
AUDIT_FORGET_CONTROLS = env_int("AUDIT_FORGET_CONTROLS", 2, minimum=0)
# U-LiRA of an approximate result (audits.unlearned_shadows): the method is run again on at most this
# many shadow models that held the forgotten records (16: each record gets 4 or more runs with 32
# shadows in pairs), within this many seconds of the audit (a slower method gets fewer runs, and the
# audit says so); 0 shadows turns it off. An INCONCLUSIVE U-LiRA blocks an approximate PASS, so the
# budget must let every record reach 4 runs: on the demo's MNIST model a fine-tune run takes about 6 s
# on 2 quiet cores and 8 random records need 7 runs (median; at most 12) of 32 paired shadows
# (benchmarks/audit_time.py, 2026-12-07: 30 s allowed 5 runs, INCONCLUSIVE), hence 90 s.
AUDIT_ULIRA_MAX_SHADOWS = env_int("AUDIT_ULIRA_MAX_SHADOWS", 16, minimum=0)
AUDIT_ULIRA_SECONDS = env_float("AUDIT_ULIRA_SECONDS", 90.0, minimum=0.0)
# A language model's audit trains no shadow models: its reference for a forgotten record ("a model
# that never saw it") is the same version on held-out records of the record's format, which no
# version trained on (audits.lm_evidence). Its own minimum: at least this many such records per
# forgotten record, else the lm_reference_policy check names the shortfall (as shadow_policy does).
AUDIT_LM_MIN_REFERENCES = env_int("AUDIT_LM_MIN_REFERENCES", 4, minimum=1)

# ---------------------------------------------------------------- production hardening
# Off in development; `python manage.py check --deploy` is clean with DJANGO_DEBUG=false.
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not DEBUG)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31536000, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", not DEBUG)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if env_bool("BEHIND_TLS_PROXY", not DEBUG) else None
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

# Shared cache (throttling counters must be shared by every web process): Redis, db 1.
def _cache_url(broker: str) -> str:
    """Redis db 1 on the broker's server (kombu's redis+socket:// becomes redis-py's unix://)."""
    if broker.startswith("redis+socket://"):
        return "unix://" + broker[len("redis+socket://"):].split("?", 1)[0] + "?db=1"
    return broker.rsplit("/", 1)[0] + "/1"


_redis_cache = env_url("CACHE_URL", ("redis", "rediss", "unix"), None) or _cache_url(CELERY_BROKER_URL)
CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": _redis_cache}}
REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"] = {"intake": env_str("INTAKE_RATE_LIMIT", "6000/minute")}

# Requests approved for the same model version within this many seconds share one unlearning
# job (a model's unlearning_policy.batch_window_seconds overrides it).
UNLEARNING_BATCH_WINDOW_SECONDS = env_int("UNLEARNING_BATCH_WINDOW_SECONDS", 0, minimum=0)

# Envelope encryption of stored record content: per-subject data keys in a keystore folder kept
# apart from the database (and its backups), wrapped by RECORD_KEK.
KEYSTORE_DIR = Path(env_str("KEYSTORE_DIR", str(DATA_DIR / "keystore"))).resolve()
# With the object-store backend the keys are kept in a PostgreSQL database of their own, apart
# from DATABASE_URL, with its own credentials (docs/object_storage.md): a destroyed key is gone
# for every worker host at once. Required with ARTIFACT_STORE=s3; KEYSTORE_DIR is then unused.
KEYSTORE_DATABASE_URL = env_url("KEYSTORE_DATABASE_URL", ("postgres", "postgresql"), None)
if ARTIFACT_STORE == "s3" and not KEYSTORE_DATABASE_URL:
    raise ImproperlyConfiguredEnv("KEYSTORE_DATABASE_URL must be set with ARTIFACT_STORE=s3 (a database of its own "
                                  "for the data keys, apart from DATABASE_URL)")
if KEYSTORE_DATABASE_URL:
    _keys_db = parse_database_url("KEYSTORE_DATABASE_URL", KEYSTORE_DATABASE_URL)
    if (_keys_db["HOST"], _keys_db["PORT"], _keys_db["NAME"]) == (
            DATABASES["default"]["HOST"], DATABASES["default"]["PORT"], DATABASES["default"]["NAME"]):
        raise ImproperlyConfiguredEnv("KEYSTORE_DATABASE_URL must name another database than DATABASE_URL: a backup "
                                      "of the platform's database must not hold the keys")
RECORD_KEK = env_secret("RECORD_KEK", minimum_length=32, dev_default=_dev_secret("record_kek") if DEBUG else None)


def _data_source_queries() -> dict:
    """The queries datasets read from the company's own PostgreSQL run (fixed here by the operator,
    named by API clients, never sent by them): DATA_SOURCE_QUERIES (or DATA_SOURCE_QUERIES_FILE) is
    ``{"name": {"sql": "SELECT ...", "dsn_env": "VAR" or "dsn_file": "/run/secrets/...",
    "timeout_seconds": 60}}``. Each runs in a READ ONLY transaction with that statement timeout."""
    queries = env_json("DATA_SOURCE_QUERIES", {})
    if not isinstance(queries, dict):
        raise ImproperlyConfiguredEnv("DATA_SOURCE_QUERIES must be a JSON object of named queries")
    for name, entry in queries.items():
        where = f"DATA_SOURCE_QUERIES[{name!r}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("sql"), str) or not entry["sql"].strip():
            raise ImproperlyConfiguredEnv(f"{where} needs \"sql\"")
        unknown = sorted(set(entry) - {"sql", "dsn_env", "dsn_file", "timeout_seconds"})
        if unknown:
            raise ImproperlyConfiguredEnv(f"{where}: unknown field {unknown[0]!r}")
        if bool(entry.get("dsn_env")) == bool(entry.get("dsn_file")):
            raise ImproperlyConfiguredEnv(f"{where} names its DSN secret with one of dsn_env or dsn_file")
        timeout = entry.get("timeout_seconds", 60)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 3600:
            raise ImproperlyConfiguredEnv(f"{where}: timeout_seconds must be a number of seconds in (0, 3600]")
    return queries


DATA_SOURCE_QUERIES = _data_source_queries()

# The company's MLflow tracking server (workers/mlflow_registry.py): registered models' versions are
# imported from it, and an unlearned version is registered back and its serving alias moved. Unset
# (the embedded default), the MLflow import is off and says so. Credentials: MLflow's own variables
# (MLFLOW_TRACKING_TOKEN, or MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD).
MLFLOW_TRACKING_URI = env_url("MLFLOW_TRACKING_URI", ("http", "https"))


# Webhook targets on internal addresses (loopback, private, link-local...) are refused unless their
# network is listed here (CIDRs, comma-separated), e.g. a receiver inside the company's own network.
WEBHOOK_ALLOWED_NETWORKS = env_list("WEBHOOK_ALLOWED_NETWORKS", [])
try:
    from foundation.outbound import networks as _networks

    _networks(WEBHOOK_ALLOWED_NETWORKS)
except ValueError as _exc:
    raise ImproperlyConfiguredEnv(f"WEBHOOK_ALLOWED_NETWORKS: {_exc}") from None

# Notices to the person who made a request (deletion/notices.py) go through Django's e-mail backend.
# The default writes each e-mail as a file under EMAIL_FILE_PATH (nothing leaves the machine, and no
# address reaches a log, as the console backend would put it in the worker's output); production
# sets the SMTP backend and its server.
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.filebased.EmailBackend")
if "." not in EMAIL_BACKEND:
    raise ImproperlyConfiguredEnv(f"EMAIL_BACKEND={EMAIL_BACKEND!r} must be a dotted path to an e-mail backend class")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")  # or EMAIL_HOST_PASSWORD_FILE
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
if EMAIL_USE_TLS and EMAIL_USE_SSL:
    raise ImproperlyConfiguredEnv("EMAIL_USE_TLS and EMAIL_USE_SSL cannot both be true")
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 30, minimum=1)
EMAIL_FILE_PATH = env_str("EMAIL_FILE_PATH", str(DATA_DIR / "outbox"))
DEFAULT_FROM_EMAIL = env_str("NOTICE_FROM_EMAIL", "privacy@localhost")
# How the notices are signed, e.g. "The data protection team of Example Ltd".
NOTICE_SENDER_NAME = env_str("NOTICE_SENDER_NAME", "The data protection team")
