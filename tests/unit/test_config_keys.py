"""Every key documented in README.md's table changes behaviour, and a test shows it.

The table is parsed from the README: a documented key with no test below (or
in the tests named in PROOFS) fails `test_every_documented_key_has_a_test`, and
so does a key the config reads but the README does not document. The tests
here drive the real pieces (the daemon's scheduler, worker, metrics server and
logging set-up; `reconciler render` on a real git repo with the real kubectl)
with two values of a key and assert the difference.
"""

from __future__ import annotations

import datetime
import json
import re
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml

from reconciler import daemon as daemon_module
from reconciler import logs
from reconciler.cli import main
from reconciler.config import Config, load_config
from reconciler.daemon import Daemon
from reconciler.policy import SHIPPED_POLICIES
from reconciler.session import STATE_DB, open_session, open_store, policies_for
from testenv.gitrepos import make_upstream_and_clone
from testenv.pki import make_ca
from tests.builders import config_map, yaml_file

REPO_ROOT = Path(__file__).resolve().parents[2]
HERE = "tests/unit/test_config_keys.py"

_NOTIFY = "tests/notify/test_notify_daemon.py"
# Keys whose behaviour other tests show, end to end (node ids, checked to exist).
PROOFS: dict[str, list[str]] = {
    "logs.ship_url": [
        "tests/integration/test_log_shipping.py::test_events_arrive_with_every_field_and_nothing_else"
    ],
    "logs.ship_ca_file": [
        "tests/integration/test_log_shipping.py::test_https_is_verified_against_the_configured_ca"
    ],
    "render.chart_credentials": [
        "tests/desired/test_chart_credentials.py::test_http_repository_credentials_render_and_wrong_or_missing_ones_fail_that_app_only",
        "tests/desired/test_chart_credentials.py::test_a_password_file_others_can_read_is_refused_naming_it",
    ],
    "render.chart_ca_file": [
        "tests/desired/test_oci_charts.py::test_a_chart_from_an_oci_registry_renders_and_is_pulled_once",
        "tests/desired/test_oci_charts.py::test_reconciler_check_names_a_chart_ca_file_that_holds_no_certificate",
    ],
    "render.timeout_seconds": [
        "tests/faults/test_render_faults.py::test_a_hanging_render_times_out_that_app_only"
    ],
    "render.helm": [
        "tests/desired/test_render_homelab.py::test_helm_values_reach_the_chart_in_argo_cd_order"
    ],
    "render.chart_mirrors": [
        "tests/desired/test_render_homelab.py::test_helm_values_reach_the_chart_in_argo_cd_order"
    ],
    "render.max_app_depth": [
        "tests/desired/test_app_of_apps.py::"
        "test_a_chain_past_the_depth_bound_is_an_error_naming_it_and_siblings_render"
    ],
    "render.kustomize_build_options": [
        "tests/desired/test_render_options.py::"
        "test_enable_helm_inflates_helm_charts_from_an_allowed_loopback_repository",
        "tests/unit/test_config_render_options.py::"
        "test_unsafe_or_unknown_kustomize_options_are_refused_naming_them",
    ],
    "daemon.max_prune_share": [
        "tests/integration/test_mass_deletion_share.py::"
        "test_the_configured_prune_share_decides_what_one_sync_may_prune"
    ],
    "daemon.prune_floor": [
        "tests/integration/test_mass_deletion_share.py::"
        "test_the_configured_prune_floor_lets_a_small_prune_through"
    ],
    "daemon.wave_timeout_s": [
        "tests/integration/test_waves_hooks.py::"
        "test_a_wave_that_never_becomes_healthy_times_out_with_a_finding"
    ],
    "daemon.hook_timeout_s": [
        "tests/integration/test_waves_hooks.py::"
        "test_a_hook_that_never_completes_times_out_and_stops_the_sync"
    ],
    "daemon.dry_run_concurrency": [
        "tests/integration/test_dry_run_concurrency.py::"
        "test_a_cold_diff_sends_dry_runs_side_by_side_and_reports_as_one_at_a_time"
    ],
    "repos[].name": [
        "tests/desired/test_catalogue.py::test_config_declared_apps_join_the_catalogue"
    ],
    "repos[].path": [
        "tests/desired/test_committed_state.py::"
        "test_uncommitted_edits_do_not_change_render_and_a_local_commit_does"
    ],
    "repos[].url": [
        "tests/desired/test_render_homelab.py::test_only_apps_of_unconfigured_repositories_fail"
    ],
    "repos[].ref": [
        "tests/desired/test_committed_state.py::test_a_commit_pushed_upstream_is_rendered_after_fetch"
    ],
    "repos[].apps": [
        "tests/desired/test_render_homelab.py::"
        "test_catalogue_holds_every_application_of_the_three_repositories"
    ],
    "clusters[].name": [
        "tests/desired/test_catalogue.py::test_config_declared_apps_join_the_catalogue"
    ],
    "clusters[].mode": [
        "tests/integration/test_daemon.py::"
        "test_commits_are_applied_and_edits_reverted_on_agentic_but_only_reported_on_prod"
    ],
    "clusters[].argocd": [
        "tests/unit/test_config.py::test_argocd_cluster_in_apply_mode_is_refused_with_the_reason"
    ],
    "clusters[].kubeconfig": [
        "tests/integration/test_check_connect.py::test_check_connect_fails_on_a_cluster_it_cannot_reach_and_checks_the_others"
    ],
    "clusters[].servers": [
        "tests/desired/test_render_homelab.py::test_destination_servers_map_to_the_configured_clusters"
    ],
    "clusters[].network": [
        "tests/unit/test_policy_rules.py::"
        "test_loadbalancer_ip_outside_the_network_is_reported_and_inside_is_not"
    ],
    "apps[].name": [
        "tests/desired/test_catalogue.py::test_config_declared_apps_join_the_catalogue"
    ],
    "apps[].repo": [
        "tests/desired/test_catalogue.py::test_config_declared_apps_join_the_catalogue"
    ],
    "apps[].path": [
        "tests/desired/test_catalogue.py::test_config_declared_apps_join_the_catalogue"
    ],
    "apps[].cluster": [
        "tests/desired/test_catalogue.py::test_config_declared_apps_join_the_catalogue"
    ],
    "apps[].namespace": [
        "tests/desired/test_catalogue.py::test_config_declared_apps_join_the_catalogue"
    ],
    "notify.matrix.homeserver": [
        f"{_NOTIFY}::test_check_connect_verifies_the_token_and_that_the_bot_joined_the_room",
        "tests/notify/test_config_matrix.py::test_a_bad_setting_is_refused_naming_its_key",
    ],
    "notify.matrix.room_id": [
        f"{_NOTIFY}::test_check_connect_verifies_the_token_and_that_the_bot_joined_the_room"
    ],
    "notify.matrix.token_file": [
        f"{_NOTIFY}::test_check_connect_verifies_the_token_and_that_the_bot_joined_the_room",
        "tests/notify/test_config_matrix.py::"
        "test_check_refuses_a_token_file_others_can_read_and_a_ca_file_without_a_certificate",
    ],
    "notify.matrix.ca_file": [
        f"{_NOTIFY}::test_a_prod_drift_is_one_redacted_message_not_repeated_and_its_end_is_one_more",
        "tests/notify/test_config_matrix.py::"
        "test_check_refuses_a_token_file_others_can_read_and_a_ca_file_without_a_certificate",
    ],
    "notify.matrix.approvers": [
        "tests/notify/test_approvals_e2e.py::"
        "test_only_an_allowed_timely_first_approval_prunes_and_the_thread_hears_each_answer"
    ],
    "notify.matrix.approval_ttl_s": [
        "tests/notify/test_approvals_e2e.py::"
        "test_only_an_allowed_timely_first_approval_prunes_and_the_thread_hears_each_answer"
    ],
    "notify.matrix.batch_s": [
        "tests/notify/test_notifier.py::"
        "test_notices_are_batched_and_the_same_condition_is_never_posted_twice"
    ],
    "notify.matrix.max_per_minute": [
        "tests/notify/test_notifier.py::"
        "test_the_rate_limit_holds_messages_back_and_later_notices_join_them"
    ],
    "notify.matrix.queue_size": [
        "tests/notify/test_notifier.py::"
        "test_a_room_that_cannot_be_reached_keeps_at_most_queue_size_notices"
    ],
}


