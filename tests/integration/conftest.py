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
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest
from support.live import ci

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
    if ci():
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
    # Read when webapp.asgi builds its Origin validator (at import, before pytest-django adds
    # "testserver" to ALLOWED_HOSTS): the websocket tests connect from these origins.
    os.environ.setdefault("ALLOWED_HOSTS", "testserver,localhost,127.0.0.1")
    # A decode step takes at least this long, so that tests can act during a generation.
    os.environ.setdefault("STEERLAB_ENGINE_MIN_STEP_MS", "25")
    os.environ.setdefault("STEERLAB_DETACH_GRACE_SECONDS", "1")
    # Threads of the embedded dispatcher and of the consumers must not hold connections that
    # would keep the test database from being dropped.
    os.environ.setdefault("DATABASE_CONN_MAX_AGE", "0")
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


# --------------------------------------------------------------------------------------------
# The playground: the tiny deployment, the example recipe, websockets
# --------------------------------------------------------------------------------------------
@pytest.fixture
def tiny_deployment(db: None) -> Any:
    from interventions.tiny import build_tiny
    from webapp.library.services import register_deployment

    return register_deployment("tiny", str(build_tiny()))


@pytest.fixture
def example_version(alice: User, tiny_deployment: Any) -> Any:
    """alice's example recipe (steer + probe + logit lens) on the tiny model."""
    from webapp.playground.examples import create_example_recipe

    return create_example_recipe(alice, tiny_deployment)


@pytest.fixture
def fresh_channel_layers() -> Any:
    """Forget channel layers (and the embedded host) between tests: each test has its own loop."""
    from channels.layers import channel_layers

    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


ORIGIN = b"http://testserver"


@pytest.fixture
def ws_headers(db: None) -> Callable[..., list[tuple[bytes, bytes]]]:
    """Websocket headers of a logged-in ``user`` (a real session), from an allowed Origin."""
    from django.conf import settings
    from django.test import Client

    def headers(user: User | None, origin: bytes = ORIGIN) -> list[tuple[bytes, bytes]]:
        out = [(b"origin", origin)]
        if user is not None:
            client = Client()
            client.force_login(user)
            cookie = client.cookies[settings.SESSION_COOKIE_NAME].value
            out.append((b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode()))
        return out

    return headers


# --------------------------------------------------------------------------------------------
# The two stacks live chat runs on: embedded (in-process dispatch, in-memory channel layer) and
# deployment (a real Celery worker process on RabbitMQ, the Redis channel layer).
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Stack:
    name: str
    queue: str
    worker_env: dict[str, str]


def _test_database_url() -> str:
    from django.db import connection

    db = connection.settings_dict
    if connection.vendor != "postgresql":
        message = "a Celery worker process needs the test database on PostgreSQL (this run uses SQLite)"
        if ci():
            pytest.fail(message)
        pytest.skip(message)
    user = db.get("USER") or "postgres"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return (
        f"postgres://{user}{password}@{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"
    )


def _new_worker_stack(django_db_blocker: Any) -> Stack:
    """Environment for worker processes on a queue and channel prefix of their own."""
    from support.live import RABBITMQ_URL, REDIS_URL, missing_servers

    missing = missing_servers()
    if missing:
        message = f"{' and '.join(missing)} not reachable on 127.0.0.1"
        if ci():
            pytest.fail(f"CI=true requires the real servers: {message}")
        pytest.skip(message)
    with django_db_blocker.unblock():
        database_url = _test_database_url()
    token = uuid.uuid4().hex[:10]
    env = {
        "DATABASE_URL": database_url,
        "CELERY_BROKER_URL": RABBITMQ_URL,
        "REDIS_URL": REDIS_URL,
        "CHANNEL_PREFIX": f"test{token}",
        "DATABASE_CONN_MAX_AGE": "0",
    }
    return Stack("celery", f"test.{token}", env)


