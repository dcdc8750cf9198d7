"""[notify.matrix]: typed and validated like every table, each problem naming its key;
`reconciler check` refuses a token file others can read and a CA file with no
certificate; no section, no notifications."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from reconciler.cli import main
from reconciler.config import Config, check_files
from reconciler.errors import ConfigError
from tests.builders import agentic_config

MATRIX = {
    "homeserver": "https://matrix.example:8448",
    "room_id": "!abc:matrix.example",
    "token_file": "matrix-token",
    "approvers": ["@owner:matrix.example"],
}
REPOS = [{"name": "lab", "path": "clone"}]
SERVER = "https://10.20.0.40:6443"


def _config(tmp_path: Path, **matrix: Any) -> Config:
    return agentic_config(tmp_path, REPOS, SERVER, notify={"matrix": {**MATRIX, **matrix}})


def _problems(tmp_path: Path, **matrix: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        _config(tmp_path, **matrix)
    return info.value.problems


def test_the_section_is_typed_with_defaults_and_absent_means_off(tmp_path: Path) -> None:
    matrix = _config(tmp_path).notify.matrix
    assert matrix is not None
    assert matrix.homeserver == "https://matrix.example:8448"
    assert matrix.token_file == (tmp_path / "matrix-token").resolve()
    assert (matrix.batch_s, matrix.max_per_minute, matrix.queue_size) == (2.0, 6, 1000)
    assert (matrix.approval_ttl_s, matrix.ca_file) == (3600.0, None)
    assert agentic_config(tmp_path, REPOS, SERVER).notify.matrix is None


@pytest.mark.parametrize(
    ("setting", "key", "says"),
    [
        ({"homeserver": "http://127.0.0.1:8008"}, "homeserver", "https:// URL"),
        ({"homeserver": "https://user:pw@m.example"}, "homeserver", "https:// URL"),
        ({"room_id": "#homelab:m.example"}, "room_id", "a room ID"),
        ({"approvers": ["owner"]}, "approvers", "Matrix user IDs"),
        ({"batch_s": -1}, "batch_s", "0 or a number of seconds"),
        ({"max_per_minute": 0}, "max_per_minute", "from 1 to 600"),
        ({"queue_size": 2.5}, "queue_size", "whole number"),
        ({"approval_ttl_s": 0}, "approval_ttl_s", "seconds > 0"),
        ({"token": "syt_abc"}, "token", "unknown key"),
    ],
)
def test_a_bad_setting_is_refused_naming_its_key(
    tmp_path: Path, setting: dict[str, Any], key: str, says: str
) -> None:
    (problem,) = _problems(tmp_path, **setting)
    assert f"notify.matrix.{key}: " in problem and says in problem
    assert "syt_abc" not in problem


def test_a_missing_required_key_is_named(tmp_path: Path) -> None:
    matrix = {k: v for k, v in MATRIX.items() if k != "token_file"}
    with pytest.raises(ConfigError) as info:
        agentic_config(tmp_path, REPOS, SERVER, notify={"matrix": matrix})
    assert any("notify.matrix.token_file: missing" in p for p in info.value.problems)


def test_check_refuses_a_token_file_others_can_read_and_a_ca_file_without_a_certificate(
    tmp_path: Path,
) -> None:
    token = tmp_path / "matrix-token"
    token.write_text("syt_secret_token\n")
    token.chmod(0o644)
    (tmp_path / "ca.pem").write_text("not a certificate\n")
    problems = check_files(_config(tmp_path, ca_file="ca.pem"))
    assert any("notify.matrix.token_file" in p and "chmod 600" in p for p in problems)
    assert any("notify.matrix.ca_file" in p for p in problems)
    assert not any("syt_secret_token" in p for p in problems)
    token.chmod(0o600)
    assert not [p for p in check_files(_config(tmp_path)) if "notify" in p]
    token.unlink()
    assert any("notify.matrix.token_file" in p for p in check_files(_config(tmp_path)))


def test_reconciler_check_names_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "kubeconfig").write_text("apiVersion: v1\nkind: Config\n")
    file = tmp_path / "config.toml"
    file.write_text(
        f'[daemon]\nstate_dir = "state"\n[[repos]]\nname = "lab"\npath = "clone"\n'
        f'[[clusters]]\nname = "agentic"\nmode = "apply"\nkubeconfig = "kubeconfig"\n'
        f'servers = ["{SERVER}"]\n[notify.matrix]\nhomeserver = "http://127.0.0.1:8008"\n'
        'room_id = "!abc:m.example"\ntoken_file = "matrix-token"\n'
    )
    assert main(["check", "--config", str(file)]) == 2
    assert "notify.matrix.homeserver" in capsys.readouterr().err


def test_an_approver_or_room_with_a_trailing_newline_is_refused(tmp_path: Path) -> None:
    (problem,) = _problems(tmp_path, approvers=["@owner:matrix.example\n"])
    assert "notify.matrix.approvers: " in problem
    (problem,) = _problems(tmp_path, room_id="!abc:matrix.example\n")
    assert "notify.matrix.room_id: " in problem


def test_check_reports_a_token_file_it_cannot_look_at_without_a_traceback(
    tmp_path: Path,
) -> None:
    # A name too long for the filesystem: stat fails with an error Path.is_file does not
    # swallow (as EACCES on a directory that may not be searched, which root never gets).
    unreadable = tmp_path / ("x" * 300)
    problems = check_files(_config(tmp_path, token_file=str(unreadable)))
    assert any(
        "notify.matrix.token_file" in p and "a readable file holding the access token" in p
        for p in problems
    )
