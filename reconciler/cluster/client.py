"""One cluster's API, as plain dicts: the only place that sends requests to a cluster.

Built on the official client's ApiClient for kubeconfig handling (contexts,
exec plugins, client certificates) and its connection pool, but exchanging raw
JSON rather than the generated models, which cost time and memory on large
lists and drop fields of custom resources.

Two guards live here, because every request passes through here:
- report mode (invariant 2): the client of a report-only cluster never sends
  a request other than GET/HEAD, dry-run included; a server-side dry-run is
  a PATCH and is audited as a write, so it is refused like any other. The one
  exception is a POST of a SelfSubjectRulesReview (`check --connect`): a
  question the authorizer answers, which the server never stores;
- cluster identity: an apply-mode client given a pinned identity (the
  kube-system namespace UID) writes nothing until the cluster proves it is
  that one, so a kubeconfig mix-up cannot write one cluster's state to another.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import urllib3
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from reconciler.cluster.discovery import AGGREGATED_DISCOVERY, Discovery, Resource
from reconciler.cluster.errors import (
    ClusterError,
    Conflict,
    Forbidden,
    Gone,
    IdentityMismatch,
    Invalid,
    KubeconfigError,
    NotFound,
    ServerError,
    Throttled,
    UnknownKind,
    Unreachable,
    WriteRefused,
)
from reconciler.model import FIELD_MANAGER, Capabilities, GroupKind, Mode, ObjectRef, object_ref

READ_METHODS = frozenset({"GET", "HEAD"})
RULES_REVIEW_PATH = "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews"
REQUEST_TIMEOUT = (5.0, 30.0)  # (connect, read) seconds
CAPABILITIES_MAX_AGE = 60.0  # seconds a cluster's helm capabilities are reused
log = logging.getLogger(__name__)
# Every watch holds a connection for its lifetime; the pool must not discard them.
# Requests sent side by side (ClusterClient's `parallel`) get connections of their own.
MAX_CONNECTIONS = 128
_JSON = "application/json"
Query = list[tuple[str, str]]


@dataclass(frozen=True)
class ObjectList:
    """All objects of one kind and the resourceVersion to watch them from."""

    items: list[dict[str, Any]]
    resource_version: str


@dataclass(frozen=True)
class WatchEvent:
    """ADDED, MODIFIED, DELETED or BOOKMARK (whose object carries only a resourceVersion)."""

    type: str
    object: dict[str, Any]


def status_error(
    cluster: str,
    code: int,
    status: Mapping[str, Any],
    what: str,
    ref: ObjectRef | None = None,
    retry_after: float | None = None,
) -> ClusterError:
    """The exception for a failed request, from its HTTP code and Status body (and the
    Retry-After of a 429).

    The Status `message` is never used: for a rejected object it may quote the
    object's values. Its reason and the paths of its causes are enough to act on.
    """
    reason = status.get("reason") or "Failure"
    causes = (status.get("details") or {}).get("causes") or ()
    fields = tuple(str(c["field"]) for c in causes if c.get("field"))
    message = f"{what}: {reason} (HTTP {code})"
    if code == 409:
        # A field manager conflict names the manager holding each field, never a value.
        conflicts = tuple(
            f"{c.get('field', '')} ({c.get('message', '')})"
            for c in causes
            if c.get("reason") == "FieldManagerConflict"
        )
        detail = f"; conflicts: {', '.join(conflicts)}" if conflicts else ""
        return Conflict(cluster, message + detail, ref, conflicts)
    if fields:
        message += f" at {', '.join(fields)}"
    if code in (400, 422):
        return Invalid(cluster, message, ref, fields)
    if code in (401, 403):
        return Forbidden(cluster, message, ref)
    if code == 404:
        return NotFound(cluster, message, ref)
    if code == 410:
        return Gone(cluster, message, ref)
    if code == 429:
        return Throttled(cluster, message, ref, retry_after)
    if code >= 500:
        return ServerError(cluster, message, ref)
    return ClusterError(cluster, message, ref)


def retry_after_s(header: str | None) -> float | None:
    """A Retry-After header's delay in seconds; None when absent or not a number of
    seconds (an HTTP date: the API server never sends one)."""
    try:
        return max(0.0, float(header)) if header is not None else None
    except ValueError:
        return None


def _transport_failure(exc: urllib3.exceptions.HTTPError) -> str:
    cause = exc.reason if isinstance(exc, urllib3.exceptions.MaxRetryError) else exc
    if isinstance(cause, urllib3.exceptions.SSLError):
        return f"TLS failure ({cause})"
    if isinstance(cause, urllib3.exceptions.NewConnectionError):
        return "cannot connect"
    if isinstance(cause, urllib3.exceptions.TimeoutError):
        return "timed out"
    return type(cause).__name__


class _ReadOnlyTransport:
    """Takes the place of a report-mode ApiClient's REST client, through which every
    request goes, and refuses any method that could change state before it is sent."""

    def __init__(self, inner: Any, cluster: str) -> None:
        self._inner = inner
        self._cluster = cluster

    def request(self, method: str, url: str, **kwargs: Any) -> Any:
        question = method.upper() == "POST" and urlsplit(url).path == RULES_REVIEW_PATH
        if method.upper() not in READ_METHODS and not question:
            raise WriteRefused(
                self._cluster,
                f"report-only cluster: refused to send {method.upper()} {urlsplit(url).path}",
            )
        return self._inner.request(method, url, **kwargs)

    def close(self) -> None:
        self._inner.close()


class _ExecPluginOutput(logging.Filter):
    """The kubernetes client reports a failed kubeconfig exec plugin with
    `logging.error` on the root logger, quoting the plugin's stderr, which can hold
    a token or a password: keep that it failed (and its exit status), drop what it said."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.funcName == "_load_from_exec_plugin" and record.module == "kube_config":
            said = record.getMessage()
            status = said.split(". ", 1)[0] if said.startswith("exec: process returned") else ""
            record.msg = f"kubeconfig exec plugin failed ({status or 'output withheld'})"
            record.args = None
        return True


