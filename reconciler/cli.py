"""The `reconciler` command line.

Exit codes are part of the interface: 0 success, 1 some apps failed, 2 the
configuration (or the command line) is invalid. Per-app errors go to stderr,
one line each; results go to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from reconciler.catalogue import build_catalogue
from reconciler.config import Config, load_config
from reconciler.desired import build_desired, open_sources, tools_for
from reconciler.diff.redact import redact
from reconciler.documents import dump_yaml
from reconciler.errors import ConfigError
from reconciler.model import Manifest

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2
DEFAULT_CONFIG = "/etc/reconciler/config.toml"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reconciler", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--config",
            type=Path,
            default=Path(os.environ.get("RECONCILER_CONFIG", DEFAULT_CONFIG)),
            help="config file (default: $RECONCILER_CONFIG or %(default)s)",
        )

    check = sub.add_parser("check", help="validate the configuration and exit")
    with_config(check)

    render = sub.add_parser(
        "render",
        help="print the desired objects rendered from the committed trees",
        description="Print desired objects. Secret values are replaced by markers.",
    )
    with_config(render)
    render.add_argument("--cluster", help="only this cluster")
    render.add_argument("--app", help="only this app")
    render.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml")
    render.add_argument(
        "--fetch",
        action="store_true",
        help="fetch the tracked refs first (default: last fetched commit)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_INVALID
    if args.command == "check":
        print(
            f"{config.file}: ok ({len(config.repos)} repos, {len(config.clusters)} clusters, "
            f"{len(config.apps)} declared apps)"
        )
        return EXIT_OK
    return _render(config, args)


def _render(config: Config, args: argparse.Namespace) -> int:
    if args.cluster and config.cluster(args.cluster) is None:
        names = ", ".join(c.name for c in config.clusters)
        print(f"unknown cluster {args.cluster!r} (configured: {names})", file=sys.stderr)
        return EXIT_INVALID
    sources = open_sources(config, fetch=args.fetch)
    for line in (*sources.notes, *sources.problems):
        print(line, file=sys.stderr)

    clusters = {args.cluster} if args.cluster else None
    if args.app:
        catalogue = build_catalogue(config, sources.trees, sources.urls)
        app = next((a for a in catalogue.apps if a.name == args.app), None)
        if app is None:
            broken = [e for e in catalogue.errors if e.app == args.app]
            for error in broken:
                print(error, file=sys.stderr)
            if broken:
                return EXIT_FAILED
            print(
                f"unknown app {args.app!r} ({len(catalogue.apps)} apps in the catalogue)",
                file=sys.stderr,
            )
            return EXIT_INVALID
        # The app's whole cluster is rendered: duplicates and CRD scopes span apps.
        clusters = {app.cluster} if clusters is None or app.cluster in clusters else set()

    desired = build_desired(config, sources, tools_for(config), clusters)
    errors = [e for e in desired.errors if args.app in (None, e.app)]
    for error in errors:
        print(error, file=sys.stderr)
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


if __name__ == "__main__":
    sys.exit(main())
