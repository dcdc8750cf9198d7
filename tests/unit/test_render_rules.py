"""Pure rules of rendering: Argo CD globs, Helm --set escaping, OCI names,
object checks, YAML errors that never quote content."""

from __future__ import annotations

import pytest

from reconciler.documents import parse_documents
from reconciler.errors import RenderError
from reconciler.model import Origin
from reconciler.render.charts import oci_reference
from reconciler.render.directory import selected
from reconciler.render.helm import set_value
from reconciler.render.objects import objects_from, objects_from_stream

ORIGIN = Origin("repo", "abc", "app", "path")


@pytest.mark.parametrize(
    ("path", "include", "exclude", "wanted"),
    [
        ("a.yaml", "*.yaml", "", True),
        ("nested/dir/a.yaml", "*.yaml", "", True),  # `*` crosses '/' as in Argo CD
        ("a.json", "*.yaml", "", False),
        ("namespace.yaml", "namespace.yaml", "", True),
        ("other.yaml", "namespace.yaml", "", False),
        ("b.yaml", "{a.yaml,b.yaml}", "", True),
        ("c.yaml", "{a.yaml,b.yaml}", "", False),
        ("x/values.yaml", "", "*values.yaml", False),
        ("x/deploy.yaml", "*.yaml", "{*values.yaml,*kustomization.yaml}", True),
        ("file1.yaml", "file?.yaml", "", True),
        ("filea.yaml", "file[!0-9].yaml", "", True),
        ("file1.yaml", "file[!0-9].yaml", "", False),
    ],
)
def test_include_and_exclude_globs_follow_argo_cd(
    path: str, include: str, exclude: str, wanted: bool
) -> None:
    assert selected(path, include, exclude) is wanted


def test_an_unclosed_brace_is_a_render_error() -> None:
    with pytest.raises(RenderError, match="unclosed"):
        selected("a.yaml", "{a.yaml", "")


def test_helm_set_values_keep_commas_unless_they_are_a_list() -> None:
    assert set_value("8.8.8.8:53,1.1.1.1:53") == "8.8.8.8:53\\,1.1.1.1:53"
    assert set_value("a\\,b") == "a\\,b"
    assert set_value("{a,b}") == "{a,b}"


def test_oci_charts_are_recognised_with_or_without_scheme() -> None:
    assert oci_reference("oci://ghcr.io/org/charts/", "app") == "oci://ghcr.io/org/charts/app"
    assert oci_reference("registry-1.docker.io/bitnamicharts", "redis") == (
        "oci://registry-1.docker.io/bitnamicharts/redis"
    )
    assert oci_reference("https://charts.jetstack.io", "cert-manager") is None


def test_documents_that_are_not_manifests_are_skipped() -> None:
    docs = parse_documents(
        b"replicas: 3\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n", "values.yaml"
    )
    assert [r.obj["metadata"]["name"] for r in objects_from(docs, "values.yaml", ORIGIN)] == ["a"]


def test_lists_are_unpacked_and_each_item_checked() -> None:
    doc = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}},
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}},
        ],
    }
    with pytest.raises(
        RenderError,
        match=r"f.yaml \(document 1\): document 2 \(ConfigMap\) "
        r"has no metadata.name",
    ):
        objects_from([doc], "f.yaml", ORIGIN)


def test_json_files_and_malformed_json_are_handled() -> None:
    assert parse_documents(b'{"apiVersion": "v1"}', "a.json") == [{"apiVersion": "v1"}]
    with pytest.raises(RenderError, match=r"a\.json: malformed JSON at line 1"):
        parse_documents(b'{"apiVersion": ', "a.json")


def test_malformed_yaml_error_gives_the_line_not_the_content() -> None:
    with pytest.raises(RenderError) as info:
        parse_documents(b"kind: Secret\ndata:\n  password: [s3cr3t\n", "s.yaml")
    assert "s.yaml: malformed YAML at line" in str(info.value)
    assert "s3cr3t" not in str(info.value)


def test_helm_output_objects_keep_their_template_as_origin() -> None:
    text = (
        "---\n# Source: chart/templates/a.yaml\napiVersion: v1\nkind: ConfigMap\n"
        "metadata:\n  name: a\n---\n# Source: chart/templates/b.yaml\napiVersion: v1\n"
        "kind: Service\nmetadata:\n  name: b\n"
    )
    rendered = objects_from_stream(text, "chart", ORIGIN, max_objects=10)
    assert [(r.obj["kind"], r.origin.path) for r in rendered] == [
        ("ConfigMap", "chart/templates/a.yaml"),
        ("Service", "chart/templates/b.yaml"),
    ]
