"""abacus settings: everything comes from the environment, with embedded defaults.

With no environment at all abacus runs on a SQLite file under var/ and a Celery broker that
needs no server (kombu's filesystem transport). Production sets DATABASE_URL and
CELERY_BROKER_URL (see README "Configuration").
"""

import os
import re
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from config import queues

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("ABACUS_VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)
(VAR_DIR / "static").mkdir(exist_ok=True)


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = env_bool("DEBUG", False)
SECRET_KEY = os.environ.get("SECRET_KEY", "abacus-insecure-development-key-change-me")
# Old keys still accepted for signatures during a rotation (docs/operations.md "Threat model").
SECRET_KEY_FALLBACKS = env_list("SECRET_KEY_FALLBACKS", "")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    # People's API tokens, stored hashed with an expiry (experiments/auth.py, docs/operations.md).
    "knox",
    # Login throttling and lockout (docs/operations.md "Logins").
    "axes",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    # The apps, bottom layer first (docs/architecture.md "Layers"; checked by import-linter).
    "core",
    "experiments",
    "flags",
    "assignments",
    "notifications",
    "analysis",
    "releases",
    # The project itself, on top: its management commands (run_all, seed_demo) use every app.
    "config",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Outside session and CSRF middleware, so it sees (and secures) the cookies they set.
    "config.middleware.SecurityHeadersMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "config.middleware.DatabaseUnavailableMiddleware",
    # A NUL character in a query or path parameter: a 400 naming it, not a database error.
    "config.middleware.NulCharacterMiddleware",
    # Last, as django-axes asks: turns a locked-out login into a 429 page (config/lockout.py).
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
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

_default_db = f"sqlite:///{VAR_DIR / 'abacus.sqlite3'}"
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", _default_db), conn_max_age=60, conn_health_checks=True
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Several processes (web, worker, beat) share the file: wait for locks instead of failing,
    # and use WAL so readers never block the writer.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    # Tests use a file, not memory, so that the end-to-end tests' subprocesses share it.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test_abacus.sqlite3")}
# A PostgreSQL streaming replica of the primary for analysis reads (the aggregation, exports):
# core/replica.py decides when it may serve them, config/routers.py routes the ORM's reads.
if os.environ.get("DATABASE_REPLICA_URL"):
    DATABASES["replica"] = dj_database_url.parse(
        os.environ["DATABASE_REPLICA_URL"], conn_max_age=60, conn_health_checks=True
    )
    if {DATABASES["default"]["ENGINE"], DATABASES["replica"]["ENGINE"]} != {
        "django.db.backends.postgresql"
    }:
        raise ImproperlyConfigured(
            "DATABASE_REPLICA_URL needs PostgreSQL: DATABASE_URL and DATABASE_REPLICA_URL must "
            "both be postgres:// URLs, the second a streaming replica of the first."
        )
    # Tests read the test database through it, never a test copy of the replica.
    DATABASES["replica"]["TEST"] = {"MIRROR": "default"}
DATABASE_ROUTERS = ["config.routers.ReplicaRouter"]
# How long an analysis or export waits for the replica to replay what the primary had committed
# when it began, before reading the primary instead (core/replica.py).
ABACUS_REPLICA_MAX_WAIT_SECONDS = float(os.environ.get("ABACUS_REPLICA_MAX_WAIT_SECONDS", 10))
if ABACUS_REPLICA_MAX_WAIT_SECONDS < 0:
    raise ImproperlyConfigured("ABACUS_REPLICA_MAX_WAIT_SECONDS must be zero or more.")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Every password abacus sets goes through these: member invites, the demo seed, createsuperuser,
# changepassword and the admin.
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 10},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# django-axes checks every password login (the login page, the admin, any authenticate() call)
# before the model backend does: ABACUS_LOGIN_FAILURE_LIMIT failures for one username, or from
# one client address, lock that username or address out for ABACUS_LOGIN_LOCKOUT_MINUTES.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = int(os.environ.get("ABACUS_LOGIN_FAILURE_LIMIT", 5))
AXES_COOLOFF_TIME = timedelta(minutes=float(os.environ.get("ABACUS_LOGIN_LOCKOUT_MINUTES", 15)))
# Each list item is counted on its own: by account, and by client address.
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "config.lockout.lockout_response"
# The client address (the login throttle, the browser endpoint's per-address limit) is
# REMOTE_ADDR. Behind a proxy set ABACUS_PROXY_COUNT to the number of proxies that append to
# X-Forwarded-For, so every client is not one address; X-Forwarded-For is ignored otherwise.
ABACUS_PROXY_COUNT = int(os.environ.get("ABACUS_PROXY_COUNT", 0))
AXES_CLIENT_IP_CALLABLE = "core.client_address.client_ip"
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "static"]
WHITENOISE_USE_FINDERS = True

