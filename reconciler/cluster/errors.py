"""What can go wrong talking to a cluster, as exceptions a caller can act on.

The engine decides per error class: retry (transient), record per object
(NotFound, Conflict, Invalid, UnknownKind) or stop writing to a cluster
(WriteRefused, IdentityMismatch). Every message names the cluster and the
object or kind; none carries object contents or the API server's own message,
which may echo a rejected object's values (Secret data included).
"""

from __future__ import annotations

from reconciler.errors import ReconcilerError
from reconciler.model import ObjectRef


class ClusterError(ReconcilerError):
    """A request to one cluster failed."""

    transient = False

    def __init__(self, cluster: str, message: str, ref: ObjectRef | None = None) -> None:
        self.cluster = cluster
        self.ref = ref
        super().__init__(f"cluster {cluster}: {message}")


class KubeconfigError(ClusterError):
    """The kubeconfig cannot be used: unreadable, unknown context, or not verifying TLS."""


class Unreachable(ClusterError):
    """No answer: connection refused or reset, timeout, or a TLS handshake that failed."""

    transient = True


class ServerError(ClusterError):
    """The API server answered but could not serve the request now (429, 5xx)."""

    transient = True


class Throttled(ServerError):
    """The API server refused the request for now (429, e.g. API Priority and Fairness);
    `retry_after` is how long it asked the client to wait, in seconds, when it said."""

    def __init__(
        self, cluster: str, message: str, ref: ObjectRef | None, retry_after: float | None
    ) -> None:
        self.retry_after = retry_after
        super().__init__(cluster, message, ref)


class Forbidden(ClusterError):
    """The credentials were rejected (401) or lack the permission (403)."""


class NotFound(ClusterError):
    """The object does not exist."""


class Conflict(ClusterError):
    """A server-side apply conflict or a failed precondition; `fields` names what conflicted."""

    def __init__(
        self, cluster: str, message: str, ref: ObjectRef | None, fields: tuple[str, ...]
    ) -> None:
        self.fields = fields
        super().__init__(cluster, message, ref)


class Invalid(ClusterError):
    """The API server rejected the object (400, 422); `fields` names the offending paths."""

    def __init__(
        self, cluster: str, message: str, ref: ObjectRef | None, fields: tuple[str, ...]
    ) -> None:
        self.fields = fields
        super().__init__(cluster, message, ref)


class Gone(ClusterError):
    """A resourceVersion is too old to watch from (410): the only remedy is a fresh list."""


class UnknownKind(ClusterError):
    """The cluster does not serve this kind (yet): typically a CRD not installed."""


class WriteRefused(ClusterError):
    """The client refused to send a write; nothing reached the cluster."""


class IdentityMismatch(WriteRefused):
    """The cluster is not the one pinned for this name, so nothing is written to it."""


class NotSynced(ClusterError):
    """The live cache cannot answer for this kind yet: not tracked or not listed."""
