"""A reconciler config.toml (and lab Applications) for the local clusters: one writer
for tests, bench and demo.

Each cluster entry uses the cluster's reconciler identity and maps it to the API
URL that the repositories' Applications name it by; the tables passed in
(`[daemon]`, `[render]`, `[logs]`, `[notify.matrix]`) are written as given.
`open_room` makes the Matrix room a `[notify.matrix]` table points at, on a test
homeserver (testenv/matrix.py), and reads back what the reconciler posted there.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testenv.clusters import Cluster
from testenv.matrix import Account, Homeserver


@dataclass(frozen=True)
class Repo:
    name: str
    clone: Path
    url: str
    apps: str = "apps"  # where its Application manifests live


@dataclass(frozen=True)
class Target:
    """A cluster as the config names it: mode, credentials, destination URL."""

    name: str
    report_only: bool
    kubeconfig: Path
    server: str


def application(name: str, repo_url: str, path: str, server: str, namespace: str) -> dict[str, Any]:
    """An Argo CD Application of a lab repo: one path, synced automatically, with prune."""
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": name, "namespace": "argocd"},
        "spec": {
            "project": "default",
            "source": {"repoURL": repo_url, "path": path, "targetRevision": "main"},
            "destination": {"server": server, "namespace": namespace},
            "syncPolicy": {
                "automated": {"prune": True, "selfHeal": True},
                "syncOptions": ["CreateNamespace=true"],
            },
        },
    }


@dataclass(frozen=True)
class Room:
    """A room on `server` the reconciler's bot has joined, owned by `owner`, the one
    person allowed to approve."""

    server: Homeserver
    room_id: str
    bot: Account
    owner: Account

    def table(self, token_file: Path, **settings: Any) -> dict[str, Any]:
        """The `[notify.matrix]` table for the bot, plus `settings`. Its token goes to
        `token_file` only, readable by its owner alone (the config refuses anything else)."""
        token_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(self.bot.token + "\n")
        token_file.chmod(0o600)  # an existing file keeps its mode through os.open
        return {
            "homeserver": self.server.url,
            "room_id": self.room_id,
            "token_file": token_file,
            "ca_file": self.server.ca_file,
            "approvers": [self.owner.user_id],
            **settings,
        }

    def messages(self) -> list[str]:
        """The bodies of the bot's messages, oldest first, read back from the homeserver
        as the owner sees them."""
        return [
            str(e["content"].get("body", ""))
            for e in self.server.messages(self.owner.token, self.room_id)
            if e["sender"] == self.bot.user_id and e["type"] == "m.room.message"
        ]


def open_room(server: Homeserver, bot: str = "reconciler", owner: str = "owner") -> Room:
    """New `bot` and `owner` accounts on `server`, and a room of the owner's the bot joined."""
    bot_account, owner_account = server.register(bot), server.register(owner)
    room_id = server.create_room(owner_account.token, invite=[bot_account.user_id])
    server.join(bot_account.token, room_id)
    return Room(server, room_id, bot_account, owner_account)


def targets(clusters: Iterable[Cluster], servers: Mapping[str, str]) -> list[Target]:
    """The running clusters, with their reconciler identities, named by `servers`."""
    return [
        Target(c.name, c.report_only, c.reconciler_kubeconfig, servers[c.name]) for c in clusters
    ]


def _value(value: Any) -> str:
    # JSON strings, numbers, booleans and lists of them are valid TOML values.
    return json.dumps(str(value) if isinstance(value, Path) else value)


def write_config(
    path: Path,
    repos: Iterable[Repo],
    targets: Iterable[Target],
    tables: Mapping[str, Mapping[str, Any]],
) -> Path:
    lines: list[str] = []
    for table, values in tables.items():
        lines.append(f"[{table}]")
        # A key that is not a bare TOML key (a URL in [render.chart_mirrors]) is quoted.
        lines += [
            f"{key if re.fullmatch(r'[A-Za-z0-9_-]+', key) else _value(key)} = {_value(value)}"
            for key, value in values.items()
        ]
    for repo in repos:
        lines += [
            "[[repos]]",
            f"name = {_value(repo.name)}",
            f"path = {_value(repo.clone)}",
            f"url = {_value(repo.url)}",
            f"apps = {_value([repo.apps])}",
        ]
    for t in targets:
        lines += [
            "[[clusters]]",
            f"name = {_value(t.name)}",
            f"mode = {_value('report' if t.report_only else 'apply')}",
            f"argocd = {_value(t.report_only)}",
            f"kubeconfig = {_value(t.kubeconfig)}",
            f"servers = {_value([t.server])}",
        ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path