# A request body may hold a batch of 10,000 events.
DATA_UPLOAD_MAX_MEMORY_SIZE = int(os.environ.get("ABACUS_MAX_BODY_BYTES", 10 * 1024 * 1024))
# The largest |value| of a metric event ingestion accepts. Bounded so that the aggregation's
# float8 sums (sum, sum of squares, cross products) cannot overflow: docs/operations.md
# "Bounds on event values".
ABACUS_MAX_EVENT_VALUE = float(os.environ.get("ABACUS_MAX_EVENT_VALUE", 1e12))

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "experiments.auth.UserTokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "config.api.exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    # Counts only requests authenticated by an API key (see experiments/auth.py).
    "DEFAULT_THROTTLE_CLASSES": ["experiments.auth.ApiKeyRateThrottle"],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "abacus API",
    "DESCRIPTION": "Experiments, assignment, event ingestion and results.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # Operation ids and tags without the shared /api/v1 prefix (the SDK features path outside
    # it would otherwise shorten the common prefix and rename every operation).
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    # Swagger UI from drf-spectacular-sidecar (served by the app, no CDN): the CSP holds.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "SWAGGER_UI_SETTINGS": {"validatorUrl": None},
    # Two choice sets are both called "role" (members, experiment metrics).
    "ENUM_NAME_OVERRIDES": {
        "MemberRoleEnum": "experiments.models.Role",
        "MetricRoleEnum": "experiments.models.MetricRole",
    },
}

# People's API tokens (django-rest-knox): only a SHA-512 digest is stored; the token is shown
# once, when it is made (`manage.py drf_create_token <user>`). `Authorization: Token <key>`.
REST_KNOX = {
    "TOKEN_TTL": timedelta(days=int(os.environ.get("ABACUS_TOKEN_TTL_DAYS", 90))),
    "AUTH_HEADER_PREFIX": "Token",
}

# The demo (`make run`: a `demo` login, project and simulated traffic) belongs to the embedded
# default only, or to an install that asks for it with ABACUS_DEMO=1.
ABACUS_DEMO = env_bool("ABACUS_DEMO", "DATABASE_URL" not in os.environ)

# Celery: the embedded default needs no server (filesystem transport under var/celery).
CELERY_BROKER_DIR = VAR_DIR / "celery"
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "filesystem://")
CELERY_BROKER_TRANSPORT_OPTIONS: dict = {}
if CELERY_BROKER_URL.startswith("filesystem://"):
    for sub in ("out", "processed", "control"):
        (CELERY_BROKER_DIR / sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(CELERY_BROKER_DIR / "out"),
        "data_folder_out": str(CELERY_BROKER_DIR / "out"),
        "processed_folder": str(CELERY_BROKER_DIR / "processed"),
        "control_folder": str(CELERY_BROKER_DIR / "control"),
        "store_processed": False,
    }
if os.environ.get("ABACUS_BROKER_VISIBILITY_TIMEOUT"):
    # Redis/SQS: seconds before an unacknowledged task (its worker died) is delivered again.
    # Kombu's default is one hour; the worker-kill test sets a few seconds.
    CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"] = int(
        os.environ["ABACUS_BROKER_VISIBILITY_TIMEOUT"]
    )
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
# Four queues (releases, ingest, analysis, notify), every task routed by name with its priority
# (config/queues.py). ABACUS_TASK_QUEUE prefixes their names (<prefix>.analysis, ...) so that
# deployments, or tests, sharing one Redis never take each other's tasks. A worker without -Q
# consumes every declared queue.
ABACUS_TASK_QUEUE = os.environ.get("ABACUS_TASK_QUEUE", "").strip()
CELERY_TASK_DEFAULT_QUEUE = queues.default_queue(ABACUS_TASK_QUEUE)
CELERY_TASK_QUEUES = queues.declared(ABACUS_TASK_QUEUE)
CELERY_TASK_ROUTES = (queues.Router(ABACUS_TASK_QUEUE),)
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# How often beat refreshes every running experiment, in seconds.
ABACUS_ANALYSIS_INTERVAL = int(os.environ.get("ABACUS_ANALYSIS_INTERVAL", 300))
# Seconds of data between two computations of an experiment's daily and novelty views by the
# analysis run (analysis/time_views.py); 0: with every snapshot.
ABACUS_TIME_VIEWS_INTERVAL = int(os.environ.get("ABACUS_TIME_VIEWS_INTERVAL", 3600))
# Seconds between the scheduled comparisons of each holdout (analysis.schedule_holdouts).
ABACUS_HOLDOUT_INTERVAL = int(os.environ.get("ABACUS_HOLDOUT_INTERVAL", 3600))
# Guarded releases (docs/releases.md): the beat's tick looks for due release analyses this
# often; a release's own cadence (analysis_interval_seconds) is at least the minimum below.
ABACUS_RELEASE_TICK_SECONDS = float(os.environ.get("ABACUS_RELEASE_TICK_SECONDS", 10))
ABACUS_RELEASE_MIN_INTERVAL_SECONDS = int(os.environ.get("ABACUS_RELEASE_MIN_INTERVAL_SECONDS", 60))
if ABACUS_RELEASE_TICK_SECONDS <= 0 or ABACUS_RELEASE_MIN_INTERVAL_SECONDS < 1:
    raise ImproperlyConfigured(
        "ABACUS_RELEASE_TICK_SECONDS must be positive and ABACUS_RELEASE_MIN_INTERVAL_SECONDS at "
        "least 1."
    )
