"""What an Application may hand to helm (render/arguments.py) and which remote
references name which host (render/remote.py): pure rules, checked directly."""

from __future__ import annotations

import pytest

from reconciler.errors import RenderError
from reconciler.render.arguments import (
    invalid_chart,
    invalid_chart_repo,
    invalid_chart_version,
    invalid_namespace,
    invalid_parameter_name,
    invalid_release_name,
)
from reconciler.render.remote import check_remote, is_url, remote_host


@pytest.mark.parametrize(
    ("check", "good", "bad"),
    [
        (
            invalid_release_name,
            ["cilium", "a.b-c", "x" * 53],
            ["--post-renderer=/bin/sh", "A", "x" * 54, "-a", "a_b"],
        ),
        (invalid_namespace, ["default", "kube-system", "x" * 63], ["-n", "a.b", "x" * 64, "Kube"]),
        (
            invalid_chart,
            ["cert-manager", "victoria_logs", "org/chart"],
            ["-x", "../x", "a b", "a/../b"],
        ),
        (
            invalid_chart_version,
            ["1.16.5", "v39.0.5", "^1.2", ">=1.0 <2.0", "1.x", "1.2.3-rc.1+b"],
            ["-1", "--post-renderer=/bin/sh", "1;rm", "", "1\n2"],
        ),
        (
            invalid_chart_repo,
            [
                "https://charts.jetstack.io",
                "oci://ghcr.io/org",
                "oci://127.0.0.1:5000/charts/",
                "oci://[::1]:5000/c",
                "registry-1.docker.io/bitnamicharts",
            ],
            [
                "--post-renderer=/bin/sh",
                "file:///etc",
                "ftp://x/y",
                "https://",
                "a b",
                "oci://",
                "oci://u:pw@ghcr.io/org",
                "oci://ghcr.io/Org",
                "oci://h/x?y",
            ],
        ),
        (
            invalid_parameter_name,
            ["crds.enabled", "a\\.b/c[0].d", "x\\,y"],
            ["a=b", "a,b", "a b", ""],
        ),
    ],
)
def test_argument_values_follow_the_tools_syntax(
    check: object, good: list[str], bad: list[str]
) -> None:
    assert callable(check)
    assert [g for g in good if check(g) is not None] == []
    assert [b for b in bad if check(b) is None] == []


def test_a_refusal_quotes_at_most_a_short_prefix_of_the_value() -> None:
    message = invalid_release_name("a" * 500)
    assert message is not None and len(message) < 200


@pytest.mark.parametrize(
    ("reference", "host"),
    [
        ("https://example.com/values.yaml", "example.com"),
        ("http://user:pw@127.0.0.1:8080/v.yaml", "127.0.0.1:8080"),
        ("git::https://GitHub.com/org/repo//dir?ref=v1", "github.com"),
        ("ssh://git@github.com/org/repo", "github.com"),
        ("git@github.com:org/repo.git", "github.com"),
        ("github.com/org/repo//dir?ref=main", "github.com"),
        ("127.0.0.1:9/x", "127.0.0.1:9"),
        ("../base", None),
        ("cm.yaml", None),
    ],
)
def test_remote_references_name_their_host(reference: str, host: str | None) -> None:
    assert remote_host(reference) == host


def test_only_scheme_and_scp_forms_are_urls_by_themselves() -> None:
    assert is_url("https://x/y") and is_url("git@h:o/r") and is_url("git::https://h/r")
    assert not is_url("github.com/org/repo") and not is_url("../x") and not is_url("a:b")


def test_a_remote_is_allowed_by_host_or_by_host_and_port_only() -> None:
    check_remote("https://example.com:8443/v.yaml", ["example.com"], "value file")
    check_remote("http://127.0.0.1:9/v.yaml", ["127.0.0.1:9"], "value file")
    with pytest.raises(RenderError, match=r"127\.0\.0\.1:9 is not in \[render\] allow_remote"):
        check_remote("http://127.0.0.1:9/v.yaml", ["127.0.0.1:10"], "value file")
    with pytest.raises(RenderError, match="allow_remote") as info:
        check_remote("https://user:s3cr3t@evil.example/v.yaml", [], "value file")
    assert "s3cr3t" not in str(info.value)
