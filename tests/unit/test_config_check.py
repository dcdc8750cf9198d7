"""`reconciler check` refuses every bad setting, naming file and key, and `run` exits 78
(EX_CONFIG, which systemd does not restart) on the same ones, before anything starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.cli import main

BASE = """
[daemon]
state_dir = "state"
{daemon}
[logs]
{logs}
[render]
{render}
[[repos]]
name = "lab"
path = "clone"
url = "https://git.test/lab.git"
apps = ["apps"]
{repo}
[[clusters]]
name = "agentic"
mode = "apply"
kubeconfig = "agentic.kubeconfig"
servers = ["https://10.20.0.40:6443"]
{cluster}
"""


def _config(tmp_path: Path, **tables: str) -> Path:
    values = {k: tables.get(k, "") for k in ("daemon", "logs", "render", "repo", "cluster")}
    (tmp_path / "agentic.kubeconfig").write_text("apiVersion: v1\nkind: Config\n")
    file = tmp_path / "config.toml"
    file.write_text(BASE.format(**values) + tables.get("extra", ""))
    return file


# (table, setting, the key the message must name, what it must say)
CASES = [
    ("daemon", "max_prune_share = 2", "daemon.max_prune_share", "from 0 to 1"),
    ("daemon", "prune_floor = -1", "daemon.prune_floor", "0 or more"),
    ("daemon", "prune_floor = 2.5", "daemon.prune_floor", "whole number"),
    ("daemon", "dry_run_concurrency = 0", "daemon.dry_run_concurrency", "from 1 to 64"),
    ("daemon", "dry_run_concurrency = 8.5", "daemon.dry_run_concurrency", "whole number"),
    ("daemon", "resync_interval_s = -5", "daemon.resync_interval_s", "seconds > 0"),
    ("daemon", "fetch_interval_s = inf", "daemon.fetch_interval_s", "seconds > 0"),
    ("daemon", "debounce_s = nan", "daemon.debounce_s", "seconds > 0"),
    ("daemon", "debounce_s = 1e300", "daemon.debounce_s", "at most a year"),
    ("daemon", "retention_days = 0", "daemon.retention_days", "days > 0"),
    ("daemon", 'metrics_address = "nonsense"', "daemon.metrics_address", "host:port"),
    ("daemon", 'metrics_address = "127.0.0.1:99999"', "daemon.metrics_address", "0-65535"),
    ("daemon", 'metrics_address = "a b:80"', "daemon.metrics_address", "host:port"),
    ("daemon", "colour = true", "daemon.colour", "unknown key"),
    ("daemon", 'policies = "no-such-dir"', "daemon.policies", "a directory of policy files"),
    ("logs", 'level = "verbose"', "logs.level", '"debug", "info"'),
    ("logs", 'ship_url = "ftp://x"', "logs.ship_url", "http:// or https:// URL"),
    ("logs", "colour = true", "logs.colour", "unknown key"),
    (
        "logs",
        'ship_url = "http://logs.lan:9428"\nship_ca_file = "ca.crt"',
        "logs.ship_ca_file",
        "only with an https:// logs.ship_url",
    ),
    (
        "logs",
        'ship_url = "https://logs.lan:9428"\nship_ca_file = "missing-ca.crt"',
        "logs.ship_ca_file",
        "a readable CA certificate file",
    ),
    ("render", "timeout_seconds = -1", "render.timeout_seconds", "seconds > 0"),
    ("render", "max_objects = 0", "render.max_objects", "whole number > 0"),
    ("render", 'helm = "/no/such/helm"', "render.helm", "an executable helm"),
    ("render", "colour = true", "render.colour", "unknown key"),
    (
        "render",
        '[render.chart_mirrors]\n"https://charts.x" = { url = "https://m", insecure = true }',
        'render.chart_mirrors."https://charts.x"',
        "mirror URL, got a dict",
    ),
    (
        "render",
        '[render.chart_mirrors]\n"https://charts.x" = "ftp://mirror"',
        'render.chart_mirrors."https://charts.x"',
        "mirror URL",
    ),
    ("repo", "branch = 'main'", "repos[0].branch", "unknown key"),
    ("repo", "ref = 'main'", "repos[0].ref", "full ref name"),
    ("cluster", "token = 'x'", "clusters[0].token", "unknown key"),
    ("cluster", 'kubeconfig2 = "x"', "clusters[0].kubeconfig2", "unknown key"),
    ("extra", "[extra]\nx = 1", "(top level).extra", "unknown key"),
    (
        "extra",
        '[[apps]]\nname = "a"\nrepo = "lab"\npath = "p"\ncluster = "agentic"\n'
        'namespace = "a"\nwave = 1',
        "apps[0].wave",
        "unknown key",
    ),
]


@pytest.mark.parametrize(("table", "setting", "key", "says"), CASES)
def test_check_refuses_the_setting_naming_file_and_key_and_run_exits_78(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    table: str,
    setting: str,
    key: str,
    says: str,
) -> None:
    if table == "render" and setting.startswith("[render."):
        file = _config(tmp_path, extra=setting)
    else:
        file = _config(tmp_path, **{table: setting})
    (tmp_path / "ca.crt").write_text("not used\n")
    assert main(["check", "--config", str(file)]) == 2
    err = capsys.readouterr().err
    line = next((x for x in err.splitlines() if f": {key}: " in x), None)
    assert line is not None, err
    assert line.startswith(f"{file}: {key}: ") and says in line, line
    assert main(["run", "--config", str(file)]) == 78
    assert key in capsys.readouterr().err
    assert not (tmp_path / "state").exists(), "a refused run created no state"


def test_every_config_problem_is_listed_in_one_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = _config(
        tmp_path,
        daemon='max_prune_share = 2\nresync_interval_s = -5\nmetrics_address = "nonsense"',
        logs='level = "verbose"\nship_url = "ftp://x"',
        cluster="token = 1",
    )
    (tmp_path / "agentic.kubeconfig").unlink()
    assert main(["check", "--config", str(file)]) == 2
    err = capsys.readouterr().err
    for key in (
        "daemon.max_prune_share",
        "daemon.resync_interval_s",
        "daemon.metrics_address",
        "logs.level",
        "logs.ship_url",
        "clusters[0].token",
    ):
        assert f"{file}: {key}: " in err, key
    # Files are checked once the text is valid (they depend on it).
    file = _config(tmp_path)
    (tmp_path / "agentic.kubeconfig").unlink()
    assert main(["check", "--config", str(file)]) == 2
    assert f"{file}: clusters[0].kubeconfig: {tmp_path / 'agentic.kubeconfig'}" in (
        capsys.readouterr().err
    )


def test_run_exits_78_as_a_process_on_a_config_error(tmp_path: Path) -> None:
    file = _config(tmp_path, daemon="max_prune_share = 2")
    done = subprocess.run(
        [sys.executable, "-m", "reconciler.cli", "run", "--config", str(file)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 78, done.stderr
    assert f"{file}: daemon.max_prune_share: " in done.stderr
    assert "Traceback" not in done.stderr


def test_a_valid_config_passes_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = _config(
        tmp_path,
        daemon='metrics_address = "[::1]:9108"\nmax_prune_share = 0',
        logs='ship_url = "https://logs.lan:9428"\nship_ca_file = "ca.crt"',
        render='helm = "sh"',
    )
    (tmp_path / "ca.crt").write_text("a CA\n")
    assert main(["check", "--config", str(file)]) == 0, capsys.readouterr().err
