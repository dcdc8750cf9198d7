"""The one backoff for a request that failed for now (a transient ClusterError).

Writes (reconciler.execute) and dry-runs (reconciler.dryruns) both retry a
connection reset or a 5xx a few times before the failure becomes the object's
error; one schedule here keeps them retrying alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from reconciler.cluster.errors import ClusterError

T = TypeVar("T")

# The pauses before each retry of a transient failure; after the last, it is the answer.
RETRY_PAUSES_S = (0.5, 1.0, 2.0)


def retrying(call: Callable[[], T]) -> T:
    """`call`, retried after each of RETRY_PAUSES_S while the cluster reports a
    transient failure."""
    for pause in RETRY_PAUSES_S:
        try:
            return call()
        except ClusterError as exc:
            if not exc.transient:
                raise
            time.sleep(pause)
    return call()
