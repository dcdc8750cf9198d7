"""Invariant 7: a secret value never leaves the diff stage, yet a changed secret shows."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from reconciler.diff import (
    RedactionRule,
    RuleError,
    diff_object,
    drift_to_json,
    parse_ignore_rules,
    redact,
    redact_text,
    render_text,
)
from reconciler.model import Drift, DriftType, ObjectRef

DATA = Path(__file__).parent / "data" / "diff"
CANARY = "CANARY-s3cr3t-value"
CANARY_B64 = base64.b64encode(CANARY.encode()).decode()
REF = ObjectRef("", "Secret", "shop", "db")
TOKEN_REF = ObjectRef("example.com", "Token", "shop", "api")


def live_secret() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((DATA / "secret-live.json").read_text())
    return loaded


def git_secret(**string_data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "db", "namespace": "shop"},
        "type": "Opaque",
        "stringData": {"user": "app", "password": CANARY, **string_data},
    }


def token(value: str) -> dict[str, Any]:
    return {
        "apiVersion": "example.com/v1",
        "kind": "Token",
        "metadata": {"name": "api", "namespace": "shop"},
        "spec": {"auth": {"token": value}, "owner": "ops"},
    }


TOKEN_RULE = RedactionRule(kind="Token", group="example.com", pointers=("/spec/auth/token",))


def leaks(text: str) -> bool:
    return CANARY in text or CANARY_B64 in text


def test_string_data_in_git_matches_the_same_data_live() -> None:
    assert diff_object(REF, git_secret(), live_secret()) is None


def test_changed_secret_value_shows_as_changed_without_its_value() -> None:
    drift = diff_object(REF, git_secret(password="rotated-value"), live_secret())
    assert drift is not None and [c.path for c in drift.changes] == ["/data/password"]
    (change,) = drift.changes
    assert change.desired != change.live
    assert str(change.desired).startswith("<redacted ") and str(change.live).startswith(
        "<redacted "
    )
    assert not leaks(repr(drift)) and "rotated-value" not in repr(drift)


def test_secret_value_never_appears_in_changes() -> None:
    live = live_secret()
    live["data"]["password"] = base64.b64encode(b"edited-live").decode()
    for desired, current in [(git_secret(), live), (None, live), (git_secret(), None)]:
        drift = diff_object(REF, desired, current)
        assert drift is not None
        assert not leaks(json.dumps(drift_to_json(drift, cluster="prod", app="shop")))
        assert not leaks(repr(drift) + json.dumps([drift.desired, drift.live]))


def test_canary_is_absent_from_every_output() -> None:
    live = live_secret()
    live["metadata"]["annotations"] = {
        "kubectl.kubernetes.io/last-applied-configuration": json.dumps(git_secret())
    }
    dry_run = copy.deepcopy(live)
    dry_run["data"]["password"] = base64.b64encode(b"other").decode()
    drifts = [
        diff_object(REF, git_secret(password="other"), live),
        diff_object(REF, git_secret(password="other"), live, dry_run=dry_run),
        diff_object(REF, git_secret(), None),
        diff_object(REF, None, live),
    ]
    outputs: list[str] = [repr(redact(live)), repr(redact(git_secret()))]
    for drift in drifts:
        assert drift is not None
        outputs += [
            repr(drift),
            str(drift),
            json.dumps(drift_to_json(drift, cluster="prod", app="shop")),
            render_text(drift, cluster="prod", app="shop", colour=True),
            json.dumps([drift.desired, drift.live]),
        ]
    api_error = f'Secret "db" is invalid: data[password]: {CANARY_B64} and {json.dumps(CANARY)}'
    outputs.append(redact_text(api_error, [git_secret(), live]))
    with pytest.raises(RuleError) as error:
        parse_ignore_rules([{"kind": "Secret", "jqPathExpressions": [".data | " + CANARY]}], "x")
    outputs.append(redact_text(str(error.value), [git_secret()]))
    assert [o for o in outputs if leaks(o)] == []


def test_secret_ignored_by_rule_is_in_sync_and_still_redacted() -> None:
    ignore = parse_ignore_rules([{"kind": "Secret", "jsonPointers": ["/data"]}], "app shop")
    assert diff_object(REF, git_secret(password="x"), live_secret(), ignore=ignore) is None


def test_redaction_rule_hides_a_custom_resource_field_but_shows_its_change() -> None:
    rules = [TOKEN_RULE]
    assert diff_object(TOKEN_REF, token(CANARY), token(CANARY), redaction=rules) is None
    drift = diff_object(TOKEN_REF, token(CANARY), token("old-token"), redaction=rules)
    assert drift is not None and [c.path for c in drift.changes] == ["/spec/auth/token"]
    assert not leaks(repr(drift)) and "old-token" not in repr(drift)
    assert redact(token(CANARY), rules)["spec"]["owner"] == "ops"


def test_marker_is_keyed_not_a_plain_hash_of_the_value() -> None:
    marker = redact(git_secret())["stringData"]["password"]
    assert hashlib.sha256(CANARY.encode()).hexdigest()[:12] not in marker
    assert hashlib.sha256(json.dumps(CANARY).encode()).hexdigest()[:12] not in marker


def test_redact_is_idempotent_and_leaves_the_input_alone() -> None:
    original = git_secret()
    once = redact(original)
    assert redact(once) == once
    assert original["stringData"]["password"] == CANARY


def test_redact_covers_every_item_of_a_list() -> None:
    listed = redact({"apiVersion": "v1", "kind": "List", "items": [live_secret(), git_secret()]})
    assert not leaks(json.dumps(listed))
    assert listed["items"][0]["data"].keys() == {"password", "user"}


def test_redact_text_scrubs_raw_encoded_and_escaped_values() -> None:
    secret = git_secret(cert='line1\n"quoted"')
    message = f"rejected: {CANARY} {CANARY_B64} data: {json.dumps(secret['stringData']['cert'])}"
    scrubbed = redact_text(message, [secret, live_secret()])
    assert scrubbed == 'rejected: <redacted> <redacted> data: "<redacted>"'


def test_redaction_rule_with_a_bad_pointer_is_refused() -> None:
    with pytest.raises(RuleError, match="spec/token"):
        RedactionRule(kind="Token", pointers=("spec/token",))


def test_drift_repr_leaves_out_the_compared_objects() -> None:
    drift = Drift(DriftType.MISSING, REF, "v1", desired={"data": {"password": "x"}})
    assert "desired=" not in repr(drift)


def test_items_of_an_api_list_are_redacted_though_they_carry_no_kind() -> None:
    item = live_secret()
    del item["kind"], item["apiVersion"]
    listed = {"apiVersion": "v1", "kind": "SecretList", "items": [item]}
    assert not leaks(json.dumps(redact(listed)))
    assert redact_text(f"echo {CANARY}", [listed]) == "echo <redacted>"


def test_diff_redacts_by_the_ref_even_when_an_object_lacks_its_kind() -> None:
    live = live_secret()
    del live["kind"]
    drift = diff_object(REF, git_secret(password="other"), live)
    assert drift is not None and not leaks(repr(drift) + json.dumps(drift.live))
