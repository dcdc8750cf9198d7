"""ClusterClient against the real test clusters: what it sends is read back from
each API server's audit log, so the report-mode guard is proven by the server's
own record, not by the client's word."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reconciler.cluster import (
    ClusterClient,
    Conflict,
    IdentityMismatch,
    Invalid,
    KubeconfigError,
    NotFound,
    UnknownKind,
    Unreachable,
    WriteRefused,
)
from reconciler.model import ObjectRef
from testenv.clusters import RECONCILER_USER, WRITE_VERBS, ClusterSet, write_kubeconfig
from testenv.pki import make_ca
from tests.builders import config_map
from tests.helpers_cluster import create_crd, namespace, unique, wait_for


def test_report_mode_client_sends_no_write_request(clusters: ClusterSet) -> None:
    prod = clusters["prod"]
    client = ClusterClient("prod", prod.reconciler_kubeconfig, mode="report")
    obj = config_map(unique("never"), {"k": "v"}, "default")
    ref = ObjectRef("", "ConfigMap", "default", obj["metadata"]["name"])

    for attempt in (
        lambda: client.apply(obj),
        lambda: client.apply(obj, dry_run=True),
        lambda: client.apply(obj, force=True),
        lambda: client.delete(ref),
    ):
        with pytest.raises(WriteRefused, match=r"cluster prod: refused to .*ConfigMap default/"):
            attempt()
    # The lowest layer refuses too, so a future code path cannot slip past the public methods.
    with pytest.raises(WriteRefused, match="refused to send POST"):
        client._api.call_api("POST", prod.server + "/api/v1/namespaces", body={})

    assert client.get(ObjectRef("", "Namespace", "", "default"))["metadata"]["name"] == "default"
    assert client.list("", "Namespace").items, "reads still work"
    writes = [e for e in prod.requests_by(RECONCILER_USER) if e.verb in WRITE_VERBS]
    assert writes == [], "prod's audit log shows no write request from the reconciler identity"


def test_report_mode_is_enforced_by_the_client_not_by_rbac(clusters: ClusterSet) -> None:
    agentic = clusters["agentic"]  # where the reconciler identity is cluster-admin
    client = ClusterClient("agentic", agentic.reconciler_kubeconfig, mode="report")
    name = unique("never")
    with pytest.raises(WriteRefused):
        client.apply(config_map(name, {"k": "v"}, "default"), dry_run=True)
    assert not [e for e in agentic.requests_by(RECONCILER_USER) if e.name == name]


def test_apply_mode_client_server_side_applies_with_field_manager(clusters: ClusterSet) -> None:
    agentic = clusters["agentic"]
    client = ClusterClient("agentic", agentic.reconciler_kubeconfig)
    with namespace(agentic) as ns:
        applied = client.apply(config_map("cm", {"k": "v1"}, ns))
        managers = {(m["manager"], m["operation"]) for m in applied["metadata"]["managedFields"]}
        assert ("reconciler", "Apply") in managers

        dry = client.apply(config_map("cm", {"k": "v2"}, ns), dry_run=True)
        assert dry["data"] == {"k": "v2"}
        live = client.get(ObjectRef("", "ConfigMap", ns, "cm"))
        assert live["data"] == {"k": "v1"}, "a dry-run changes nothing"
        assert live["metadata"]["resourceVersion"] == applied["metadata"]["resourceVersion"]

        patches = [
            e.uri
            for e in agentic.requests_by(RECONCILER_USER)
            if e.verb == "patch" and e.name == "cm"
        ]
        assert len(patches) == 2
        assert all("fieldManager=reconciler" in uri and "force=false" in uri for uri in patches)
        assert "dryRun=All" in patches[1]

        listed = client.list("", "ConfigMap")
        assert listed.resource_version
        mine = [i for i in listed.items if i["metadata"] == live["metadata"]]
        assert [(i["apiVersion"], i["kind"]) for i in mine] == [("v1", "ConfigMap")]

        ref = ObjectRef("", "ConfigMap", ns, "cm")
        client.delete(ref, uid=live["metadata"]["uid"])
        with pytest.raises(NotFound, match=rf"cluster agentic: get ConfigMap {ns}/cm: NotFound"):
            client.get(ref)


def test_conflicting_apply_names_the_field_and_its_manager(clusters: ClusterSet) -> None:
    agentic = clusters["agentic"]
    client = ClusterClient("agentic", agentic.reconciler_kubeconfig)
    with namespace(agentic) as ns:
        client.apply(config_map("cm", {"k": "mine"}, ns))
        theirs = config_map("cm", {"k": "theirs"}, ns)
        with pytest.raises(Conflict) as conflict:
            client.apply(theirs, field_manager="someone-else")
        assert conflict.value.fields == ('.data.k (conflict with "reconciler")',)
        assert "theirs" not in str(conflict.value)
        taken = client.apply(theirs, field_manager="someone-else", force=True)
        assert taken["data"] == {"k": "theirs"}


def test_rejected_object_error_never_echoes_its_values(clusters: ClusterSet) -> None:
    monit = clusters["monit"]
    client = ClusterClient("monit", monit.reconciler_kubeconfig)
    canary = "CANARY-" + "x" * 70  # an invalid label value: too long
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "s", "namespace": "default", "labels": {"l": canary}},
        "stringData": {"password": canary},
    }
    with pytest.raises(Invalid) as rejected:
        client.apply(secret)
    message = str(rejected.value)
    assert "cluster monit: apply Secret default/s: Invalid (HTTP 422)" in message
    assert "metadata.labels" in message
    assert "CANARY" not in message


def test_identity_is_the_kube_system_uid_and_a_mismatch_refuses_writes(
    clusters: ClusterSet,
) -> None:
    agentic, monit = clusters["agentic"], clusters["monit"]
    expected = agentic.request("GET", "/api/v1/namespaces/kube-system")["metadata"]["uid"]
    assert ClusterClient("agentic", agentic.reconciler_kubeconfig).identity() == expected
    monit_identity = ClusterClient("monit", monit.reconciler_kubeconfig).identity()
    assert monit_identity != expected

    # "agentic" configured with monit's kubeconfig: the pinned identity stops the write.
    mixed_up = ClusterClient("agentic", monit.reconciler_kubeconfig, pinned_identity=expected)
    name = unique("never")
    with pytest.raises(IdentityMismatch, match="reconciler check --repin agentic"):
        mixed_up.apply(config_map(name, {"k": "v"}, "default"))
    assert not [e for e in monit.requests_by(RECONCILER_USER) if e.name == name]

    pinned = ClusterClient("agentic", agentic.reconciler_kubeconfig, pinned_identity=expected)
    pinned.apply(config_map(name, {"k": "v"}, "default"), dry_run=True)
    assert pinned.version().startswith("v1.")


@pytest.mark.parametrize(
    ("cluster_fields", "complaint"),
    [
        ({"insecure-skip-tls-verify": True}, "insecure-skip-tls-verify is set"),
        ({"server": "http://127.0.0.1:1"}, "not an https:// URL"),
    ],
)
def test_insecure_kubeconfig_is_refused(
    clusters: ClusterSet, tmp_path: Path, cluster_fields: dict[str, object], complaint: str
) -> None:
    source = json.loads(clusters["agentic"].reconciler_kubeconfig.read_text())
    source["clusters"][0]["cluster"].update(cluster_fields)
    kubeconfig = tmp_path / "insecure.kubeconfig"
    kubeconfig.write_text(json.dumps(source))
    with pytest.raises(KubeconfigError, match=complaint) as refused:
        ClusterClient("agentic", kubeconfig)
    assert str(kubeconfig) in str(refused.value)


def test_untrusted_server_certificate_is_unreachable(clusters: ClusterSet, tmp_path: Path) -> None:
    agentic = clusters["agentic"]
    other = make_ca(tmp_path / "other-ca", "not-the-cluster-ca")
    kubeconfig = tmp_path / "other.kubeconfig"
    write_kubeconfig(kubeconfig, "agentic", agentic.server, other.cert_file, "irrelevant")
    with pytest.raises(Unreachable, match="TLS failure"):
        ClusterClient("agentic", kubeconfig).version()


def test_discovery_finds_a_crd_installed_after_start(clusters: ClusterSet) -> None:
    monit = clusters["monit"]
    client = ClusterClient("monit", monit.reconciler_kubeconfig)
    group = f"{unique('d')}.example.com"
    assert client.resource("apps", "Deployment").plural == "deployments"
    with pytest.raises(UnknownKind, match=f"Gadget.{group}"):
        client.resource(group, "Gadget")

    plural = create_crd(monit, group, "Gadget")

    def served() -> bool:
        try:
            return client.resource(group, "Gadget").plural == plural
        except UnknownKind:
            return False

    wait_for(served, 10, "discovery to serve the new kind")
    gadget = client.resource(group, "Gadget")
    assert (gadget.api_version, gadget.namespaced) == (f"{group}/v1", True)


def test_an_object_is_applied_in_the_version_it_is_written_in(clusters: ClusterSet) -> None:
    agentic = clusters["agentic"]
    client = ClusterClient("agentic", agentic.reconciler_kubeconfig)
    assert client.resource("autoscaling", "HorizontalPodAutoscaler").version == "v2"
    with namespace(agentic) as ns:
        hpa = {
            "apiVersion": "autoscaling/v1",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "namespace": ns},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "minReplicas": 1,
                "maxReplicas": 3,
            },
        }
        applied = client.apply(hpa)
        assert applied["apiVersion"] == "autoscaling/v1"
        assert applied["spec"]["maxReplicas"] == 3