# PostgreSQL only: the analysis's aggregation runs with work_mem raised to this (e.g. 64MB, 1GB)
# and a statement timeout in milliseconds, kept below the analysis task's soft time limit (1500
# s) so a slow statement fails with a reason instead of the task being killed
# (analysis/services.py).
ABACUS_ANALYSIS_WORK_MEM = os.environ.get("ABACUS_ANALYSIS_WORK_MEM", "256MB").strip()
if not re.fullmatch(r"[0-9]+ ?(kB|MB|GB|TB)?", ABACUS_ANALYSIS_WORK_MEM):
    raise ImproperlyConfigured(
        f"ABACUS_ANALYSIS_WORK_MEM={ABACUS_ANALYSIS_WORK_MEM!r}: use a PostgreSQL memory size "
        "such as 256MB or 1GB."
    )
ABACUS_ANALYSIS_STATEMENT_TIMEOUT_MS = int(
    os.environ.get("ABACUS_ANALYSIS_STATEMENT_TIMEOUT_MS", 1_400_000)
)
if ABACUS_ANALYSIS_STATEMENT_TIMEOUT_MS <= 0:
    raise ImproperlyConfigured("ABACUS_ANALYSIS_STATEMENT_TIMEOUT_MS must be a positive number.")
# Live snapshots read per-unit aggregates stored and brought up to date from the events added
# since the last one (analysis/incremental.py); off: every snapshot reads all the events. On
# PostgreSQL a snapshot waits up to ABACUS_AGGREGATES_WAIT_SECONDS for ingestion transactions in
# progress to commit (analysis/watermarks.py); events still uncommitted then are read separately.
ABACUS_INCREMENTAL_AGGREGATES = env_bool("ABACUS_INCREMENTAL_AGGREGATES", True)
ABACUS_AGGREGATES_WAIT_SECONDS = float(os.environ.get("ABACUS_AGGREGATES_WAIT_SECONDS", 2))
# PostgreSQL: a live snapshot adds a large round of new events to the stored rows on this many
# database connections at once, one shard of the units each (analysis/incremental_shards.py):
# lower latency for the same work; 1 adds them on the task's connection alone.
ABACUS_INCREMENTAL_CONNECTIONS = int(os.environ.get("ABACUS_INCREMENTAL_CONNECTIONS", 2))
if not 1 <= ABACUS_INCREMENTAL_CONNECTIONS <= 16:
    raise ImproperlyConfigured("ABACUS_INCREMENTAL_CONNECTIONS must be between 1 and 16.")
# ... when the round has at least this many new event ids (fewer: one connection is faster).
ABACUS_INCREMENTAL_PARALLEL_FROM = int(os.environ.get("ABACUS_INCREMENTAL_PARALLEL_FROM", 10_000))
if ABACUS_INCREMENTAL_PARALLEL_FROM < 1:
    raise ImproperlyConfigured("ABACUS_INCREMENTAL_PARALLEL_FROM must be at least 1.")
# A dimension breakdown is computed when a person asks for it (results page, API, export): its
# statements stop after this many milliseconds (PostgreSQL), so a request never waits longer.
ABACUS_BREAKDOWN_STATEMENT_TIMEOUT_MS = int(
    os.environ.get("ABACUS_BREAKDOWN_STATEMENT_TIMEOUT_MS", 60_000)
)
if ABACUS_BREAKDOWN_STATEMENT_TIMEOUT_MS <= 0:
    raise ImproperlyConfigured("ABACUS_BREAKDOWN_STATEMENT_TIMEOUT_MS must be a positive number.")

