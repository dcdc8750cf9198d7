"""What an Application may hand to helm as an argument.

Values from a repository reach helm's argv, and a commit is not a login: a
release name `--post-renderer=/bin/sh` would otherwise run a shell. So each
such value is checked against the syntax the tool documents, and the argv
builders also pass values as `--flag=value` with positionals after `--`;
either alone keeps a value from becoming a flag, both make the error clear.
"""

from __future__ import annotations

import re

from reconciler.urls import redact_url

# Kubernetes DNS-1123 label, and Helm's release name rule (DNS-1123 subdomain, at most
# 53 characters so that `<release>-<suffix>` names still fit in a label).
_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_LABEL_ANY = r"[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?"
_DNS_LABEL = re.compile(rf"^{_LABEL}$")
_SUBDOMAIN = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")
_CHART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")
# A SemVer version or a range Helm accepts (`^1.2`, `>=1.0 <2.0`, `1.x`, `v1.2.3-rc.1+b`).
_VERSION = re.compile(r"^[0-9A-Za-z^~<>=*.,|+_][0-9A-Za-z^~<>=*.,|+_ -]*$")
_USERINFO = re.compile(r"^oci://[^/@\s]+@")
_HTTP_REPO = re.compile(r"^https?://[^\s/?#]+(/\S*)?$")
# An OCI registry host (name, IPv4 or [IPv6], optional port) and repository path, whose
# components are lower-case as the distribution spec has them; no credentials, query or
# fragment. Argo CD also accepts the form without `oci://`.
_OCI_REPO = re.compile(
    rf"^(oci://)?({_LABEL_ANY}(\.{_LABEL_ANY})*|\[[0-9A-Fa-f:.]+\])(:\d{{1,5}})?"
    r"(/[a-z0-9]+([._-]+[a-z0-9]+)*)*/?$"
)
# `--set` keys: any character but '=', ',' and whitespace, each of which may be escaped.
_PARAMETER = re.compile(r"^(\\.|[^\\=,\s])+$")


def invalid_namespace(value: str) -> str | None:
    """Why `value` cannot be a namespace, or None when it can."""
    if len(value) > 63 or not _DNS_LABEL.match(value):
        return f"{_shown(value)} is not a valid namespace (a DNS-1123 label)"
    return None


def invalid_release_name(value: str) -> str | None:
    if len(value) > 53 or not _SUBDOMAIN.match(value):
        return (
            f"{_shown(value)} is not a valid Helm release name "
            "(lower-case letters, digits, '-' and '.', at most 53 characters)"
        )
    return None


def invalid_app_name(value: str) -> str | None:
    if len(value) > 253 or not _SUBDOMAIN.match(value):
        return f"{_shown(value)} is not a valid Application name (a DNS-1123 subdomain)"
    return None


def invalid_chart(value: str) -> str | None:
    if len(value) > 250 or not _CHART.match(value) or ".." in value.split("/"):
        return f"{_shown(value)} is not a chart name"
    return None


def invalid_chart_version(value: str) -> str | None:
    if len(value) > 128 or not _VERSION.match(value):
        return f"{_shown(value)} is not a chart version or version range"
    return None


def invalid_chart_repo(value: str) -> str | None:
    if len(value) <= 2048 and (_HTTP_REPO.match(value) or _OCI_REPO.match(value)):
        return None
    try:
        shown = _shown(redact_url(value))  # a password in the URL stays out of the message
    except ValueError:
        shown = "(an unreadable URL)"
    if len(value) > 2048:
        return f"{shown} is not a chart repository URL (over 2048 characters)"
    if _USERINFO.match(value):
        return f"{shown}: credentials do not belong in an OCI registry URL (not shown here)"
    if value.startswith("oci://") or "://" not in value:
        return (
            f"{shown} is not an OCI registry URL (oci://host[:port]/path, "
            "lower-case path, no credentials)"
        )
    return f"{shown} is not a chart repository URL (http, https or oci)"


def invalid_parameter_name(value: str) -> str | None:
    if len(value) > 1024 or not _PARAMETER.match(value):
        return f"{_shown(value)} is not a Helm parameter name (no unescaped '=', ',' or spaces)"
    return None


def _shown(value: str) -> str:
    return repr(value if len(value) <= 60 else value[:60] + "...")
