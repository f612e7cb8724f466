"""Django settings, read from the environment (every variable is documented in `.env.example`).

Production is the default: ``DEBUG`` is off, ``SECRET_KEY`` is required, cookies are secure and
HTTPS is enforced. ``DEBUG=true`` relaxes exactly those for local development.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from webapp.env import env_bool, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env_bool("DEBUG", False)

# A fixed key is acceptable only for local development; production must bring its own.
_DEV_SECRET_KEY = "django-insecure-steerlab-dev-only-never-use-in-production"
SECRET_KEY = env_str("SECRET_KEY", _DEV_SECRET_KEY if DEBUG else None)
if not DEBUG and SECRET_KEY == _DEV_SECRET_KEY:
    raise ImproperlyConfigured("SECRET_KEY must not be the development key when DEBUG is off")

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "servestatic",  # its system checks of the static files settings
    "axes",
    "webapp.accounts",
    "webapp.library",
    "webapp.playground",
    "webapp.jobs",
    "webapp.compare",
    "webapp.sharing",
    "webapp.operations",
]

MIDDLEWARE = [
    # First: a request id on every log line of a request (and in its X-Request-ID response header);
    # then /healthz, /readyz and /metrics, answered before host validation and the HTTPS redirect
    # (orchestrators and Prometheus call a pod by its address over plain HTTP).
    "webapp.operations.middleware.request_id_middleware",
    "webapp.operations.middleware.probe_middleware",
    "django.middleware.security.SecurityMiddleware",
    # Static files (the browser app's build included) straight from the app server: no separate web
    # server needed; hashed asset names are cached for a year. servestatic (a whitenoise fork) streams
    # files asynchronously, as the ASGI server wants (whitenoise's sync iterators made Django warn).
    "servestatic.middleware.ServeStaticMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes requires: it turns a lockout raised during authentication into a response.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "webapp.urls"
WSGI_APPLICATION = "webapp.wsgi.application"
ASGI_APPLICATION = "webapp.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --------------------------------------------------------------------------------------------
# Data stores
# --------------------------------------------------------------------------------------------
DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}")
try:
    _database: dict[str, Any] = dict(
        dj_database_url.parse(
            DATABASE_URL,
            conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60, minimum=0),
            conn_health_checks=True,
        )
    )
except ValueError as exc:  # dj-database-url raises ValueError on unknown schemes
    raise ImproperlyConfigured(f"DATABASE_URL is not a usable database URL: {exc}") from None
if _database["ENGINE"] == "django.db.backends.sqlite3" and _database["NAME"] != ":memory:":
    # The embedded default serves many people from one file: the web requests, the run threads and
    # the event writer all write to it. WAL lets readers and one writer work at once; IMMEDIATE
    # takes the write lock when a transaction starts (a deferred one that reads and then writes
    # fails at once with "database is locked" when another writer got there first, whatever the
    # timeout); a writer waits up to STEERLAB_SQLITE_TIMEOUT seconds for its turn.
    _database["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": env_int("STEERLAB_SQLITE_TIMEOUT", 30, minimum=1),
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        **_database.get("OPTIONS", {}),
    }
DATABASES = {"default": _database}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Empty: the local-memory cache (per process). Set it in any multi-process deployment, so login
# throttling and caches are shared between processes.
REDIS_URL = env_str("REDIS_URL", "")
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# The channel layer carries run events (worker -> browsers) and live control (browser -> worker).
# With REDIS_URL: channels-redis' pub/sub layer, its channel queues bounded (the choice measured
# against the core layer in benchmarks/stream_latency.py): each channel holds at most
# CHANNEL_CAPACITY messages (a slow client's excess is dropped and backfilled from the database).
# Without REDIS_URL: the in-memory layer, for the embedded single-process default only.
CHANNEL_CAPACITY = env_int("CHANNEL_CAPACITY", 1000, minimum=10)
# Namespace of the channel layer's Redis keys (deployments sharing one Redis need distinct ones).
CHANNEL_PREFIX = env_str("CHANNEL_PREFIX", "steerlab")


def redis_channel_layer(url: str, prefix: str, capacity: int = 1000, kind: str = "pubsub") -> dict[str, Any]:
    """The Redis channel layer on ``url``: ``pubsub`` (default) or channels-redis' ``core`` layer.

    ``pubsub`` is channels-redis' pub/sub layer with bounded channel queues
    (``webapp.playground.layers``): measured faster by far (benchmarks/stream_latency.py).
    redis-py 8 reads with a 5 s socket timeout by default, exactly as long as the core layer's
    BZPOPMIN blocks, which could end an idle consumer: 30 s still notices a dead connection.
    """
    hosts = [{"address": url, "socket_timeout": 30}]
    if kind == "pubsub":
        return {
            "BACKEND": "webapp.playground.layers.BoundedRedisPubSubChannelLayer",
            "CONFIG": {"hosts": hosts, "prefix": prefix, "capacity": capacity},
        }
    if kind != "core":
        raise ImproperlyConfigured(f"CHANNEL_LAYER_KIND must be pubsub or core, got {kind!r}")
    return {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": hosts, "capacity": capacity, "expiry": 60, "prefix": prefix},
    }


if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": redis_channel_layer(
            REDIS_URL, CHANNEL_PREFIX, CHANNEL_CAPACITY, env_str("CHANNEL_LAYER_KIND", "pubsub")
        )
    }
else:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels.layers.InMemoryChannelLayer",
            "CONFIG": {"capacity": CHANNEL_CAPACITY},
        }
    }

# --------------------------------------------------------------------------------------------
# Runs: dispatch, workers, quotas
# --------------------------------------------------------------------------------------------
# The Celery broker (RabbitMQ in deployment). Empty: runs execute in this process, in a thread
# (the embedded default; needs a single web process).
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "")
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# One task at a time per prefetch: a run waiting behind a long one could be served by another worker.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Hard wall-clock limit of one run in seconds (the task is killed past it; the lease reaper cleans up).
STEERLAB_RUN_TIME_LIMIT = env_int("STEERLAB_RUN_TIME_LIMIT", 900, minimum=10)
# A running run's heartbeat lease: renewed by its worker; the reaper acts once it expires.
STEERLAB_RUN_LEASE_SECONDS = env_int("STEERLAB_RUN_LEASE_SECONDS", 30, minimum=2)
# Attempts a run gets: a run whose worker died is re-queued until this many attempts, then failed.
STEERLAB_RUN_MAX_ATTEMPTS = env_int("STEERLAB_RUN_MAX_ATTEMPTS", 2, minimum=1)
# Seconds a run keeps generating after its last browser closed (a reload resumes within it).
# Jobs resume from their stored batches, so a job may be taken over more often than a run.
STEERLAB_MAX_ACTIVE_JOBS = env_int("STEERLAB_MAX_ACTIVE_JOBS", 4, minimum=1)
STEERLAB_JOB_TIME_LIMIT = env_int("STEERLAB_JOB_TIME_LIMIT", 6 * 3600, minimum=60)
STEERLAB_JOB_MAX_ATTEMPTS = env_int("STEERLAB_JOB_MAX_ATTEMPTS", 4, minimum=1)
# Prompts one batch run may take (a larger dataset is refused; its tokens also count per day).
STEERLAB_BATCH_MAX_PROMPTS = env_int("STEERLAB_BATCH_MAX_PROMPTS", 2000, minimum=1)
STEERLAB_DETACH_GRACE_SECONDS = env_int("STEERLAB_DETACH_GRACE_SECONDS", 10, minimum=0)
# Quotas per user.
STEERLAB_MAX_CONCURRENT_RUNS = env_int("STEERLAB_MAX_CONCURRENT_RUNS", 4, minimum=1)
STEERLAB_MAX_NEW_TOKENS = env_int("STEERLAB_MAX_NEW_TOKENS", 512, minimum=1)
STEERLAB_MAX_PROMPT_TOKENS = env_int("STEERLAB_MAX_PROMPT_TOKENS", 4096, minimum=16)
STEERLAB_DAILY_TOKEN_BUDGET = env_int("STEERLAB_DAILY_TOKEN_BUDGET", 1_000_000, minimum=1)
# Largest websocket frame accepted from a browser, in bytes.
STEERLAB_MAX_FRAME_BYTES = env_int("STEERLAB_MAX_FRAME_BYTES", 64 * 1024, minimum=1024)
# The engine each worker process hosts per deployment: concurrent requests, and a minimum time
# per decode step in milliseconds (0 in production; tests that act during a generation set it).
STEERLAB_ENGINE_MAX_REQUESTS = env_int("STEERLAB_ENGINE_MAX_REQUESTS", 32, minimum=1)
STEERLAB_ENGINE_MIN_STEP_MS = env_int("STEERLAB_ENGINE_MIN_STEP_MS", 0, minimum=0)
# KV cache of a vllm deployment's engine, in bytes (0: 256 MiB on a CPU, vLLM's own sizing on a GPU).
STEERLAB_VLLM_KV_CACHE_BYTES = env_int("STEERLAB_VLLM_KV_CACHE_BYTES", 0, minimum=0)

# --------------------------------------------------------------------------------------------
# Authentication
# --------------------------------------------------------------------------------------------
AUTH_USER_MODEL = "accounts.User"
AUTHENTICATION_BACKENDS = [
    # django-axes first: it refuses a locked-out username/IP before the password is checked.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    # Kept so that hashes made by another hasher still verify (and are upgraded at the next login).
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2SHA1PasswordHasher",
    "django.contrib.auth.hashers.ScryptPasswordHasher",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "accounts:login"
LOGIN_REDIRECT_URL = "app"
LOGOUT_REDIRECT_URL = "accounts:login"

# Login throttling (django-axes): lock a username from one IP address after this many failures.
# Counted in the database, so every web process sees the same count.
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("LOGIN_COOLOFF_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False

# Library uploads (vectors, probes, datasets): larger files are refused before parsing.
STEERLAB_MAX_UPLOAD_BYTES = env_int("STEERLAB_MAX_UPLOAD_BYTES", 64 * 1024 * 1024, minimum=1)

# --------------------------------------------------------------------------------------------
# HTTPS and cookies: on unless DEBUG, each overridable (e.g. behind a TLS-terminating proxy).
# --------------------------------------------------------------------------------------------
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
if env_bool("SECURE_PROXY_SSL_HEADER", False):
    # Only behind a proxy that sets (and never forwards a client's) X-Forwarded-Proto.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not DEBUG)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31_536_000, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", not DEBUG)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", not DEBUG)
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"

# --------------------------------------------------------------------------------------------
# Internationalisation and static files
# --------------------------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(BASE_DIR / "staticfiles")))
# The browser app's build (`make frontend`): its assets are static files; its index.html is the
# shell that webapp.frontend serves at /app/.
FRONTEND_DIST = Path(env_str("FRONTEND_DIST", str(BASE_DIR / "frontend" / "dist")))
STATICFILES_DIRS = [FRONTEND_DIST] if FRONTEND_DIST.is_dir() else []
# Vite names assets by content hash: servestatic may cache them forever.
SERVESTATIC_IMMUTABLE_FILE_TEST = r"^.+/app/.+-[A-Za-z0-9_-]{8,}\.\w+$"

LOG_LEVEL = env_str("LOG_LEVEL", "INFO").upper()
if LOG_LEVEL not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
    raise ImproperlyConfigured(
        f"LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {LOG_LEVEL!r}"
    )

# Log lines: plain text (the demo) or one JSON object per line (deployments), each with the
# request id inside an HTTP request and the ids log calls pass (run, job...); never message contents.
STEERLAB_LOG_FORMAT = env_str("STEERLAB_LOG_FORMAT", "text").lower()
if STEERLAB_LOG_FORMAT not in {"text", "json"}:
    raise ImproperlyConfigured(f"STEERLAB_LOG_FORMAT must be text or json, got {STEERLAB_LOG_FORMAT!r}")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "webapp.operations.logs.RequestIdFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "webapp.operations.logs.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if STEERLAB_LOG_FORMAT == "json" else "plain",
            "filters": ["request_id"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
}

# --------------------------------------------------------------------------------------------
# Operations: health, readiness, metrics, worker heartbeats and drain (webapp/operations, workers/)
# --------------------------------------------------------------------------------------------
# /metrics answers only requests with "Authorization: Bearer <token>" when set (empty: open; keep
# it on the internal network then).
STEERLAB_METRICS_TOKEN = env_str("STEERLAB_METRICS_TOKEN", "")
# Each /readyz check (database, broker, channel layer, workers) fails past this many milliseconds.
STEERLAB_READYZ_TIMEOUT_MS = env_int("STEERLAB_READYZ_TIMEOUT_MS", 2000, minimum=100)
# Seconds between a worker's heartbeats in the shared cache; a worker silent for three of them
# is no longer live (/readyz needs one live worker when a broker is configured).
STEERLAB_WORKER_HEARTBEAT_SECONDS = env_int("STEERLAB_WORKER_HEARTBEAT_SECONDS", 5, minimum=1)
# Port on which each Celery worker process serves its Prometheus metrics (0: none).
STEERLAB_WORKER_METRICS_PORT = env_int("STEERLAB_WORKER_METRICS_PORT", 0, minimum=0)
# SIGTERM is Celery's warm shutdown, the worker's drain: it stops taking tasks at once and waits
# for the running ones. Runs finish (bounded by their token limit and STEERLAB_RUN_TIME_LIMIT);
# jobs hand themselves back between batches (workers.drain). Give workers a stop grace period
# longer than a run takes. The threads pool cannot cancel a running task: on a lost broker
# connection the tasks go on (their lease keeps another worker from running them twice; acks_late
# returns the message), rather than Celery trying to cancel them.
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False
# No soft-shutdown wait: a cold shutdown (SIGQUIT, a second Ctrl+C) stops at once, and the lease
# reaper re-queues what was running (SIGTERM is the graceful path).
CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT = 0.0