# Webhooks go only to public addresses; these hosts, addresses or CIDRs are allowed besides
# (deliberate internal receivers). docs/operations.md "Webhooks".
ABACUS_WEBHOOK_ALLOWED_HOSTS = env_list("ABACUS_WEBHOOK_ALLOWED_HOSTS", "")

# Notifications (docs/operations.md "Notifications"): links in messages are made absolute with
# ABACUS_PUBLIC_URL; email goes to the console unless EMAIL_HOST names an SMTP server.
ABACUS_PUBLIC_URL = os.environ.get("ABACUS_PUBLIC_URL", "http://localhost:8000").rstrip("/")
if os.environ.get("EMAIL_HOST"):
    EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    EMAIL_HOST = os.environ["EMAIL_HOST"]
    EMAIL_PORT = int(os.environ.get("EMAIL_PORT", 25))
    EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
    EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
    EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
    EMAIL_TIMEOUT = int(os.environ.get("EMAIL_TIMEOUT", 10))
else:
    EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
# Any Django email backend by its dotted path overrides the choice above; the end-to-end tests
# use the file-based one, which writes each message to a file under EMAIL_FILE_PATH.
EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND", EMAIL_BACKEND)
EMAIL_FILE_PATH = os.environ.get("EMAIL_FILE_PATH") or None
DEFAULT_FROM_EMAIL = os.environ.get("ABACUS_EMAIL_FROM", "abacus@localhost")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
# Who may create projects (and so become their admin): "staff" (is_staff or superuser, the
# default) or "anyone" signed in. docs/operations.md "Threat model".
ABACUS_PROJECT_CREATION = os.environ.get("ABACUS_PROJECT_CREATION", "staff").strip().lower()
if ABACUS_PROJECT_CREATION not in ("anyone", "staff"):
    raise ImproperlyConfigured(
        f"ABACUS_PROJECT_CREATION={ABACUS_PROJECT_CREATION!r}: use 'anyone' or 'staff'."
    )

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.server": {"level": "WARNING"}},
}

# --- Security (docs/operations.md "Security settings") ------------------------------------
SESSION_COOKIE_HTTPONLY = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Cookies are always marked Secure on HTTPS requests (config.middleware); SECURE_COOKIES=true
# marks them Secure everywhere, which production sets (and `check --deploy` wants).
SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", False)
CSRF_COOKIE_SECURE = env_bool("SECURE_COOKIES", False)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
# Load balancers probe health over plain HTTP.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
# Browsers honour HSTS only on HTTPS responses, so it is on whenever DEBUG is off.
SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", 0 if DEBUG else 31_536_000))
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
if env_bool("SECURE_PROXY_SSL_HEADER", False):
    # Only behind a proxy that sets (and strips client-sent) X-Forwarded-Proto.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Sent on every response by config.middleware.SecurityHeadersMiddleware. The dashboard loads
# scripts and styles only from /static/ (no inline code); charts may use data: images.
ABACUS_CONTENT_SECURITY_POLICY = os.environ.get(
    "ABACUS_CONTENT_SECURITY_POLICY",
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; frame-ancestors 'none'; "
    "base-uri 'self'; form-action 'self'",
)
# Swagger UI (the API docs page) keeps one inline <style> and sets style attributes: its page
# alone may use inline styles (never inline scripts: its init script is a separate file).
ABACUS_CSP_OVERRIDES = {
    "/api/v1/docs/": ABACUS_CONTENT_SECURITY_POLICY.replace(
        "style-src 'self'", "style-src 'self' 'unsafe-inline'"
    ),
}