def documented_keys() -> list[str]:
    """The first column of the README's config key table."""
    text = (REPO_ROOT / "README.md").read_text()
    return re.findall(r"^\| `([a-z_\[\]]+(?:\.[a-z_]+)+)` \|", text, re.MULTILINE)


def _tests_here() -> dict[str, list[str]]:
    """Key -> the tests of this module that prove it (marked with `proves`)."""
    proofs: dict[str, list[str]] = {}
    for name, function in globals().items():
        for key in getattr(function, "proves", ()):
            proofs.setdefault(key, []).append(f"{HERE}::{name}")
    return proofs


def proves(*keys: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    def mark(function: Callable[..., None]) -> Callable[..., None]:
        function.proves = keys  # type: ignore[attr-defined]
        return function

    return mark


def _exists(node: str) -> bool:
    """The test file exists and defines the named test (read, not imported)."""
    path, _, name = node.partition("::")
    file = REPO_ROOT / path
    return file.is_file() and f"def {name}(" in file.read_text()


def test_every_documented_key_has_a_test() -> None:
    keys = documented_keys()
    assert len(keys) >= 30, "the README's key table was found"
    proofs = {**PROOFS}
    for key, nodes in _tests_here().items():
        proofs[key] = proofs.get(key, []) + nodes
    untested = [k for k in keys if not proofs.get(k)]
    assert untested == [], f"documented keys without a test: {untested}"
    missing = [n for k in keys for n in proofs[k] if not _exists(n)]
    assert missing == [], f"tests named as proof that do not exist: {missing}"
    assert set(proofs) <= set(keys), f"tested but undocumented: {set(proofs) - set(keys)}"


def test_every_key_the_config_reads_is_documented() -> None:
    from reconciler.config import DaemonConfig, LogsConfig, MatrixConfig, RenderConfig

    read = {f"daemon.{k}" for k in ("state_dir", *DaemonConfig.__dataclass_fields__)}
    read |= {f"logs.{k}" for k in LogsConfig.__dataclass_fields__}
    read |= {f"render.{k}" for k in RenderConfig.__dataclass_fields__}
    read |= {f"notify.matrix.{k}" for k in MatrixConfig.__dataclass_fields__}
    assert read <= set(documented_keys())


# -- a small homelab: one repo, one unreachable apply-mode cluster ----------------------


def _config(tmp_path: Path, files: dict[str, str], **tables: dict[str, Any]) -> Config:
    """A config over a real git repo of `files`, with `tables` as given."""
    clone = tmp_path / "clones" / "lab"
    if not clone.exists():
        content: dict[str, bytes | None] = {k: v.encode() for k, v in files.items()}
        make_upstream_and_clone(tmp_path, "lab", content)
        ca = make_ca(tmp_path / "pki", "test-ca")
        (tmp_path / "kubeconfig").write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [
                        {
                            "name": "c",
                            "cluster": {
                                # Nothing listens there: the daemon's pieces run, no cluster.
                                "server": "https://127.0.0.1:9",
                                "certificate-authority": str(ca.cert_file),
                            },
                        }
                    ],
                    "users": [{"name": "u", "user": {"token": "t"}}],
                    "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                    "current-context": "c",
                }
            )
        )
    lines: list[str] = []
    for table, values in tables.items():
        lines.append(f"[{table}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    lines += [
        "[[repos]]",
        'name = "lab"',
        f"path = {json.dumps(str(clone))}",
        'url = "https://git.test/lab.git"',
        "[[clusters]]",
        'name = "agentic"',
        'mode = "apply"',
        f"kubeconfig = {json.dumps(str(tmp_path / 'kubeconfig'))}",
        'servers = ["https://10.20.0.40:6443"]',
        "[[apps]]",
        'name = "web"',
        'repo = "lab"',
        'path = "deploy"',
        'cluster = "agentic"',
        'namespace = "web"',
    ]
    file = tmp_path / "config.toml"
    file.write_text("\n".join(lines) + "\n")
    return load_config(file)


