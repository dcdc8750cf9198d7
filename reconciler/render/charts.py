"""Charts from repositories, kept by what they hold.

A chart version is fetched once and stored as its archive under its sha256
(`charts/sha256/<hex>.tgz`); a small ref file maps repo+chart+version to that
digest. Every use hashes the archive again, so a truncated or altered file is
found, said, and fetched again, and a chart whose archive verifies is used
without the network: a repository that is down stops no render of a chart
already fetched.

HTTP repositories are read here, not by helm: index.yaml, then the archive it
names, whose sha256 must be the index's `digest`. TLS is verified against the
system's CAs and [render] chart_ca_file; credentials from [render]
chart_credentials go in a header that is sent to the repository's own
scheme, host and port only (never to a redirect or an archive URL elsewhere).
OCI charts are pulled by helm in the render sandbox (it checks the registry's
layer digest), with credentials in a registry config file written for that one
pull, never in argv or the environment.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import ssl
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import yaml

from reconciler.config import ChartCredential
from reconciler.errors import RenderError
from reconciler.render.cache import store_whole
from reconciler.render.sandbox import Grant
from reconciler.render.semver import ConstraintError, highest, is_constraint
from reconciler.render.tools import Tools, run_tool
from reconciler.secretfile import SecretFileError, read_secret
from reconciler.urls import normalise_url, redact_url

log = logging.getLogger(__name__)
_HEX = re.compile(r"^[0-9a-f]{64}$")
_VERSION_TEXT = re.compile(r"^[0-9A-Za-z.+-]{1,128}$")  # a version a range resolved to
_T = TypeVar("_T")
# More entries than any real chart holds (the largest public ones hold a few hundred).
MAX_CHART_MEMBERS = 10_000
_MAX_INDEX_BYTES = 64 * 1024 * 1024  # public repositories' index.yaml reach tens of MiB


@dataclass(frozen=True)
class Chart:
    """One chart version as an Application names it; `where` is how messages name it."""

    repo_url: str
    name: str
    version: str

    @property
    def where(self) -> str:
        return f"{self.name} {self.version} from {redact_url(self.repo_url)}"


def oci_reference(repo_url: str, chart: str) -> str | None:
    """Argo CD names OCI registries either `oci://host/path` or `host/path` (no scheme)."""
    if repo_url.startswith("oci://"):
        return f"{repo_url.rstrip('/')}/{chart}"
    if "://" not in repo_url:
        return f"oci://{repo_url.rstrip('/')}/{chart}"
    return None


def chart_archive(chart: Chart, helm: str, tools: Tools) -> tuple[Path, str]:
    """The chart's verified archive in the cache, and its sha256 (hex). A version
    range is resolved first, each time (reconciler.render.semver)."""
    if is_constraint(chart.version):
        chart = _resolved(chart, tools)
    ref = _cache_key(tools, "refs", chart)
    known = _read_ref(ref)
    if known is not None:
        archive = _blob(tools, known)
        if _sha256_of(archive) == known:
            return archive, known
        log.warning(
            "cached chart %s: its archive %s does not match its sha256 (truncated or altered); "
            "fetching it again",
            chart.where,
            archive,
        )
    data = _fetch(chart, helm, tools)
    digest = hashlib.sha256(data).hexdigest()
    archive = _blob(tools, digest)
    store_whole(archive, data)
    store_whole(ref, digest.encode())
    return archive, digest


def unpack(archive: Path, chart: Chart, into: Path, max_bytes: int) -> Path:
    """The chart directory of `archive`, extracted into `into` (a fresh directory).
    Only plain files and directories inside `into`, at most `max_bytes` in all."""
    unavailable = f"chart not available: {chart.where}"
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members: list[tarfile.TarInfo] = []
            size = 0
            for member in tar:  # read one header at a time: a bomb stops at the caps
                members.append(member)
                size += member.size
                if size > max_bytes:
                    raise RenderError(f"{unavailable} (it unpacks to over {max_bytes} bytes)")
                if len(members) > MAX_CHART_MEMBERS:
                    raise RenderError(f"{unavailable} (it holds over {MAX_CHART_MEMBERS} files)")
            tar.extractall(
                into, members=[m for m in members if m.isfile() or m.isdir()], filter="data"
            )
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise RenderError(f"{unavailable} (its archive cannot be unpacked: {exc})") from None
    chart_dir = into / chart.name
    if not (chart_dir / "Chart.yaml").is_file():
        raise RenderError(f"{unavailable} (the archive holds no chart {chart.name})")
    return chart_dir


def credential_for(url: str, tools: Tools) -> ChartCredential | None:
    """The [render] chart_credentials entry with the longest URL prefix of `url`."""
    target = normalise_url(url if "://" in url else f"oci://{url}")
    matches = [
        c
        for c in tools.chart_credentials
        if target == (prefix := normalise_url(c.url)) or target.startswith(prefix.rstrip("/") + "/")
    ]
    return max(matches, key=lambda c: len(c.url), default=None)


def read_password(credential: ChartCredential) -> str:
    """The password of `credential`, from a file only its owner may read (as ssh asks
    of private keys)."""
    try:
        return read_secret(credential.password_file).strip("\r\n")
    except SecretFileError as exc:
        raise RenderError(f"[render] chart_credentials password_file {exc}") from None


def pull_grant(pull_url: str, into: Path, tools: Tools) -> Grant:
    """What a chart pull from `pull_url` may touch: `into` (in the chart cache), Helm's
    home, the chart CA file, and TCP connections to the URL's port only (Landlock cannot tell
    hosts apart, and registries send blob downloads to storage hosts on that port)."""
    parsed = urllib.parse.urlsplit(pull_url if "://" in pull_url else f"oci://{pull_url}")
    default = 80 if parsed.scheme == "http" else 443
    return Grant(
        read=(tools.chart_ca_file,) if tools.chart_ca_file else (),
        write=(into, tools.cache_dir / "helm"),
        network=True,
        ports=(parsed.port or default,),
    )


def helm_env(cache_dir: Path) -> dict[str, str]:
    """Helm's homes, added to the sandbox's clean environment; created here so the
    sandbox can grant them (it leaves out paths that do not exist)."""
    home = cache_dir / "helm"
    env = {
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }
    for directory in env.values():
        os.makedirs(directory, exist_ok=True)
    return env


def pull_env(tools: Tools) -> dict[str, str]:
    """Helm's homes and, with [render] chart_ca_file, that file as Go's CA bundle: Go
    reads it instead of the system's bundle file but still reads the system's
    certificate directories, so the CA is trusted besides the system's, not instead."""
    env = helm_env(tools.cache_dir)
    if tools.chart_ca_file is not None:
        env["SSL_CERT_FILE"] = str(tools.chart_ca_file)
    return env


