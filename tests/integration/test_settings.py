"""Settings: migrations are current, the production configuration passes `check --deploy`, and
bad environment values stop start-up."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.hashers import get_hasher
from django.core.management import call_command

ROOT = Path(__file__).resolve().parents[2]


def _manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run manage.py in a fresh process with exactly the Django variables given (plus PATH etc.)."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SECURE_", "SESSION_", "CSRF_", "DJANGO_"))
        and k not in {"DEBUG", "SECRET_KEY", "ALLOWED_HOSTS", "DATABASE_URL", "REDIS_URL", "LOG_LEVEL"}
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_migrations_are_current(db: None) -> None:
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)


def test_argon2_is_the_password_hasher() -> None:
    assert settings.PASSWORD_HASHERS[0] == "django.contrib.auth.hashers.Argon2PasswordHasher"
    assert get_hasher().algorithm == "argon2"


def test_check_deploy_is_clean_with_production_settings() -> None:
    result = _manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        SECRET_KEY=secrets.token_urlsafe(64),
        ALLOWED_HOSTS="steerlab.example.org",
        DATABASE_URL="sqlite:///:memory:",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_production_requires_a_secret_key() -> None:
    result = _manage("check", ALLOWED_HOSTS="steerlab.example.org", DATABASE_URL="sqlite:///:memory:")
    assert result.returncode != 0
    assert "ImproperlyConfigured: SECRET_KEY must be set" in result.stderr


def test_debug_has_a_development_key_and_no_https_redirect() -> None:
    result = _manage(
        "shell",
        "--no-imports",
        "-c",
        "from django.conf import settings as s; print(s.DEBUG, s.SECURE_SSL_REDIRECT, s.SESSION_COOKIE_SECURE, s.SECRET_KEY.startswith('django-insecure'))",
        DEBUG="true",
        DATABASE_URL="sqlite:///:memory:",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True False False True"


def test_a_sqlite_file_is_opened_for_concurrent_writers(tmp_path: Path) -> None:
    """WAL, immediate transactions and a busy timeout (test_concurrent_users.py shows why)."""
    script = (
        "from django.db import connection as c; c.ensure_connection(); cur = c.cursor(); "
        "print(cur.execute('PRAGMA journal_mode').fetchone()[0], cur.execute('PRAGMA busy_timeout').fetchone()[0], "
        "c.settings_dict['OPTIONS']['transaction_mode'])"
    )
    result = _manage(
        "shell",
        "--no-imports",
        "-c",
        script,
        DEBUG="true",
        DATABASE_URL=f"sqlite:///{tmp_path / 'x.sqlite3'}",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "wal 30000 IMMEDIATE"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("DEBUG", "maybe", "DEBUG must be a boolean"),
        ("SECURE_SSL_REDIRECT", "sometimes", "SECURE_SSL_REDIRECT must be a boolean"),
        ("SECURE_HSTS_SECONDS", "a year", "SECURE_HSTS_SECONDS must be an integer"),
        ("LOGIN_FAILURE_LIMIT", "0", "LOGIN_FAILURE_LIMIT must be >= 1"),
        ("DATABASE_URL", "mongodb://localhost/steerlab", "DATABASE_URL is not a usable database URL"),
        ("LOG_LEVEL", "LOUD", "LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL"),
    ],
)
def test_bad_environment_values_stop_start_up(name: str, value: str, message: str) -> None:
    env = {"SECRET_KEY": secrets.token_urlsafe(64), "ALLOWED_HOSTS": "steerlab.example.org"}
    env.setdefault("DATABASE_URL", "sqlite:///:memory:")
    env[name] = value
    result = _manage("check", **env)
    assert result.returncode != 0
    assert f"ImproperlyConfigured: {message}" in result.stderr
