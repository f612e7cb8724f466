"""The typed environment readers behind webapp/settings.py (no Django settings needed)."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from webapp.env import env_bool, env_int, env_list, env_str


def test_env_str() -> None:
    assert env_str("X", "fallback", environ={}) == "fallback"
    assert env_str("X", "fallback", environ={"X": "  "}) == "fallback"
    assert env_str("X", environ={"X": " value "}) == "value"
    with pytest.raises(ImproperlyConfigured, match=r"^X must be set$"):
        env_str("X", environ={})


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1", True),
        ("TRUE", True),
        ("yes", True),
        ("on", True),
        ("0", False),
        ("False", False),
        ("no", False),
        ("off", False),
    ],
)
def test_env_bool_accepts(raw: str, expected: bool) -> None:
    assert env_bool("FLAG", not expected, environ={"FLAG": raw}) is expected


def test_env_bool_default_and_bad_value() -> None:
    assert env_bool("FLAG", True, environ={}) is True
    assert env_bool("FLAG", False, environ={"FLAG": ""}) is False
    with pytest.raises(ImproperlyConfigured, match=r"FLAG must be a boolean .*got 'maybe'"):
        env_bool("FLAG", False, environ={"FLAG": "maybe"})


def test_env_int() -> None:
    assert env_int("N", 5, environ={}) == 5
    assert env_int("N", 5, environ={"N": "12"}) == 12
    assert env_int("N", 5, minimum=0, environ={"N": "0"}) == 0
    with pytest.raises(ImproperlyConfigured, match=r"N must be an integer, got '1\.5'"):
        env_int("N", 5, environ={"N": "1.5"})
    with pytest.raises(ImproperlyConfigured, match="N must be >= 1, got 0"):
        env_int("N", 5, minimum=1, environ={"N": "0"})


def test_env_list() -> None:
    assert env_list("L", environ={}) == []
    assert env_list("L", ["a"], environ={}) == ["a"]
    assert env_list("L", environ={"L": " a.example, ,b.example ,"}) == ["a.example", "b.example"]


def test_env_example_documents_every_variable_the_settings_read() -> None:
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    settings = (root / "webapp" / "settings.py").read_text()
    names = set(re.findall(r"env_(?:str|bool|int|list)\(\s*\"([A-Z_][A-Z0-9_]*)\"", settings))
    documented = set(re.findall(r"^#?\s*([A-Z_][A-Z0-9_]*)=", (root / ".env.example").read_text(), re.M))
    assert "SECRET_KEY" in names and "DATABASE_URL" in names, "the scan finds the settings' variables"
    assert names - documented == set(), f"undocumented in .env.example: {sorted(names - documented)}"
