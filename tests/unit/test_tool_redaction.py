"""Tool stderr is redacted before it becomes an error message: each class of secret
it may echo, and the cut to the meaningful lines."""

from __future__ import annotations

import base64
import logging
import sys
from pathlib import Path

import pytest

from reconciler.cluster.client import ClusterClient
from reconciler.cluster.errors import KubeconfigError
from reconciler.config import RepoConfig
from reconciler.render.redaction import (
    MARKER,
    MAX_CHARS,
    MAX_LINES,
    app_secret_values,
    redact_text,
    tool_message,
)
from reconciler.sources.git import GitSource
from testenv.gitrepos import make_upstream_and_clone

CANARY = "hunter2-Canary"


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        (f"error: password={CANARY} rejected", "error: password="),
        (f"token: {CANARY}", "token: "),
        (f'{{"apiKey": "{CANARY}"}}', '"apiKey": "'),
        (f"db_secret = '{CANARY}'", "db_secret = '"),
        (f"kubectl create secret generic x --from-literal=pw={CANARY}", "--from-literal=pw="),
        (f"failed to fetch https://bob:{CANARY}@charts.example.com/index.yaml", "https://"),
        (f"clone git://bob:{CANARY}@git.example.com/r.git", "git://"),
        (f"Authorization: Bearer {CANARY}", "Authorization: "),
        (f"sent bearer {CANARY}xyz to the server", "bearer "),
        (f"Basic {base64.b64encode(b'bob:' + CANARY.encode()).decode()}", "Basic "),
    ],
)
def test_secret_looking_values_are_redacted(text: str, kept: str) -> None:
    redacted = redact_text(text)
    assert CANARY not in redacted
    assert "bob:" not in redacted
    assert MARKER in redacted
    assert kept in redacted  # the key or scheme stays, so the message still says what failed


def test_long_base64_blobs_and_pem_blocks_are_redacted() -> None:
    blob = base64.b64encode(bytes(range(60))).decode()  # random-looking: mixed case and digits
    pem = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----"
    redacted = redact_text(f"data: {blob}\nkey file:\n{pem}\n")
    assert blob not in redacted and "MIIEvQ" not in redacted
    assert redacted.count(MARKER) == 2


def test_ordinary_words_names_and_paths_are_kept() -> None:
    text = (
        "Error: template: kube-prometheus-stack-prometheus-node-exporter/templates/"
        "daemonset.yaml:12:3: executing at <.Values.image>: nil pointer"
    )
    assert redact_text(text) == text


def test_the_apps_own_secret_values_are_redacted_raw_and_base64() -> None:
    encoded = base64.b64encode(b"s3")  # too short to redact: would blank ordinary words
    text = f"bad value {CANARY} or {base64.b64encode(CANARY.encode()).decode()} {encoded!r}"
    redacted = redact_text(text, secrets=[CANARY, "s3"])
    assert CANARY not in redacted
    assert base64.b64encode(CANARY.encode()).decode() not in redacted
    assert redacted.startswith("bad value <redacted> or <redacted>")


def test_tool_message_keeps_the_error_lines_not_only_the_last() -> None:
    stderr = (
        "walking the tree\n"
        f"Error: accumulating resources: password={CANARY}\n"
        "error: trouble in apps/x/kustomization.yaml\n"
        "goroutine 1 [running]:\n"
    ).encode()
    message = tool_message(stderr)
    assert message == (
        "Error: accumulating resources: password=<redacted> | "
        "error: trouble in apps/x/kustomization.yaml"
    )


def test_tool_message_keeps_the_cause_a_wrapped_error_puts_on_its_next_lines() -> None:
    stderr = (
        "I1202 01:01:57.965371 5598 log.go:244] Warning: the 'git::' prefix is deprecated\n"
        "error: accumulating resources: " + "accumulation err=" * 40 + "failed to run "
        "'git fetch': fatal: unable to access 'https://h/r/': Couldn't connect to server\n"
        ": exit status 128\n"
    ).encode()
    message = tool_message(stderr)
    assert message.startswith("error: accumulating resources: accumulation err=")
    assert message.endswith(
        "fatal: unable to access 'https://h/r/': Couldn't connect to server: exit status 128"
    )
    assert " ... " in message and "Warning" not in message


def test_tool_message_keeps_helms_parse_error_and_drops_its_debug_hint() -> None:
    stderr = (
        b"Error: YAML parse error on c/templates/cm.yaml: error converting YAML to JSON: "
        b"yaml: line 7: mapping values are not allowed in this context\n\n"
        b"Use --debug flag to render out invalid YAML\n"
    )
    assert tool_message(stderr) == (
        "Error: YAML parse error on c/templates/cm.yaml: error converting YAML to JSON: "
        "yaml: line 7: mapping values are not allowed in this context"
    )


def test_tool_message_says_a_repeated_line_once() -> None:
    stderr = b"warning: unable to access '/etc/gitconfig'\n" * 2 + b"fatal: no config\n"
    assert tool_message(stderr) == "warning: unable to access '/etc/gitconfig' | fatal: no config"


def test_tool_message_is_bounded() -> None:
    stderr = "\n".join(f"error {i}: " + "x" * 300 for i in range(50)).encode()
    message = tool_message(stderr)
    assert len(message) <= MAX_CHARS + 3
    assert message.count("error ") <= MAX_LINES
    assert "error 49" in message  # the end, where tools say what finally went wrong
    assert tool_message(b"\n  \n") == "failed without a message"


def test_app_secret_values_reads_secrets_and_generator_literals(tmp_path: Path) -> None:
    files = {
        "app/kustomization.yaml": (
            b"secretGenerator:\n- name: s\n  literals: [db-password=lit-Value1]\n"
            b"  envs: [creds.env]\n"
        ),
        "app/creds.env": b"API_TOKEN=env-Value2\n",
        "app/secret.yaml": (
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\n"
            f"data: {{k: {base64.b64encode(b'data-Value3').decode()}}}\n"
            "stringData: {k2: string-Value4}\n"
        ).encode(),
        "app/broken.yaml": b"kind: [unclosed\n",
    }
    _, clone = make_upstream_and_clone(tmp_path, "lab", files)
    source = GitSource(RepoConfig("lab", clone, None, "refs/heads/main", ()), tmp_path / "state")
    values = set(app_secret_values(source.snapshot(), "app"))
    assert {"lit-Value1", "env-Value2", "data-Value3", "string-Value4"} <= values


def test_kubeconfig_exec_plugin_output_never_reaches_the_root_logger(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    plugin = tmp_path / "plugin"
    plugin.write_text(
        f"#!{sys.executable}\nimport sys\nsys.stderr.write('{CANARY}')\nsys.exit(3)\n"
    )
    plugin.chmod(0o755)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        f"""
apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "https://127.0.0.1:1"}}}}]
users: [{{name: u, user: {{exec: {{apiVersion: client.authentication.k8s.io/v1,
  command: "{plugin}", interactiveMode: Never}}}}}}]
contexts: [{{name: c, context: {{cluster: c, user: u}}}}]
current-context: c
"""
    )
    caplog.set_level(logging.DEBUG)
    try:
        ClusterClient("agentic", kubeconfig).close()
    except KubeconfigError as exc:
        assert CANARY not in str(exc)
    logged = caplog.text + "".join(str(r.msg) for r in caplog.records)
    assert "exec plugin failed (exec: process returned 3)" in logged
    assert CANARY not in logged
