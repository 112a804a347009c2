"""Settings for the evaluation platform, read from the environment.

Defaults make a fresh checkout work with SQLite and the django-q2 ORM broker. Production sets
``DEBUG=0``, ``SECRET_KEY`` (or ``SECRET_KEY_FILE``), ``ALLOWED_HOSTS``, ``DATABASE_URL`` and
``REDIS_URL``. docs/configuration.md lists every variable.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from evalplatform.env import (
    database_from_url,
    env,
    envbool,
    envint,
    envlist,
    load_env_file,
    sqlite_database,
)
from evalplatform.variables import executions_from_environment
from executions.conf import DEFAULTS as EXECUTION_DEFAULTS
from sandbox.budget import task_queue_timeout_s

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env("VAR_DIR") or BASE_DIR / "var")
TESTING = "pytest" in sys.modules

# `make run` writes the settings it runs with to var/local.env, so that `manage.py` in the same
# checkout runs with them too. The environment wins over the file. A deployment has no such
# file (the image never copies var/), so production still needs DEBUG=0 and a real SECRET_KEY.
# The test suite ignores it: its results must not depend on whether `make run` was used here.
LOCAL_ENV_FILE = VAR_DIR / "local.env"
if not TESTING:
    load_env_file(LOCAL_ENV_FILE)

DEBUG = envbool("DEBUG", False)

# A fixed key is acceptable only where nothing is signed for real: DEBUG and the test suite.
INSECURE_SECRET_KEY = "insecure-development-key-never-use-in-production"  # noqa: S105
SECRET_KEY = env("SECRET_KEY") or ""
if not SECRET_KEY:
    if not (DEBUG or TESTING):
        raise ImproperlyConfigured(
            "SECRET_KEY (or SECRET_KEY_FILE) must be set when DEBUG is off. "
            "Generate one with: python -c 'import secrets; print(secrets.token_urlsafe(50))'"
        )
    SECRET_KEY = INSECURE_SECRET_KEY
elif not (DEBUG or TESTING) and (SECRET_KEY == INSECURE_SECRET_KEY or len(SECRET_KEY) < 32):
    raise ImproperlyConfigured(
        "SECRET_KEY is the development default or shorter than 32 characters; "
        "set a long random value when DEBUG is off."
    )

ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    # Before django_q: its ``qcluster`` command adds the recovery lane to django-q2's.
    "executions",
    "django_q",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
]

MIDDLEWARE = [
    "evalplatform.middleware.HealthCheckMiddleware",
    # /metrics, for a scraper with METRICS_TOKEN: on any host over plain HTTP, as /healthz.
    "executions.web.metrics.MetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # The platform serves its own static files (the editor included): no CDN at run time.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Innermost, so that it sees what a view raised before anything else answers it.
    "evalplatform.middleware.OutageMiddleware",
]

ROOT_URLCONF = "evalplatform.urls"
WSGI_APPLICATION = "evalplatform.wsgi.application"

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
                "executions.context_processors.execution_backend",
            ],
        },
    },
]

_database_url = env("DATABASE_URL")
if _database_url:
    DATABASES = {"default": database_from_url("DATABASE_URL", _database_url)}
else:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {"default": sqlite_database(VAR_DIR / "db.sqlite3")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A file, not memory, so that a qcluster subprocess started by a test shares the database;
    # one per test run, so that two runs on one checkout do not share it.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-db-{os.getpid()}.sqlite3")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
# Without collectstatic (development, tests) WhiteNoise serves straight from the finders,
# and the collected folder it would also serve does not exist.
WHITENOISE_USE_FINDERS = DEBUG or TESTING
if WHITENOISE_USE_FINDERS:
    warnings.filterwarnings("ignore", message="No directory at", module="whitenoise.base")

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "executions:evaluation-list"
LOGOUT_REDIRECT_URL = "login"

# Production hardening; every flag is on whenever DEBUG is off.
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if not DEBUG:
    SESSION_COOKIE_SECURE = envbool("SESSION_COOKIE_SECURE", True)
    CSRF_COOKIE_SECURE = envbool("CSRF_COOKIE_SECURE", True)
    # The test suite's live server and browser speak plain HTTP on loopback.
    SECURE_SSL_REDIRECT = envbool("SECURE_SSL_REDIRECT", not TESTING)
    SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", 31536000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = envbool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = envbool("SECURE_HSTS_PRELOAD", False)
    if not SECURE_HSTS_PRELOAD:
        # Preloading is a per-domain commitment that takes months to undo; it stays opt-in.
        SILENCED_SYSTEM_CHECKS = ["security.W021"]
    # TLS ends at the reverse proxy in front of the platform.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# Prometheus metrics at /metrics: off unless a token is set, which scrapers send as a bearer
# token. It is a credential, so it is held to the length of one.
METRICS_TOKEN = env("METRICS_TOKEN") or ""
if METRICS_TOKEN and len(METRICS_TOKEN) < 32:
    raise ImproperlyConfigured(
        "METRICS_TOKEN (or METRICS_TOKEN_FILE) must be at least 32 characters. "
        "Generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
    )

# Code execution: the EXECUTIONS namespace, read lazily through executions.conf, which holds
# every default. Only the keys (and backend options) whose variables are set are here; the
# variables are the table in evalplatform/variables.py.
EXECUTIONS: dict[str, Any] = executions_from_environment()

# django-q2: the ORM broker by default; REDIS_URL switches to Redis for scale-out.
# The timeout covers the longest possible execution (a compile step and every test case, each
# at the hard wall-time maximum); each task also carries its own, shorter timeout derived
# from its runtime.
_executions = {**EXECUTION_DEFAULTS, **EXECUTIONS}
_task_timeout = task_queue_timeout_s(
    _executions["HARD_MAX_WALL_TIME_MS"] // 1000, _executions["MAX_TEST_CASES"] + 1
)
Q_CLUSTER: dict[str, object] = {
    "name": env("Q_CLUSTER_NAME") or "evalplatform",
    "workers": envint("Q_WORKERS", 2, minimum=1),
    "timeout": _task_timeout,
    "retry": _task_timeout + 60,
    "max_attempts": 1,
    "ack_failures": True,
    # Successful tasks are not kept: each execution's own row says how it ended, and keeping
    # them costs the monitor a locked scan of every kept row per task. Failures are kept.
    "save_limit": -1,
    "catch_up": False,
    "label": "Task queue",
    # How often an idle cluster asks the ORM broker for work: the queue-to-start latency.
    # Each empty poll is one cheap query (executions.broker).
    "poll": envint("Q_POLL_MS", 10, minimum=5) / 1000,
}
REDIS_URL = env("REDIS_URL")
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"
    Q_CLUSTER["broker_class"] = "executions.broker.ORMBroker"

# The cache counts API request rates. With Redis every web process shares the counts; without
# it (make run: one process) they live in the process's memory.
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "evalplatform-cache",
            # A Redis that hangs must not hold every API request for the client's default 5 s.
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }

# The REST API (/api/v1/). Throttle rates are per user, counted in the cache above.
REST_FRAMEWORK: dict[str, Any] = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_THROTTLE_CLASSES": ["executions.api.throttling.UserThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        "user": env("API_THROTTLE_USER") or "600/min",
        "submit": env("API_THROTTLE_SUBMIT") or "120/min",
    },
    "DEFAULT_PAGINATION_CLASS": "executions.api.pagination.Pagination",
    "PAGE_SIZE": 20,
    "EXCEPTION_HANDLER": "executions.api.errors.exception_handler",
    "DEFAULT_PARSER_CLASSES": ["executions.api.parsers.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "evalplatform API",
    "DESCRIPTION": "Submit untrusted code, follow its runs, receive signed webhooks.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # The documentation page loads its assets from this platform, never from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Two fields called "status": an execution's and a runtime's self-test.
    "ENUM_NAME_OVERRIDES": {"SelfTestStatusEnum": "executions.models.SelfTestStatus"},
}

# LOG_FORMAT=json writes one JSON object per line (evalplatform/logs.py); a run of errors about
# an unreachable database or Redis is logged once per LOG_REPEAT_INTERVAL_S, with a count.
LOG_FORMAT = env("LOG_FORMAT") or "plain"
if LOG_FORMAT not in {"plain", "json"}:
    raise ImproperlyConfigured(f"LOG_FORMAT must be plain or json, got {LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        "json": {"()": "evalplatform.logs.JsonFormatter"},
    },
    "filters": {
        "outages": {
            "()": "evalplatform.logs.OutageRateLimit",
            "interval_s": envint("LOG_REPEAT_INTERVAL_S", 60, minimum=0),
        }
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["outages"],
        }
    },
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL") or "INFO"},
    "loggers": {"django": {"level": "INFO", "propagate": True}},
}