@pytest.fixture(scope="session")
def worker_stack(
    django_db_setup: None, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory
) -> Any:
    """A real Celery worker process (threads pool) on RabbitMQ + Redis, for the whole session."""
    from support.live import start_worker, stop_worker, wait_ready

    stack = _new_worker_stack(django_db_blocker)
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    process = start_worker(stack.worker_env, stack.queue, "w1-" + stack.queue, log)
    try:
        wait_ready(process, log)
        yield stack
    finally:
        stop_worker(process)
        _delete_queue(stack.queue)


def _delete_queue(name: str) -> None:
    """Remove a test's queue from RabbitMQ (Celery declares queues durable: they would stay)."""
    from workers.celery_app import app

    with app.connection_for_write(app.conf.broker_url or None) as connection:
        connection.default_channel.queue_delete(name)


@pytest.fixture
def embedded(settings: Any, fresh_channel_layers: None) -> None:
    """The embedded stack: no broker (runs in this process's threads), the in-memory channel layer."""
    settings.CELERY_BROKER_URL = ""
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


@pytest.fixture(params=["embedded", "celery"])
def stack(request: pytest.FixtureRequest, settings: Any, fresh_channel_layers: None) -> Stack:
    """Each live-chat test runs on both stacks."""
    if request.param == "embedded":
        request.getfixturevalue("embedded")
        return Stack("embedded", "model.tiny", {})
    worker: Stack = request.getfixturevalue("worker_stack")
    use_worker_stack(settings, worker)
    return worker


def use_worker_stack(settings: Any, worker: Stack) -> None:
    """Point this process (the web side) at the worker's broker and channel layer."""
    from channels.layers import channel_layers

    from workers.celery_app import app

    settings.CELERY_BROKER_URL = worker.worker_env["CELERY_BROKER_URL"]
    from webapp.settings import redis_channel_layer

    settings.CHANNEL_LAYERS = {
        "default": redis_channel_layer(worker.worker_env["REDIS_URL"], worker.worker_env["CHANNEL_PREFIX"])
    }
    channel_layers.backends.clear()
    app.conf.broker_url = worker.worker_env["CELERY_BROKER_URL"]
    # The workers' engine status reaches the web side through the shared cache.
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": worker.worker_env["REDIS_URL"],
        }
    }


@pytest.fixture
def own_worker_stack(django_db_blocker: Any, settings: Any, fresh_channel_layers: None) -> Any:
    """For tests that start (and kill) their own worker processes: a fresh queue, this process set up."""
    stack = _new_worker_stack(django_db_blocker)
    use_worker_stack(settings, stack)
    yield stack
    _delete_queue(stack.queue)


@pytest.fixture
def stack_deployment(stack: Stack, db: None) -> Any:
    """The tiny deployment, served on the stack's queue."""
    from interventions.tiny import build_tiny
    from webapp.library.services import register_deployment

    return register_deployment("tiny", str(build_tiny()), queue_name=stack.queue)


@pytest.fixture
def vllm_deployment(db: None, embedded: None, vllm_core: Any) -> Iterator[Any]:
    """A deployment ``tiny-vllm`` (engine vllm) served on the embedded stack by the session's vLLM engine."""
    from interventions.tiny import build_tiny
    from webapp.library.services import register_deployment
    from webapp.playground import hosting
    from workers.engines.loading import HostedModel
    from workers.engines.threaded import ThreadedEngine

    deployment = register_deployment("tiny-vllm", str(build_tiny()), engine="vllm")
    engine = ThreadedEngine(vllm_core, name="vllm-engine")
    # Steps that take at least 25 ms, so an adjustment lands during the generation.
    step_time, vllm_core.min_step_time = vllm_core.min_step_time, 0.025
    hosting._models["tiny-vllm"] = HostedModel("tiny-vllm", engine, vllm_core.tokenizer)
    yield deployment
    hosting._models.pop("tiny-vllm", None)
    engine.shutdown(close_core=False)  # the session's engine serves the other tests too
    vllm_core.min_step_time = step_time