def _config_map(name: str, data: str = "x") -> str:
    return yaml_file(config_map(name, {"k": data})).decode()


PLAIN = {"deploy/a.yaml": _config_map("a"), "deploy/b.yaml": _config_map("b", "y" * 3000)}
KUSTOMIZED = {
    "deploy/kustomization.yaml": "resources: [a.yaml, b.yaml]\n",
    "deploy/a.yaml": _config_map("a"),
    "deploy/b.yaml": _config_map("b"),
}


@pytest.fixture
def built() -> Iterator[list[Daemon]]:
    daemons: list[Daemon] = []
    yield daemons
    for d in daemons:
        d.stopping.set()
        if d.scheduler.running:
            d.scheduler.shutdown(wait=False)
        if d._metrics_server is not None:
            d._metrics_server.close(timeout=1.0)
        d.session.close()


def _daemon(built: list[Daemon], config: Config) -> Daemon:
    d = Daemon(config)
    built.append(d)
    return d


@proves("daemon.state_dir")
def test_state_dir_is_where_the_state_is_kept(tmp_path: Path) -> None:
    for name in ("one", "two"):
        config = _config(tmp_path, PLAIN, daemon={"state_dir": str(tmp_path / name)})
        open_store(config).close()
        assert (tmp_path / name / STATE_DB).is_file()
    assert config.state_dir == tmp_path / "two"


