"""Over the whole test run, prod's audit log shows no write by the reconciler identity.

This module must run after every other test that touches the session's clusters.
It relies on pytest's default collection order: `tests/desired`, then
`tests/integration` (files alphabetically, so `test_zz_*` last in this
directory), then `tests/unit` (which never starts the clusters). If a test
directory sorting after `integration` ever uses the `clusters` fixture, or
tests are reordered (pytest-randomly, -p xdist), move or rename this module.

The one write allowed is the deliberately refused `create namespaces` (403) of
tests/integration/test_testenv_smoke.py, which proves RBAC refuses prod writes.
"""

from __future__ import annotations

from testenv.clusters import RECONCILER_USER, WRITE_VERBS, ClusterSet


def test_prod_audit_log_shows_no_write_by_the_reconciler(clusters: ClusterSet) -> None:
    prod = clusters["prod"]
    events = prod.requests_by(RECONCILER_USER)
    assert events, "the reconciler identity read prod during the run"
    writes = [e for e in events if e.verb in WRITE_VERBS]
    accepted = [f"{e.verb} {e.uri} -> {e.code}" for e in writes if e.code < 400]
    assert accepted == [], "prod accepted writes from the reconciler:\n" + "\n".join(accepted)
    others = [
        f"{e.verb} {e.uri} -> {e.code}"
        for e in writes
        if not (e.verb == "create" and e.resource == "namespaces" and e.code == 403)
    ]
    assert others == [], "the reconciler sent writes to prod:\n" + "\n".join(others)
    assert len(writes) <= 1, "only the smoke test's one refused create"
