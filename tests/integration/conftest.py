"""The integration tier: Django against a real database, and the people every test uses.

Database rule (decided in ``pytest_configure``, before Django reads its settings):

* ``CI=true``: PostgreSQL is required — ``DATABASE_URL`` if set, else
  ``postgres://postgres@127.0.0.1:5432/postgres``. If it is not PostgreSQL or cannot be reached,
  the run stops with an error (never a skip): CI must prove the PostgreSQL behaviour.
* Otherwise: ``DATABASE_URL`` if set; else PostgreSQL at 127.0.0.1:5432 when it answers; else
  SQLite, and the terminal summary says that the tier ran on SQLite.

Django's test runner creates (and drops) its own ``test_<name>`` database next to the one named.

People: ``alice`` owns team ``team_t``, ``bob`` is a member of it, ``carol`` is in no team.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from webapp.accounts.models import Team, User

DEFAULT_POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/postgres"
PASSWORD = "correct horse battery staple"

_database_note = pytest.StashKey[str]()


def _postgres_error(url: str) -> str | None:
    """None when PostgreSQL at ``url`` accepts a connection, else why not."""
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=3) as connection:
            connection.execute("SELECT 1")
    except psycopg.Error as exc:
        return str(exc).strip() or type(exc).__name__
    return None


def _is_postgres(url: str) -> bool:
    return url.split(":", 1)[0] in {"postgres", "postgresql", "pgsql"}


def _choose_database_url() -> tuple[str, str]:
    """The DATABASE_URL for this run and a line saying which database it is."""
    configured = os.environ.get("DATABASE_URL", "").strip()
    if os.environ.get("CI", "").strip().lower() in {"true", "1"}:
        url = configured or DEFAULT_POSTGRES_URL
        if not _is_postgres(url):
            raise pytest.UsageError(
                f"CI=true: the integration tier must run on PostgreSQL, but DATABASE_URL is {url!r}."
            )
        error = _postgres_error(url)
        if error is not None:
            raise pytest.UsageError(
                f"CI=true: the integration tier requires PostgreSQL and cannot reach it at {url!r}: {error}"
            )
        return url, "PostgreSQL (required by CI=true)"
    if configured:
        kind = (
            "PostgreSQL" if _is_postgres(configured) else "SQLite" if configured.startswith("sqlite") else "?"
        )
        return configured, f"{kind} (from DATABASE_URL)"
    if _postgres_error(DEFAULT_POSTGRES_URL) is None:
        return DEFAULT_POSTGRES_URL, "PostgreSQL (found at 127.0.0.1:5432)"
    return "sqlite:///:memory:", "SQLite (no PostgreSQL at 127.0.0.1:5432)"


def pytest_configure(config: pytest.Config) -> None:
    url, note = _choose_database_url()
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    # Production settings (DEBUG off), with a test key and no HTTPS redirect for the test client.
    os.environ.setdefault("SECRET_KEY", "integration-tests-only-" + "k" * 48)
    os.environ.setdefault("SECURE_SSL_REDIRECT", "false")
    config.stash[_database_note] = note

    import django

    django.setup()


def pytest_report_header(config: pytest.Config) -> str:
    return f"integration database: {config.stash.get(_database_note, '?')}"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    note = config.stash.get(_database_note, "")
    if note.startswith("SQLite"):
        terminalreporter.write_sep(
            "!", f"the integration tier ran on {note}; CI runs it on PostgreSQL", yellow=True, bold=True
        )


# --------------------------------------------------------------------------------------------
# People and teams
# --------------------------------------------------------------------------------------------
@pytest.fixture
def make_user(db: None) -> Callable[..., User]:
    """Create a user with the shared test password (through the sign-up service)."""
    from webapp.accounts import services

    def make(username: str, *, password: str = PASSWORD) -> User:
        return services.sign_up(username=username, password=password, email=f"{username}@example.org")

    return make


@pytest.fixture
def make_team(db: None) -> Callable[..., Team]:
    """Create a team owned by ``owner``; ``members`` maps further users to their roles."""
    from webapp.accounts import services
    from webapp.accounts.models import Membership

    def make(owner: User, name: str, members: dict[User, str] | None = None) -> Team:
        team = services.create_team(owner, name=name)
        for user, role in (members or {}).items():
            Membership.objects.create(team=team, user=user, role=role)
        return team

    return make


@pytest.fixture
def alice(make_user: Callable[..., User]) -> User:
    return make_user("alice")


@pytest.fixture
def bob(make_user: Callable[..., User]) -> User:
    return make_user("bob")


@pytest.fixture
def carol(make_user: Callable[..., User]) -> User:
    return make_user("carol")


@pytest.fixture
def team_t(make_team: Callable[..., Team], alice: User, bob: User) -> Team:
    """Team T: alice is its owner, bob a member."""
    return make_team(alice, "T", {bob: "member"})
