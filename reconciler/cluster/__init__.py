"""Everything that talks to a Kubernetes API, and the only package that may.

Keeping the `kubernetes` library behind this boundary gives the report-mode
guard and the cluster-identity check a single place to live; the rest of the
reconciler sees plain dicts and the types of `reconciler.model`.
"""

from reconciler.cluster.cache import CacheStats, LiveCache
from reconciler.cluster.client import (
    ClusterClient,
    ObjectList,
    WatchEvent,
    WatchStream,
)
from reconciler.cluster.discovery import Resource
from reconciler.cluster.errors import (
    ClusterError,
    Conflict,
    Forbidden,
    Gone,
    IdentityMismatch,
    Invalid,
    KubeconfigError,
    NotFound,
    NotSynced,
    ServerError,
    Throttled,
    UnknownKind,
    Unreachable,
    WriteRefused,
)
from reconciler.cluster.retry import RETRY_PAUSES_S, retrying

__all__ = [
    "RETRY_PAUSES_S",
    "CacheStats",
    "ClusterClient",
    "ClusterError",
    "Conflict",
    "Forbidden",
    "Gone",
    "IdentityMismatch",
    "Invalid",
    "KubeconfigError",
    "LiveCache",
    "NotFound",
    "NotSynced",
    "ObjectList",
    "Resource",
    "ServerError",
    "Throttled",
    "UnknownKind",
    "Unreachable",
    "WatchEvent",
    "WatchStream",
    "WriteRefused",
    "retrying",
]