# Requests per minute per API key (all endpoints a key may call); 0 turns the limit off.
# Generous by default so benchmarks and load tests measure the app, not the limiter.
ABACUS_RATE_LIMIT_PER_MINUTE = int(os.environ.get("ABACUS_RATE_LIMIT_PER_MINUTE", 6000))
# Events from browsers (POST /api/v1/events/beacon with an environment's public browser key,
# docs/operations.md "Events from browsers"): requests per minute per browser key (every
# visitor of the sites that use it), and per client address (an IPv6 client's /64); 0 turns
# a limit off.
ABACUS_BROWSER_RATE_LIMIT_PER_MINUTE = int(
    os.environ.get("ABACUS_BROWSER_RATE_LIMIT_PER_MINUTE", 30000)
)
ABACUS_BROWSER_ADDRESS_RATE_LIMIT_PER_MINUTE = int(
    os.environ.get("ABACUS_BROWSER_ADDRESS_RATE_LIMIT_PER_MINUTE", 120)
)
# Flag hygiene: a temporary flag serving one variation to everyone for this many days is stale
# (flags.selectors.stale_flags).
ABACUS_STALE_FLAG_DAYS = int(os.environ.get("ABACUS_STALE_FLAG_DAYS", 14))
# POST /evaluate's counts wait in each process's memory and one thread per process writes them
# this often (assignments/services/usage_buffer.py): "last evaluated" is at most this late.
ABACUS_USAGE_FLUSH_SECONDS = float(os.environ.get("ABACUS_USAGE_FLUSH_SECONDS", 5))
if ABACUS_USAGE_FLUSH_SECONDS <= 0:
    raise ImproperlyConfigured("ABACUS_USAGE_FLUSH_SECONDS must be a positive number.")

# SDK streaming (GET /sub/<client key>, assignments/streaming.py). Each open stream holds one
# of a web process's gunicorn threads, so the cap stays below the threads (config/processes.py):
# past it a stream is refused with 503 and Retry-After. Streams end after the maximum lifetime
# (SDKs reconnect at once) so workers recycle; heartbeats keep proxies from closing idle ones;
# one watcher thread per process polls the subscribed environments' versions this often.
ABACUS_STREAMS_PER_PROCESS = int(os.environ.get("ABACUS_STREAMS_PER_PROCESS", 24))
ABACUS_STREAM_MAX_SECONDS = float(os.environ.get("ABACUS_STREAM_MAX_SECONDS", 600))
ABACUS_STREAM_HEARTBEAT_SECONDS = float(os.environ.get("ABACUS_STREAM_HEARTBEAT_SECONDS", 20))
ABACUS_STREAM_POLL_SECONDS = float(os.environ.get("ABACUS_STREAM_POLL_SECONDS", 0.2))
if ABACUS_STREAM_POLL_SECONDS <= 0 or ABACUS_STREAM_HEARTBEAT_SECONDS <= 0:
    raise ImproperlyConfigured(
        "ABACUS_STREAM_POLL_SECONDS and ABACUS_STREAM_HEARTBEAT_SECONDS must be positive."
    )


# The serving paths' caches (API keys, specs, flags, payloads; core/cache.py) are checked
# against the database when the shared cache's serving generation changes (every change does
# that at once) and at least this often (bounding staleness when a change could not reach the
# shared cache, or a row changed without a model save).
ABACUS_SERVING_RECHECK_SECONDS = float(os.environ.get("ABACUS_SERVING_RECHECK_SECONDS", 5))
if ABACUS_SERVING_RECHECK_SECONDS < 0:
    raise ImproperlyConfigured("ABACUS_SERVING_RECHECK_SECONDS must be zero or more.")
# On Redis, each web process subscribes to the serving generation and sends its rate counts in
# batches, so a returning unit's request makes no cache round trip (core/serving_feed.py). Off
# for a Redis that has no publish/subscribe (some proxies): one round trip per request.
ABACUS_SERVING_FEED = env_bool("ABACUS_SERVING_FEED", True)


def _cache_config() -> dict:
    """The shared cache: rate limits and the serving generation, across processes.

    Redis when one is configured (ABACUS_CACHE_URL, REDIS_URL, or a redis:// broker): exact and
    shared by every web machine. Otherwise a file cache under var/: shared by the processes of
    one machine (the embedded default; rate counts are append-only files beside it, exact:
    core/cache.py); ``file:///path`` puts it elsewhere. ``locmem://``
    is one process's memory: for tests and single-process runs only.
    """
    url = os.environ.get("ABACUS_CACHE_URL") or os.environ.get("REDIS_URL") or ""
    if not url and CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
        url = CELERY_BROKER_URL
    if url.startswith(("redis://", "rediss://")):
        return {
            # Django's, keeping its redis-py clients (core/redis_cache.py).
            "BACKEND": "core.redis_cache.RedisCache",
            "LOCATION": url,
            "KEY_PREFIX": "abacus",
            # A dead cache must not stall requests: the limiter fails open (experiments/auth.py).
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        }
    if url.startswith("locmem://"):
        return {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    if url.startswith("file://"):  # a file cache shared with other processes (tests' servers)
        return {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": url.removeprefix("file://"),
        }
    return {
        "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
        "LOCATION": str(VAR_DIR / "cache"),
    }


CACHES = {"default": _cache_config()}