@proves("daemon.policies")
def test_policies_come_from_the_configured_directory(tmp_path: Path) -> None:
    mine = tmp_path / "policies"
    mine.mkdir()
    for file in SHIPPED_POLICIES.glob("*.yaml"):
        if file.name != "ignore-differences.yaml":
            (mine / file.name).write_text(file.read_text())
    shipped = policies_for(_config(tmp_path, PLAIN))
    configured = policies_for(_config(tmp_path, PLAIN, daemon={"policies": str(mine)}))
    assert shipped.ignore_rules("agentic") != configured.ignore_rules("agentic")


@proves("daemon.resync_interval_s", "daemon.fetch_interval_s", "daemon.retention_days")
def test_the_schedule_follows_the_configured_intervals(tmp_path: Path, built: list[Daemon]) -> None:
    def schedule(**daemon: Any) -> dict[str, Any]:
        d = _daemon(
            built, _config(tmp_path, PLAIN, daemon={"state_dir": str(tmp_path / "s"), **daemon})
        )
        d._schedule()
        return {job.id: job for job in d.scheduler.get_jobs()}

    default = schedule()
    jobs = schedule(resync_interval_s=7, fetch_interval_s=11, retention_days=3)
    assert jobs["resync"].trigger.interval == datetime.timedelta(seconds=7)
    assert jobs["fetch"].trigger.interval == datetime.timedelta(seconds=11)
    # The retention job drops what is older than the configured days (however wrapped).
    assert repr(datetime.timedelta(days=3)) in repr(jobs["retention"].args)
    assert default["resync"].trigger.interval == datetime.timedelta(seconds=300)
    assert repr(datetime.timedelta(days=14)) in repr(default["retention"].args)


@proves("daemon.debounce_s")
def test_a_follow_up_reconcile_waits_the_configured_gap_and_the_first_none(
    tmp_path: Path, built: list[Daemon]
) -> None:
    def delays(debounce: float) -> tuple[float, float]:
        """(trigger -> first reconcile, end of the first -> start of its follow-up)"""
        d = _daemon(
            built,
            _config(
                tmp_path, PLAIN, daemon={"state_dir": str(tmp_path / "s"), "debounce_s": debounce}
            ),
        )
        worker = d.workers["agentic"]
        starts: list[float] = []
        followed = threading.Event()

        def reconcile(_reasons: set[str], _asked: object, _only: object) -> None:
            starts.append(time.monotonic())
            if len(starts) == 1:
                worker.trigger("during the first")
            else:
                followed.set()

        worker._reconcile = reconcile  # type: ignore[method-assign,assignment]
        worker.start()
        triggered = time.monotonic()
        worker.trigger("test")
        assert followed.wait(10)
        d.stopping.set()
        return starts[0] - triggered, starts[1] - starts[0]

    first, follow_up = delays(1.5)
    assert first < 1.0 and follow_up >= 1.5
    assert delays(0)[1] < 1.0


@proves("daemon.metrics_address")
def test_metrics_are_served_on_the_configured_address_or_not_at_all(
    tmp_path: Path, built: list[Daemon]
) -> None:
    state = str(tmp_path / "s")
    off = _daemon(
        built, _config(tmp_path, PLAIN, daemon={"state_dir": state, "metrics_address": ""})
    )
    off._serve_metrics()
    assert off._metrics_server is None
    on = _daemon(
        built,
        _config(tmp_path, PLAIN, daemon={"state_dir": state, "metrics_address": "127.0.0.1:0"}),
    )
    on._serve_metrics()
    assert on._metrics_server is not None
    url = f"http://127.0.0.1:{on._metrics_server.port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as answer:
        assert b"reconciler_" in answer.read()