def _blob(tools: Tools, digest: str) -> Path:
    return tools.cache_dir / "charts" / "sha256" / f"{digest}.tgz"


def _read_ref(ref: Path, form: re.Pattern[str] = _HEX) -> str | None:
    try:
        found = ref.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return found if form.match(found) else None


def _sha256_of(file: Path) -> str | None:
    try:
        with file.open("rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:
        return None


def _cache_key(tools: Tools, kind: str, chart: Chart) -> Path:
    key = "\0".join([normalise_url(chart.repo_url), chart.name, chart.version])
    return tools.cache_dir / "charts" / kind / hashlib.sha256(key.encode()).hexdigest()


def _resolved(chart: Chart, tools: Tools) -> Chart:
    """`chart` at the highest version its repository's index offers within its range,
    as Helm picks it, asked again at every render; when the index cannot be read, the
    version picked last time (offline from the cache, like an exact version)."""
    last = _cache_key(tools, "ranges", chart)

    def pick(pull_url: str, credential: ChartCredential | None, password: str | None) -> str:
        if oci_reference(pull_url, chart.name) is not None:
            raise RenderError(
                "a version range is resolved from an HTTP repository's index.yaml; "
                "for a chart in an OCI registry, name one version"
            )
        base, auth = _endpoint(pull_url, credential, password)
        offered = [version for version, _ in _versions(_index(base, auth, tools), chart.name)]
        try:
            found = highest(chart.version, offered)
        except ConstraintError as exc:
            raise RenderError(f"targetRevision: {exc}") from None
        if found is None:
            raise RenderError(f"no version in index.yaml is within {chart.version}")
        return found

    try:
        version = _with_credentials(chart, tools, pick)
    except RenderError as exc:
        version = _read_ref(last, _VERSION_TEXT) or ""
        if not version:
            raise
        log.warning("%s; using %s, the version it resolved to before", exc, version)
    else:
        store_whole(last, version.encode())
    return replace(chart, version=version)


def _fetch(chart: Chart, helm: str, tools: Tools) -> bytes:
    def fetch(pull_url: str, credential: ChartCredential | None, password: str | None) -> bytes:
        if oci_reference(pull_url, chart.name) is not None:
            return _pull_oci(chart, pull_url, helm, tools, credential, password)
        return _fetch_http(chart, pull_url, tools, credential, password)

    return _with_credentials(chart, tools, fetch)


def _with_credentials(
    chart: Chart,
    tools: Tools,
    reach: Callable[[str, ChartCredential | None, str | None], _T],
) -> _T:
    """`reach(pull_url, credential, password)` for the chart's repository (or its
    mirror), its failure said as the chart's, without the password."""
    pull_url = tools.chart_mirrors.get(normalise_url(chart.repo_url), chart.repo_url)
    credential = credential_for(pull_url, tools)
    password = None
    try:
        password = read_password(credential) if credential else None
        return reach(pull_url, credential, password)
    except RenderError as exc:
        message = str(exc).replace(password, "***") if password else str(exc)
        raise RenderError(
            f"chart not available: {chart.where} ({message}){_tls_hint(message)}"
        ) from None


def _pull_oci(
    chart: Chart,
    pull_url: str,
    helm: str,
    tools: Tools,
    credential: ChartCredential | None,
    password: str | None,
) -> bytes:
    reference = oci_reference(pull_url, chart.name)
    assert reference is not None
    pulls = tools.cache_dir / "charts" / "pulls"
    pulls.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=pulls) as tmp:
        # Values as `--flag=value` and the chart after `--`: none can be read as a flag.
        argv = [helm, "pull", f"--version={chart.version}", f"--destination={tmp}"]
        if credential is not None and password is not None:
            host = urllib.parse.urlsplit(reference).netloc
            auth = base64.b64encode(f"{credential.username}:{password}".encode()).decode()
            config = Path(tmp) / "registry.json"
            fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                json.dump({"auths": {host: {"auth": auth}}}, out)
            argv.append(f"--registry-config={config}")
        argv += ["--", reference]
        # The one render step with network: a pull the reconciler itself asks for.
        grant = pull_grant(pull_url, Path(tmp), tools)
        secrets = (password,) if password else ()
        try:
            run_tool(argv, tools, "helm pull", grant, env=pull_env(tools), secrets=lambda: secrets)
        except RenderError as exc:
            raise RenderError(f"{exc}{_auth_hint(str(exc), credential is not None)}") from None
        pulled = [p for p in Path(tmp).glob("*.tgz")]
        if len(pulled) != 1:
            raise RenderError(f"the download holds no chart {chart.name}")
        return _limited_read(pulled[0], tools.max_file_bytes)


