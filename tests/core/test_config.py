"""Settings: every error names its key."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.config import load_settings, parse_settings
from core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_example_config_loads_with_every_section() -> None:
    settings = load_settings(ROOT / "config.example.toml", env={})
    assert settings.database.url.startswith("sqlite:///")
    assert settings.intake.max_attachment_bytes == 10 * 1024 * 1024


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ({"servce": {}}, "servce"),
        ({"service": {"prot": 1}}, "service.prot"),
        ({"service": {"port": "80"}}, "service.port"),
        ({"service": {"port": 70000}}, "service.port"),
        ({"service": {"event_loop": "trio"}}, "service.event_loop"),
        ({"database": {"durable": "yes"}}, "database.durable"),
        ({"database": {"url": "mysql://x"}}, "database.url"),
        ({"outbox": {"max_attempts": 0}}, "outbox.max_attempts"),
        ({"inboxes": [{"name": "a"}, {"name": "a"}]}, "inboxes"),
        ({"inboxes": [{"team": "x"}]}, "inboxes[0]"),
        ({"inboxes": [{"name": "a", "colour": "red"}]}, "inboxes[0].colour"),
    ],
)
def test_bad_settings_name_the_key(table: dict, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_settings(table)
    assert str(err.value).startswith(key)


def test_database_url_from_environment(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[database]\nurl = "sqlite:///a.db"\n')
    settings = load_settings(path, env={"HELPLINE_DATABASE_URL": "postgresql://h/db"})
    assert settings.database.url == "postgresql://h/db"


def test_invalid_toml_and_missing_file_are_reported(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[service\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_settings(bad, env={})
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.toml", env={})