# On the root logger itself: that is where the client logs, whatever handlers are set.
logging.getLogger().addFilter(_ExecPluginOutput())


def _load_configuration(cluster: str, kubeconfig: Path, context: str | None) -> Any:
    configuration = k8s.Configuration()
    try:
        k8s_config.load_kube_config(
            config_file=str(kubeconfig),
            context=context,
            client_configuration=configuration,
            persist_config=False,
        )
    except yaml.YAMLError as exc:
        # YAML errors quote the offending line, which may hold a token.
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise KubeconfigError(cluster, f"{kubeconfig}: not valid YAML{where}") from None
    except (ConfigException, OSError) as exc:
        raise KubeconfigError(cluster, f"{kubeconfig}: {exc}") from None
    if not configuration.verify_ssl:
        raise KubeconfigError(
            cluster,
            f"{kubeconfig}: insecure-skip-tls-verify is set; the reconciler always verifies "
            "the API server's certificate (set certificate-authority instead)",
        )
    if not str(configuration.host).startswith("https://"):
        raise KubeconfigError(cluster, f"{kubeconfig}: the server is not an https:// URL")
    # Retrying is the caller's decision (the cache backs off, the engine retries transient
    # errors), so a dead server is reported at once rather than after silent retries.
    configuration.retries = 0
    # TCP keepalive notices a silently dead peer under a long-lived watch.
    configuration.keep_alive = True
    return configuration


class WatchStream:
    """The events of one watch request as they arrive; `close()` from any thread ends it."""

    def __init__(self, cluster: str, gk: GroupKind, response: Any) -> None:
        self._cluster = cluster
        self._gk = gk
        self._response = response
        self._closed = threading.Event()

    def __iter__(self) -> Iterator[WatchEvent]:
        what = f"watch {self._gk}"
        try:
            for line in self._response:
                if not line.strip():
                    continue
                event = json.loads(line)
                if event["type"] == "ERROR":
                    status = event.get("object") or {}
                    raise status_error(self._cluster, int(status.get("code", 500)), status, what)
                yield WatchEvent(event["type"], event["object"])
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            if not self._closed.is_set():
                raise Unreachable(
                    self._cluster, f"{what}: stream broken ({type(exc).__name__})"
                ) from exc
        finally:
            self._response.close()

    def close(self) -> None:
        self._closed.set()
        # shutdown() wakes a reader blocked in recv(); close() alone would not.
        with contextlib.suppress(ValueError, RuntimeError, OSError):
            self._response.shutdown()


