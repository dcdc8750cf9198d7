"""Bounded parsing: YAML that explodes (aliases), integers past any Kubernetes
field, nesting, documents and objects in the tens of thousands, and metadata
of the wrong shape each fail their own app with an error naming the file,
quickly and in little memory, while the honest app beside them renders."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass

import pytest

from tests.security.conftest import AttackLab, MakeLab, application
from tests.security.untrusted import assert_only_app_failed, chart

BILLION_LAUGHS = b"""\
apiVersion: v1
kind: ConfigMap
metadata: {name: lol}
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
data: {bomb: *g}
"""
CM = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n"
# Far above what the CLI needs for two tiny apps (about 100 MiB), far below what the
# bombs made before they were bounded (hundreds of MiB).
MAX_RSS_KIB = 300 * 1024
MAX_SECONDS = 60


@dataclass(frozen=True)
class Measured:
    result: subprocess.CompletedProcess[str]
    seconds: float
    peak_rss_kib: int


# Runs the command given after the result file and writes its peak RSS there. A
# process's peak RSS starts from the image it was exec'd from (Linux carries the
# pre-exec high-water mark over), so measuring the CLI as pytest's direct child
# would count pytest's own memory; this small launcher is the CLI's parent instead.
_LAUNCHER = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as out:
    out.write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def _render_measured(lab: AttackLab) -> Measured:
    """`render -o json` with the CLI process's own peak memory (wait4 in a small parent)."""
    argv = [sys.executable, "-m", "reconciler.cli", "render", "-o", "json"]
    peak = lab.base / "peak-rss-kib"
    start = time.monotonic()
    result = subprocess.run(
        [
            sys.executable,
            "-I",
            "-S",
            "-c",
            _LAUNCHER,
            str(peak),
            *argv,
            "--config",
            str(lab.config),
        ],
        capture_output=True,
        text=True,
        timeout=MAX_SECONDS * 2,
    )
    seconds = time.monotonic() - start
    return Measured(result, seconds, int(peak.read_text()))


def _directory_app(files: dict[str, bytes]) -> dict[str, bytes]:
    return {
        "kubernetes/argocd-apps/evil.yaml": application("evil", {"path": "apps/evil"}),
        **{f"apps/evil/{name}": data for name, data in files.items()},
    }


def test_a_yaml_alias_bomb_fails_its_app_fast_and_small(attack_lab: MakeLab) -> None:
    assert len(BILLION_LAUGHS) < 450
    measured = _render_measured(attack_lab(_directory_app({"bomb.yaml": BILLION_LAUGHS})))
    assert_only_app_failed(measured.result, "evil", "apps/evil/bomb.yaml", "YAML aliases")
    assert measured.seconds < MAX_SECONDS
    assert measured.peak_rss_kib < MAX_RSS_KIB, measured.peak_rss_kib


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ((CM.format(name="big") + "data:\n  n: " + "9" * 5000 + "\n").encode(), "integer"),
        ((CM.format(name="big") + "data:\n  n: 0x" + "f" * 40 + "\n").encode(), "integer"),
        ((CM.format(name="deep") + "data: " + "[" * 150 + "]" * 150 + "\n").encode(), "nested"),
        ((CM.format(name="deep") + "data: " + "[" * 5000 + "]" * 5000 + "\n").encode(), "nesting"),
        (b"---\n" * 20_000, "more than 10000 documents"),
        ((CM.format(name="self") + "data: &a [*a]\n").encode(), "refers to itself"),
        (
            (CM.format(name="labels") + "  labels:\n  - a\n  - b\n").encode(),
            "metadata.labels must map strings to strings",
        ),
        (
            (CM.format(name="annotations") + "  annotations:\n    a: {b: c}\n").encode(),
            "metadata.annotations must map strings to strings",
        ),
        (b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [x]\n", "no metadata.name"),
    ],
    ids=[
        "5000-digit-integer",
        "160-bit-hex-integer",
        "150-levels",
        "5000-levels",
        "20000-documents",
        "recursive-alias",
        "labels-as-list",
        "annotations-not-strings",
        "name-not-a-string",
    ],
)
def test_out_of_bounds_yaml_fails_its_app_naming_the_file(
    attack_lab: MakeLab, content: bytes, message: str
) -> None:
    result = attack_lab(_directory_app({"evil.yaml": content})).render()
    assert_only_app_failed(result, "evil", "apps/evil/evil.yaml", message)


def test_deep_json_fails_its_app_naming_the_file(attack_lab: MakeLab) -> None:
    content = b'{"apiVersion": "v1", "kind": "ConfigMap", "data": ' + b"[" * 5000 + b"]" * 5000
    result = attack_lab(_directory_app({"evil.json": content + b"}"})).render()
    assert_only_app_failed(result, "evil", "apps/evil/evil.json", "nested deeper than")


def test_too_many_objects_in_a_directory_fail_its_app(attack_lab: MakeLab) -> None:
    docs = "---\n".join(CM.format(name=f"cm-{i}") for i in range(6))
    lab = attack_lab(_directory_app({"many.yaml": docs.encode()}), render_toml="max_objects = 5")
    result = lab.render()
    assert_only_app_failed(result, "evil", "apps/evil/many.yaml", "more than 5 objects")


def test_a_tiny_template_making_a_flood_of_objects_fails_its_app(attack_lab: MakeLab) -> None:
    """The issue's 146-byte template: 100,000 objects from one `range`."""
    template = (
        b"{{- range until 100000 }}\n---\napiVersion: v1\nkind: ConfigMap\n"
        b"metadata:\n  name: c{{ . }}\n{{- end }}\n"
    )
    files = {
        "kubernetes/argocd-apps/evil.yaml": application("evil", {"path": "charts/evil"}),
        **chart("  a: b\n"),
        "charts/evil/templates/flood.yaml": template,
    }
    measured = _render_measured(attack_lab(files))
    assert_only_app_failed(measured.result, "evil", "charts/evil", "more than 10000 objects")
    assert measured.seconds < MAX_SECONDS
    assert measured.peak_rss_kib < MAX_RSS_KIB, measured.peak_rss_kib


def test_a_poisoned_application_file_fails_only_itself(attack_lab: MakeLab) -> None:
    """The catalogue parses Applications with the same bounds."""
    app = application("evil", {"path": "apps/evil"})
    result = attack_lab({"kubernetes/argocd-apps/evil.yaml": app + b"x: " + b"7" * 5000}).render()
    assert "Traceback" not in result.stderr
    assert result.returncode == 1
    assert "kubernetes/argocd-apps/evil.yaml: malformed YAML at line" in result.stderr
    assert "an integer of more than 64 bits" in result.stderr
    assert '"app": "honest"' in result.stdout