def _limited_read(file: Path, max_bytes: int) -> bytes:
    if file.stat().st_size > max_bytes:
        raise RenderError(f"the chart archive is over [render] max_file_bytes ({max_bytes})")
    return file.read_bytes()


def _fetch_http(
    chart: Chart,
    pull_url: str,
    tools: Tools,
    credential: ChartCredential | None,
    password: str | None,
) -> bytes:
    base, auth = _endpoint(pull_url, credential, password)
    entry = _index_entry(_index(base, auth, tools), chart)
    urls = entry.get("urls") or []
    if not urls or not isinstance(urls[0], str):
        raise RenderError("its index.yaml entry names no archive URL")
    data = _get(urllib.parse.urljoin(base, urls[0]), base, auth, tools, tools.max_file_bytes)
    expected = str(entry.get("digest") or "").lower().removeprefix("sha256:")
    actual = hashlib.sha256(data).hexdigest()
    if expected and expected != actual:
        raise RenderError(
            f"digest mismatch: index.yaml says sha256 {expected}, the archive served is "
            f"{actual}; refused"
        )
    return data


def _endpoint(
    pull_url: str, credential: ChartCredential | None, password: str | None
) -> tuple[str, str | None]:
    """The repository's base URL and the Authorization header its credential makes."""
    auth = None
    if credential is not None and password is not None:
        token = base64.b64encode(f"{credential.username}:{password}".encode()).decode()
        auth = f"Basic {token}"
    return pull_url.rstrip("/") + "/", auth