@proves("logs.level")
def test_the_configured_level_decides_what_the_daemon_logs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    class Started:
        def __init__(self, _config: Config) -> None:
            self.metrics = None

        def run(self) -> int:
            logs.get().info("probe.info")
            logs.get().warning("probe.warning")
            return 0

    monkeypatch.setattr(daemon_module, "Daemon", Started)
    try:
        for level in ("info", "warning"):
            assert daemon_module.run(_config(tmp_path, PLAIN, logs={"level": level})) == 0
            out = capsys.readouterr().out
            assert "probe.warning" in out
            assert ("probe.info" in out) is (level == "info")
    finally:
        structlog.reset_defaults()


def _render(tmp_path: Path, files: dict[str, str], **render: Any) -> int:
    # A fresh state each time: a kustomize build is cached per commit.
    state = tempfile.mkdtemp(dir=tmp_path, prefix="state-")
    config = _config(tmp_path, files, daemon={"state_dir": state}, render=render)
    return main(["render", "--config", str(config.file)])


@pytest.mark.parametrize(
    ("key", "files", "value"),
    [
        ("max_file_bytes", PLAIN, 2000),
        ("max_objects", PLAIN, 1),
        ("max_output_bytes", KUSTOMIZED, 100),
        ("memory_limit_bytes", KUSTOMIZED, 16 * 1024 * 1024),
        ("kubectl", KUSTOMIZED, "/bin/false"),
    ],
)
@proves(
    "render.max_file_bytes",
    "render.max_objects",
    "render.max_output_bytes",
    "render.memory_limit_bytes",
    "render.kubectl",
)
def test_a_render_limit_or_tool_from_config_changes_the_render(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], key: str, files: dict[str, str], value: Any
) -> None:
    assert _render(tmp_path, files) == 0, capsys.readouterr().err
    assert "name: b" in capsys.readouterr().out
    assert _render(tmp_path, files, **{key: value}) == 1
    captured = capsys.readouterr()
    assert "web" in captured.err, captured.err
    assert "name: b" not in captured.out


@proves("render.cpu_seconds")
def test_a_tool_past_the_configured_cpu_seconds_is_stopped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spinning = tmp_path / "spinning-kubectl"
    spinning.write_text("#!/bin/sh\nwhile :; do :; done\n")
    spinning.chmod(0o755)
    assert _render(tmp_path, KUSTOMIZED, kubectl=str(spinning), timeout_seconds=2) == 1
    assert "timed out after 2s" in capsys.readouterr().err
    started = time.monotonic()
    code = _render(tmp_path, KUSTOMIZED, kubectl=str(spinning), timeout_seconds=60, cpu_seconds=1)
    assert code == 1 and time.monotonic() - started < 30
    assert "stopped by the CPU limit ([render] cpu_seconds)" in capsys.readouterr().err


@proves("render.allow_remote")
def test_a_remote_kustomize_resource_is_fetched_only_from_an_allowed_host(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = {
        "deploy/kustomization.yaml": "resources: [a.yaml, 'http://127.0.0.1:9/x.yaml']\n",
        "deploy/a.yaml": _config_map("a"),
    }
    assert _render(tmp_path, files, timeout_seconds=20) == 1
    assert "is not in [render] allow_remote" in capsys.readouterr().err
    assert _render(tmp_path, files, timeout_seconds=20, allow_remote=["127.0.0.1:9"]) == 1
    err = capsys.readouterr().err
    assert "web" in err and "allow_remote" not in err, err


@proves("clusters[].context")
def test_the_configured_context_picks_the_server(tmp_path: Path) -> None:
    config = _config(tmp_path, PLAIN, daemon={"state_dir": str(tmp_path / "s")})
    kubeconfig = yaml.safe_load((tmp_path / "kubeconfig").read_text())
    other = {**kubeconfig["clusters"][0], "name": "d"}
    other["cluster"] = {**other["cluster"], "server": "https://127.0.0.2:9"}
    kubeconfig["clusters"].append(other)
    kubeconfig["contexts"].append({"name": "d", "context": {"cluster": "d", "user": "u"}})
    (tmp_path / "kubeconfig").write_text(yaml.safe_dump(kubeconfig))
    text = config.file.read_text().replace('mode = "apply"', 'mode = "apply"\ncontext = "d"')
    config.file.write_text(text)
    for file, server in ((None, "https://127.0.0.1:9"), (config.file, "https://127.0.0.2:9")):
        chosen = load_config(config.file) if file else config
        session = open_session(chosen, {"agentic"})
        try:
            assert session.engines["agentic"].client.server == server
        finally:
            session.close()