class ClusterClient:
    """One configured cluster: discovery, reads, watches, server-side apply and delete."""

    def __init__(
        self,
        name: str,
        kubeconfig: Path,
        *,
        context: str | None = None,
        mode: Mode = "apply",
        pinned_identity: str | None = None,
        parallel: int = 1,
    ) -> None:
        """`parallel`: how many requests (besides watches) callers send at once; the
        connection pool keeps a connection for each."""
        self.name = name
        self.mode: Mode = mode
        self._pinned_identity = pinned_identity
        self._identity_verified = False
        configuration = _load_configuration(name, kubeconfig, context)
        configuration.connection_pool_maxsize = MAX_CONNECTIONS + parallel
        self.server: str = configuration.host
        self._api = k8s.ApiClient(configuration)
        self._api.user_agent = "reconciler"
        if self.report_only:
            self._api.rest_client = _ReadOnlyTransport(self._api.rest_client, name)
        self._discovery = Discovery(name, self._discovery_document)
        self._capabilities: tuple[float | None, Capabilities | None] = (None, None)
        self._capabilities_lock = threading.Lock()

    @property
    def report_only(self) -> bool:
        return self.mode != "apply"

    def close(self) -> None:
        self._api.close()

    # -- reads ---------------------------------------------------------------

    def resource(self, group: str, kind: str) -> Resource:
        """How the cluster serves a kind; raises UnknownKind (after a refresh) if it does not."""
        return self._discovery.resource(GroupKind(group, kind))

    def get(self, ref: ObjectRef) -> dict[str, Any]:
        resource = self.resource(ref.group, ref.kind)
        return self._json("GET", resource.path(ref.namespace, ref.name), f"get {ref}", ref)

    def list(self, group: str, kind: str) -> ObjectList:
        """Every object of a kind, across namespaces, read in pages of one consistent snapshot."""
        gk = GroupKind(group, kind)
        resource = self.resource(group, kind)
        items: list[dict[str, Any]] = []
        page: dict[str, Any] = {"metadata": {}}
        while True:
            query = [("limit", "500")]
            if token := page["metadata"].get("continue"):
                query.append(("continue", token))
            page = self._json("GET", resource.path(), f"list {gk}", query=query, kind=gk)
            page.setdefault("metadata", {})
            items.extend(page.get("items") or ())
            if not page["metadata"].get("continue"):
                break
        # Items of a built-in list carry no apiVersion/kind; callers need them.
        for item in items:
            item.setdefault("apiVersion", resource.api_version)
            item.setdefault("kind", kind)
        return ObjectList(items, str(page["metadata"].get("resourceVersion", "")))

    def watch(
        self, group: str, kind: str, resource_version: str, timeout_seconds: int = 300
    ) -> WatchStream:
        """Changes to a kind after `resource_version`, with bookmarks, ending after about
        `timeout_seconds`. Raises Gone, at once or while iterating, when the version is too old."""
        gk = GroupKind(group, kind)
        resource = self.resource(group, kind)
        query = [
            ("watch", "true"),
            ("resourceVersion", resource_version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(timeout_seconds)),
        ]
        response = self._call(
            "GET",
            resource.path(),
            f"watch {gk}",
            query=query,
            kind=gk,
            timeout=(REQUEST_TIMEOUT[0], timeout_seconds + REQUEST_TIMEOUT[1]),
        )
        return WatchStream(self.name, gk, response.response)

    def identity(self) -> str:
        """The kube-system namespace UID: stable for a cluster's life, distinct between clusters."""
        namespace = self._json("GET", "/api/v1/namespaces/kube-system", "read the cluster identity")
        return str(namespace["metadata"]["uid"])

    def version(self) -> str:
        return str(self._json("GET", "/version", "read the server version")["gitVersion"])

    def capabilities(self) -> Capabilities | None:
        """The server's version and served API versions for `helm template` (as Argo CD
        passes them), read again after CAPABILITIES_MAX_AGE; None while the cluster cannot
        be reached, asked again only after that long too, so renders do not wait on it."""
        with self._capabilities_lock:
            read_at, known = self._capabilities
            if read_at is not None and time.monotonic() - read_at <= CAPABILITIES_MAX_AGE:
                return known
            try:
                known = Capabilities(
                    self.version(), self._discovery.api_versions(max_age=CAPABILITIES_MAX_AGE)
                )
            except ClusterError as exc:
                log.info("%s: capabilities for helm not read (%s)", self.name, exc)
                known = None
            self._capabilities = (time.monotonic(), known)
            return known

    def rules_review(self, namespace: str) -> dict[str, Any]:
        """What this client's identity may do in `namespace` (cluster-wide rules included):
        the `status` of a SelfSubjectRulesReview, `resourceRules` and `incomplete`."""
        body = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectRulesReview",
            "spec": {"namespace": namespace},
        }
        review = self._json(
            "POST",
            RULES_REVIEW_PATH,
            f"review the identity's rules in namespace {namespace}",
            body=body,
            content_type=_JSON,
        )
        status: dict[str, Any] = review.get("status") or {}
        return status

    # -- writes ----------------------------------------------------------------

    def apply(
        self,
        obj: Mapping[str, Any],
        field_manager: str = FIELD_MANAGER,
        force: bool = False,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """Server-side apply `obj`; returns the object as the server stored (or would store) it."""
        ref = object_ref(obj)
        what = f"apply {ref}" + (" (dry-run)" if dry_run else "")
        self._check_writable(what, ref)
        # Sent to the version the object is written in: the server refuses a body whose
        # apiVersion differs from the URL's, and the kind's preferred version may differ.
        version = str(obj.get("apiVersion", "")).rpartition("/")[2]
        resource = dataclasses.replace(self.resource(ref.group, ref.kind), version=version)
        if not ref.name:
            raise Invalid(self.name, f"{what}: the object has no metadata.name", ref, ())
        if resource.namespaced and not ref.namespace:
            raise Invalid(self.name, f"{what}: a namespaced kind needs metadata.namespace", ref, ())
        query = [("fieldManager", field_manager), ("force", "true" if force else "false")]
        if dry_run:
            query.append(("dryRun", "All"))
        # Sent pre-serialised: JSON is YAML, and the REST client passes bytes through as is.
        body = json.dumps(obj).encode()
        return self._json(
            "PATCH",
            resource.path(ref.namespace, ref.name),
            what,
            ref,
            query=query,
            body=body,
            content_type="application/apply-patch+yaml",
        )

    def delete(
        self, ref: ObjectRef, propagation: str = "Background", uid: str | None = None
    ) -> None:
        """Delete an object; with `uid`, only that incarnation of it (not one recreated since)."""
        what = f"delete {ref}"
        self._check_writable(what, ref)
        resource = self.resource(ref.group, ref.kind)
        options: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "propagationPolicy": propagation,
        }
        if uid is not None:
            options["preconditions"] = {"uid": uid}
        self._call(
            "DELETE",
            resource.path(ref.namespace, ref.name),
            what,
            ref,
            body=options,
            content_type=_JSON,
        ).read()

    def _check_writable(self, what: str, ref: ObjectRef) -> None:
        if self.report_only:
            raise WriteRefused(
                self.name,
                f"refused to {what}: the cluster is report-only and is never written to, "
                "dry-run included",
                ref,
            )
        if self._pinned_identity is None or self._identity_verified:
            return
        actual = self.identity()
        if actual != self._pinned_identity:
            raise IdentityMismatch(
                self.name,
                f"refused to {what}: the server's identity (kube-system UID {actual}) is not the "
                f"pinned one ({self._pinned_identity}); confirm with "
                f"`reconciler check --repin {self.name}`",
                ref,
            )
        self._identity_verified = True

    # -- transport ---------------------------------------------------------------

    def _discovery_document(self, path: str) -> dict[str, Any]:
        return self._json("GET", path, f"discover {path}", accept=AGGREGATED_DISCOVERY)

    def _json(
        self,
        method: str,
        path: str,
        what: str,
        ref: ObjectRef | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self._call(method, path, what, ref, **kwargs).read())
        return document

    def _call(
        self,
        method: str,
        path: str,
        what: str,
        ref: ObjectRef | None = None,
        *,
        query: Query | None = None,
        kind: GroupKind | None = None,
        body: Any = None,
        content_type: str | None = None,
        accept: str = _JSON,
        timeout: tuple[float, float] = REQUEST_TIMEOUT,
    ) -> Any:
        """Send one request; returns the REST response (body unread) or raises a ClusterError.

        `kind` (implied by `ref`) is the kind the path serves: a 404 that names no
        object means the path itself is not served, so the kind is gone (CRD deleted,
        version dropped) and discovery is refreshed."""
        headers = {"Accept": accept}
        if content_type:
            headers["Content-Type"] = content_type
        _, url, headers, _, _ = self._api.param_serialize(
            method=method,
            resource_path=path,
            query_params=query or [],
            header_params=headers,
            auth_settings=["BearerToken"],
        )
        try:
            response = self._api.call_api(
                method, url, header_params=headers, body=body, _request_timeout=timeout
            )
        except ApiException as exc:  # how the REST client reports a failed TLS handshake
            raise Unreachable(self.name, f"{what}: TLS failure ({exc.reason})", ref) from None
        except urllib3.exceptions.HTTPError as exc:
            raise Unreachable(self.name, f"{what}: {_transport_failure(exc)}", ref) from exc
        if not 200 <= response.status <= 299:
            try:
                status = json.loads(response.read())
            except ValueError:
                status = {}
            if not isinstance(status, dict):
                status = {}
            kind = kind or (GroupKind(ref.group, ref.kind) if ref else None)
            if response.status == 404 and kind and not (status.get("details") or {}).get("name"):
                self._discovery.refresh()
                raise UnknownKind(self.name, f"{what}: the API no longer serves {kind}", ref)
            wait = retry_after_s(response.headers.get("Retry-After"))
            raise status_error(self.name, response.status, status, what, ref, wait)
        return response