def _index(base: str, auth: str | None, tools: Tools) -> dict[str, Any]:
    """The repository's index.yaml: its `entries` by chart name."""
    data = _get(urllib.parse.urljoin(base, "index.yaml"), base, auth, tools, _MAX_INDEX_BYTES)
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        index = yaml.load(data, Loader=loader)  # a safe loader, C when built
    except yaml.YAMLError:
        raise RenderError("its index.yaml is not YAML") from None
    entries = index.get("entries") if isinstance(index, dict) else None
    return entries if isinstance(entries, dict) else {}


def _versions(entries: dict[str, Any], name: str) -> list[tuple[str, dict[str, Any]]]:
    listed = [e for e in entries.get(name) or [] if isinstance(e, dict)]
    if not listed:
        raise RenderError(f"chart {name} not found in the repository's index.yaml")
    return [(str(e.get("version", "")), e) for e in listed]


def _index_entry(entries: dict[str, Any], chart: Chart) -> dict[str, Any]:
    wanted = chart.version.removeprefix("v")
    for version, entry in _versions(entries, chart.name):
        if version.removeprefix("v") == wanted:
            return entry
    raise RenderError(f"version {chart.version} of {chart.name} not found in index.yaml")


def _get(url: str, base: str, auth: str | None, tools: Tools, max_bytes: int) -> bytes:
    """`url`, with `auth` only when it is on `base`'s scheme, host and port."""
    context = ssl.create_default_context()
    if tools.chart_ca_file is not None:
        context.load_verify_locations(cafile=str(tools.chart_ca_file))
    shown = redact_url(url)
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        # An index may name its archives by any URL: file:// would read this host.
        raise RenderError(f"{shown}: only http and https URLs are fetched")
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.ProxyHandler(),
        urllib.request.HTTPHandler(),
        urllib.request.HTTPSHandler(context=context),
        urllib.request.HTTPRedirectHandler(),  # http(s) only: no other handler is here
        urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    request = urllib.request.Request(url)
    # Unredirected: a redirect to another host does not carry it (passCredentials).
    if auth is not None and _origin(url) == _origin(base):
        request.add_unredirected_header("Authorization", auth)
    try:
        with opener.open(request, timeout=tools.timeout) as response:
            data: bytes = response.read(max_bytes + 1)
    except urllib.error.HTTPError as exc:
        message = f"{shown}: HTTP {exc.code} {exc.reason}"
        raise RenderError(f"{message}{_auth_hint(message, auth is not None)}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise RenderError(f"{shown} could not be fetched: {reason}") from None
    if len(data) > max_bytes:
        raise RenderError(f"{shown} is over {max_bytes} bytes")
    return data


# How servers and helm say a request lacked or failed authentication ("basic credential
# not found" is helm's, for a registry that asked and had none; redaction shortens it).
_UNAUTHORISED = re.compile(
    r"\b40[13]\b|unauthori[sz]ed|forbidden|basic (credential|<redacted>)", re.I
)


def _auth_hint(message: str, had_credential: bool) -> str:
    if not _UNAUTHORISED.search(message):
        return ""
    if had_credential:
        return "; the credentials of [render] chart_credentials were refused"
    return "; the server asks for credentials: add them to [render] chart_credentials"


def _origin(url: str) -> tuple[str, str, int | None]:
    parsed = urllib.parse.urlsplit(url)
    return parsed.scheme, (parsed.hostname or "").lower(), parsed.port


def _tls_hint(message: str) -> str:
    if "x509:" not in message and "tls:" not in message and "CERTIFICATE_VERIFY" not in message:
        return ""
    return (
        "; the server's TLS certificate is not trusted: its CA must be in the system's "
        "CA certificates or in [render] chart_ca_file"
    )
