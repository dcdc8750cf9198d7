"""The `reconciler` command line.

Exit codes are part of the interface: 0 success, 1 some apps failed, 2 the
configuration (or the command line) is invalid, or another reconciler holds
the state; `run` exits 78 for both. A config that declares no apps is valid: the
commands say so on stderr and keep their codes. Per-app errors go to stderr, one
line each; results go to stdout. The commands that write the state (run, sync, check
--repin) hold its lock; render, status and check only read it, and diff only
reads it while the daemon holds it, so they run beside the daemon.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from reconciler import daemon, logs, requests, statedir, status
from reconciler.catalogue import build_catalogue, nothing_declared
from reconciler.config import Config, check_files, load_config
from reconciler.connect import check_connect
from reconciler.desired import build_desired, open_sources, shared_lines, tools_for
from reconciler.diff import drift_to_json, render_text
from reconciler.diff.redact import redact
from reconciler.documents import dump_yaml
from reconciler.errors import ConfigError, ReconcilerError
from reconciler.model import AppError, Manifest, SyncRequest
from reconciler.report import Report
from reconciler.requests import FINISHED, sync_output, violation_lines
from reconciler.session import (
    Session,
    apps_by_cluster,
    open_session,
    open_store,
    policies_for,
    settled,
)
from reconciler.statedir import StateLocked
from reconciler.store import RequestRecord

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2
EXIT_CONFIG = 78
DEFAULT_CONFIG = "/etc/reconciler/config.toml"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reconciler", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def command(
        name: str, text: str, description: str | None = None, scoped: bool = False
    ) -> argparse.ArgumentParser:
        """A subcommand with --config, and with --cluster/--app when `scoped`."""
        p = sub.add_parser(name, help=text, description=description or text)
        p.add_argument(
            "--config",
            type=Path,
            default=Path(os.environ.get("RECONCILER_CONFIG", DEFAULT_CONFIG)),
            help="config file (default: $RECONCILER_CONFIG or %(default)s)",
        )
        if scoped:
            p.add_argument("--cluster", help="only this cluster")
            p.add_argument("--app", help="only this app")
        return p

    check = command(
        "check",
        "validate the configuration and the policies, and exit",
        "Exit 0: all good; 1 (--connect): a repo, a cluster or a credential needs "
        "attention; 2: the configuration is invalid.",
    )
    check.add_argument(
        "--repin",
        metavar="CLUSTER",
        help="accept CLUSTER's current identity (after a deliberate rebuild or move)",
    )
    check.add_argument(
        "--connect",
        action="store_true",
        help="also read each repo's ref, reach each cluster, and list what its "
        "credentials allow (a report-mode cluster must not be writable)",
    )

    render = command(
        "render",
        "print the desired objects rendered from the committed trees",
        "Print desired objects. Secret values are replaced by markers.",
        scoped=True,
    )
    render.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml")
    render.add_argument(
        "--fetch",
        action="store_true",
        help="fetch the tracked refs first (default: last fetched commit)",
    )

    diff = command(
        "diff",
        "show drift between git and the live clusters (writes nothing)",
        "Exit 0: no drift; 1: drift; 2: errors. Secret values are never shown.",
        scoped=True,
    )
    diff.add_argument("-o", "--output", choices=("text", "json"), default="text")

    sync = command(
        "sync",
        "reconcile apply-mode clusters once: apply, then prune",
        "Exit 0: converged; 1: some objects failed; 2: errors that stopped it. "
        "A report-mode cluster is refused. Beside the running daemon, `--app A` is "
        "handed to the daemon, which syncs it and tells the result.",
        scoped=True,
    )
    sync.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    sync.add_argument(
        "--prune",
        action="store_true",
        help="with --app: prune too, confirming prunes the guard held back (as Argo CD's "
        "manual sync, a manual sync prunes only when asked)",
    )
    sync.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="beside the daemon: how long to wait for its result (default: %(default)ss)",
    )

    command(
        "run",
        "run the daemon: reconcile on every commit, live change and resync",
        "Exits 78 on a configuration error, before anything starts.",
    )

    status = command(
        "status",
        "what the daemon last saw, from its state store (works while it is down)",
        "Exit 0: all synced and healthy; 1: drift or errors; 2: state unreadable.",
    )
    status.add_argument("-o", "--output", choices=("table", "json"), default="table")
    status.add_argument(
        "--all", action="store_true", help="list every app, not only those that need attention"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # State, caches and tool output are private whatever umask the process started with.
    umask = os.umask(statedir.PRIVATE_UMASK)
    try:
        return _main(args)
    finally:
        os.umask(umask)


def _main(args: argparse.Namespace) -> int:
    if args.command != "run":
        # stdout carries a one-shot command's results (render's YAML, status JSON) and
        # stderr one line per problem; of the stages' structured logs only errors
        # (an internal error's traceback, a render sandbox without protection) join them.
        logs.configure("error", stream=sys.stderr)
    try:
        config = load_config(args.config)
        # The daemon and `check` also need every file the config names; one-shot
        # commands report an unusable cluster as that cluster's error and go on.
        if args.command in ("run", "check") and (problems := check_files(config)):
            raise ConfigError(problems)
        policies_for(config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        # systemd's RestartPreventExitStatus=78 (EX_CONFIG): a bad config is not retried.
        return EXIT_CONFIG if args.command == "run" else EXIT_INVALID
    if args.command in ("check", "render", "diff", "sync") and (empty := nothing_declared(config)):
        # Not an error (the exit code stays the command's own), but never silence.
        print(empty, file=sys.stderr)
    cluster = getattr(args, "cluster", None)
    if cluster and config.cluster(cluster) is None:
        names = ", ".join(c.name for c in config.clusters)
        print(f"unknown cluster {cluster!r} (configured: {names})", file=sys.stderr)
        return EXIT_INVALID
    command: Command = {
        "check": _check,
        "render": _render,
        "diff": _diff,
        "sync": _sync,
        "run": _run,
        "status": _status,
    }[args.command]
    try:
        return command(config, args)
    except ReconcilerError as exc:
        # Expected failures (unreadable state store, unusable cluster) end with a message.
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID


def _run(config: Config, _args: argparse.Namespace) -> int:
    # What the imports and the configuration made lives as long as the daemon: the
    # cyclic collector need not walk it again at each full collection, of which a start
    # that reads thousands of objects makes several.
    gc.freeze()
    try:
        with statedir.exclusive(config.state_dir):
            return daemon.run(config)
    except statedir.StateLocked as exc:
        print(f"reconciler run: {exc}; one daemon per state directory", file=sys.stderr)
        return EXIT_CONFIG
    except statedir.StateDirError as exc:
        # state_dir cannot be used (permissions, a file in its place): restarting won't help.
        print(f"reconciler run: {exc}", file=sys.stderr)
        return EXIT_CONFIG


Command = Callable[[Config, argparse.Namespace], int]


def _writer(command: str) -> Callable[[Command], Command]:
    """Run a command that writes the state under its lock; refused while another holds it
    (the daemon reconciles by itself: every commit, live change and resync)."""

    def wrap(function: Command) -> Command:
        def locked(config: Config, args: argparse.Namespace) -> int:
            try:
                with statedir.exclusive(config.state_dir):
                    return function(config, args)
            except statedir.StateLocked as exc:
                print(
                    f"{command} refused: {exc}. The running daemon reconciles by itself; "
                    "stop it to do this by hand, or use `reconciler diff` / `status`",
                    file=sys.stderr,
                )
                return EXIT_INVALID

        return locked

    return wrap


def _check(config: Config, args: argparse.Namespace) -> int:
    if args.repin:
        return _repin(config, args)
    print(
        f"{config.file}: ok ({len(config.repos)} repos, {len(config.clusters)} clusters, "
        f"{len(config.apps)} declared apps)"
    )
    if args.connect:
        return check_connect(settled(config)[0])
    return EXIT_OK


@_writer("check --repin")
def _repin(config: Config, args: argparse.Namespace) -> int:
    cluster = args.repin
    if config.cluster(cluster) is None:
        print(f"unknown cluster {cluster!r}", file=sys.stderr)
        return EXIT_INVALID
    session = open_session(config, {cluster})
    try:
        if cluster in session.broken:
            print(session.broken[cluster], file=sys.stderr)
            return EXIT_INVALID
        engine = session.engines[cluster]
        identity = engine.client.identity()
        previous = session.store.pinned_identity(cluster)
        session.store.pin_identity(cluster, identity)
        print(f"cluster {cluster}: identity {identity} pinned (was {previous or 'unpinned'})")
        return EXIT_OK
    finally:
        session.close()


def _render(config: Config, args: argparse.Namespace) -> int:
    sources = open_sources(config, fetch=args.fetch)
    for line in (*sources.notes, *sources.problems.values()):
        print(line, file=sys.stderr)

    clusters = {args.cluster} if args.cluster else None
    if args.app:
        catalogue = build_catalogue(config, sources.trees, sources.urls)
        app = next((a for a in catalogue.apps if a.name == args.app), None)
        broken = [e for e in catalogue.errors if e.app == args.app]
        if broken:
            for error in broken:
                print(error, file=sys.stderr)
            return EXIT_FAILED
        if app is not None:
            # The app's whole cluster is rendered: duplicates and CRD scopes span apps.
            clusters = {app.cluster} if clusters is None or app.cluster in clusters else set()
        # Otherwise it may be an app another app renders (app-of-apps): render to know.

    desired = build_desired(config, sources, tools_for(config), clusters)
    errors = [e for e in desired.errors if args.app in (None, e.app)]
    if args.app and not errors and all(a.name != args.app for a in desired.catalogue.apps):
        count = len(desired.catalogue.apps)
        print(f"unknown app {args.app!r} ({count} apps in the catalogue)", file=sys.stderr)
        return EXIT_INVALID
    for line in [*map(str, errors), *shared_lines(desired.clusters.values(), args.app)]:
        print(line, file=sys.stderr)
    selected = [
        (name, m)
        for name, cluster in desired.clusters.items()
        for m in cluster.manifests
        if args.app in (None, m.origin.app)
    ]
    sys.stdout.write(_format(selected, args.output))
    return EXIT_FAILED if errors or sources.problems else EXIT_OK


def _format(selected: list[tuple[str, Manifest]], output: str) -> str:
    if output == "json":
        rows = [
            {
                "cluster": cluster,
                "app": m.origin.app,
                "repo": m.origin.repo,
                "commit": m.origin.commit,
                "path": m.origin.path,
                "object": redact(m.obj),
            }
            for cluster, m in selected
        ]
        return json.dumps(rows, indent=2) + "\n"
    return dump_yaml([redact(m.obj) for _, m in selected]) if selected else ""


def _selected(config: Config, args: argparse.Namespace) -> list[str]:
    return [c.name for c in config.clusters if args.cluster in (None, c.name)]


def _diff(config: Config, args: argparse.Namespace) -> int:
    """With the state free, diff keeps its in-sync verdicts there (a second diff then
    sends no dry-run); beside the daemon, which holds the state, it only reads it."""
    try:
        with statedir.exclusive(config.state_dir):
            return _compare(config, args, readonly=False)
    except statedir.StateDirError:  # held by the daemon, or not ours to write
        return _compare(config, args, readonly=True)


def _compare(config: Config, args: argparse.Namespace, *, readonly: bool) -> int:
    session = open_session(config, _selected(config, args), readonly=readonly)
    try:
        desired = session.render(list(session.engines))
        session.record_repos(desired)
        apps = apps_by_cluster(desired)
        failed = _print_errors(session, _unplaced(desired.errors), args.app)
        for line in shared_lines(desired.clusters.values(), args.app):
            print(line, file=sys.stderr)
        drifted = False
        rows: list[dict[str, Any]] = []
        colour = args.output == "text" and sys.stdout.isatty()
        for name, engine in session.engines.items():
            report = engine.drift(desired.clusters[name], apps.get(name, []), args.app)
            failed |= _print_errors(session, report.errors, args.app)
            drifted |= bool(report.drifts)
            for app, drift in report.drifts:
                if args.output == "json":
                    rows.append(drift_to_json(drift, cluster=name, app=app))
                else:
                    sys.stdout.write(render_text(drift, cluster=name, app=app, colour=colour))
            for line in violation_lines(report, args.app):
                print(line, file=sys.stderr)
            for line in _argocd_comparison(report, args.app):
                print(line, file=sys.stderr)
        if args.output == "json":
            print(json.dumps(rows, indent=2, default=str))
        if failed:
            return EXIT_INVALID
        return EXIT_FAILED if drifted else EXIT_OK
    finally:
        session.close()


def _argocd_comparison(report: Report, only_app: str | None) -> list[str]:
    """Argo CD's own view of each Application beside the reconciler's, and where they part."""
    drift_by_app = Counter(app for app, _ in report.drifts)
    lines = []
    for app, argo in sorted(report.argocd.items()):
        if only_app not in (None, app):
            continue
        ours = "OutOfSync" if drift_by_app[app] else "Synced"
        verdict = "" if argo.sync in (None, ours) else "  <- they disagree"
        lines.append(
            f"{report.cluster}/{app}: reconciler {ours} ({drift_by_app[app]} drifted), "
            f"Argo CD {argo.sync or 'unknown'}/{argo.health or 'unknown'}{verdict}"
        )
    return lines


def _sync(config: Config, args: argparse.Namespace) -> int:
    """Sync by itself with the state free; beside the running daemon, which holds it,
    `sync --app A` becomes a request the daemon carries out (reconciler.requests)."""
    if args.prune and not args.app:
        print("sync: --prune confirms the prunes of one app: give --app", file=sys.stderr)
        return EXIT_INVALID
    try:
        with statedir.exclusive(config.state_dir):
            return _sync_here(config, args)
    except statedir.StateLocked as exc:
        if args.app and not args.dry_run:
            return _sync_by_daemon(config, args, exc)
        print(
            f"sync refused: {exc}. The running daemon reconciles by itself; "
            "`reconciler sync --app A` asks it to sync one app now, "
            "or use `reconciler diff` / `status`",
            file=sys.stderr,
        )
        return EXIT_INVALID


def _sync_here(config: Config, args: argparse.Namespace) -> int:
    config, _ = settled(config)
    report_only = [
        c.name for c in config.clusters if args.cluster in (None, c.name) and c.mode == "report"
    ]
    if args.cluster and report_only:
        print(requests.report_only(args.cluster), file=sys.stderr)
        return EXIT_INVALID
    targets = [name for name in _selected(config, args) if name not in report_only]
    session = open_session(config, targets)
    try:
        desired = session.render(list(session.engines))
        session.record_repos(desired)
        apps = apps_by_cluster(desired)
        stopped = _print_errors(session, _unplaced(desired.errors), args.app)
        requested, departed = None, {}
        if args.app:
            departed = session.departed(desired.catalogue)
            refusal = requests.refusal(
                desired.catalogue, args.app, report_only, args.cluster, departed
            )
            if refusal:
                print(refusal, file=sys.stderr)
                return EXIT_INVALID
            requested = {args.app: SyncRequest(prune=args.prune)}
        failed = False
        for name, engine in session.engines.items():
            if args.app and requests.home_cluster(desired.catalogue, args.app, departed) != name:
                continue  # the app's own cluster only: the lines a request to the daemon gets
            engine.pin_identity()
            report = engine.reconcile(
                desired.clusters[name],
                apps.get(name, []),
                dry_run=args.dry_run,
                only=None if args.app is None else {args.app},
                requested=requested,
            )
            output = sync_output(report, args.app)
            stopped |= _print_errors(session, (), args.app)
            for line in output.err:
                print(line, file=sys.stderr)
            for line in output.out:
                print(line)
            stopped |= output.stopped
            failed |= output.failed
        if stopped:
            return EXIT_INVALID
        return EXIT_FAILED if failed else EXIT_OK
    finally:
        session.close()


def _sync_by_daemon(config: Config, args: argparse.Namespace, held: StateLocked) -> int:
    """Hand `sync --app A` to the running daemon and print what it did, as a direct sync."""
    try:
        request = requests.submit(config.state_dir, args.app, args.prune, args.cluster)
    except requests.SpoolError as exc:
        print(f"sync --app {args.app}: {exc}", file=sys.stderr)
        return EXIT_INVALID
    print(
        f"sync of {args.app} requested from the running daemon "
        f"(pid {held.pid or 'unknown'}); request {request.id}",
        file=sys.stderr,
    )
    deadline = time.monotonic() + args.timeout
    store = open_store(config, readonly=True)
    try:
        while (record := store.request(request.id)) is None or record.state not in FINISHED:
            if time.monotonic() >= deadline:
                return _sync_timed_out(config, args, request.id, record)
            time.sleep(0.25)
    finally:
        store.close()
    for line in record.output:
        stream, _, text = line.partition(": ")
        print(text, file=sys.stderr if stream == "err" else sys.stdout)
    return record.exit_code if record.exit_code is not None else EXIT_INVALID


def _sync_timed_out(
    config: Config, args: argparse.Namespace, request_id: str, record: RequestRecord | None
) -> int:
    if requests.withdraw(config.state_dir, request_id):
        print(
            f"the daemon did not take the request within {args.timeout:.0f}s; withdrawn",
            file=sys.stderr,
        )
    else:
        state = record.state if record else "taken"
        print(
            f"request {request_id} is {state} but not finished after {args.timeout:.0f}s; "
            "its result will show in `reconciler status`",
            file=sys.stderr,
        )
    return EXIT_INVALID


def _status(config: Config, args: argparse.Namespace) -> int:
    try:
        store = open_store(config, readonly=True)
        try:
            document = status.gather(config, store)
        finally:
            store.close()
    except ReconcilerError as exc:
        print(f"state unreadable: {exc}", file=sys.stderr)
        return EXIT_INVALID
    if args.output == "json":
        print(json.dumps(document, indent=2))
    else:
        sys.stdout.write(status.table(document, all_apps=args.all))
    return EXIT_OK if status.healthy(document) else EXIT_FAILED


def _unplaced(errors: Iterable[AppError]) -> list[AppError]:
    """Errors no cluster's report carries (an app whose destination is unknown, say)."""
    return [e for e in errors if e.cluster is None]


def _print_errors(session: Session, errors: Iterable[object], only_app: str | None) -> bool:
    """Print per-app errors (and clusters that could not be set up); True if any."""
    shown = False
    for name, problem in session.broken.items():
        print(f"cluster {name}: {problem}", file=sys.stderr)
        shown = True
    session.broken.clear()
    for error in errors:
        app = getattr(error, "app", None)
        if only_app is None or app in (only_app, "", None):
            print(error, file=sys.stderr)
            shown = True
    return shown


if __name__ == "__main__":
    sys.exit(main())
