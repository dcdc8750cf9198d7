"""One desired object against its live counterpart: the Drift, or None when in sync.

Order matters and is the same for every input: strip what only the server writes,
drop ignored fields, redact secrets, then pair fields and let deepdiff report the
differences. Redacting before comparing means no secret value can reach a Change,
and markers of equal values are equal, so an unchanged secret is not drift.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from reconciler.diff import fieldsets
from reconciler.diff.align import Owners, Slot, align, unslot
from reconciler.diff.fieldsets import FieldSet
from reconciler.diff.ignore import IgnoreRule, apply_ignore, ignored_fields
from reconciler.diff.normalize import fold_string_data, plain, strip_server_fields
from reconciler.diff.pointer import Segment, format_pointer
from reconciler.diff.redact import RedactionRule, redact_in_place
from reconciler.model import FIELD_MANAGER, Change, Drift, DriftType, GroupKind, ObjectRef

_REPORTS = (
    "values_changed",
    "type_changes",
    "dictionary_item_added",
    "dictionary_item_removed",
    "iterable_item_added",
    "iterable_item_removed",
)


def diff_object(
    ref: ObjectRef,
    desired: Mapping[str, Any] | None,
    live: Mapping[str, Any] | None,
    *,
    dry_run: Mapping[str, Any] | None = None,
    manager: str = FIELD_MANAGER,
    ignore: Iterable[IgnoreRule] = (),
    redaction: Iterable[RedactionRule] = (),
    applied: FieldSet | None = None,
) -> Drift | None:
    """Compare git's `desired` object with the `live` one (None: absent on that side).

    `dry_run` is the server-side dry-run apply of `desired` onto `live`; when given,
    it is compared with live in full, so server defaults are exact. `manager` is the
    reconciler's field manager: fields it owns live but git no longer sets are drift;
    so are those in `applied`, the fields another tool applied (Argo CD's, read by
    reconciler.diff.removed where the reconciler owns nothing).
    `ignore` rules are filtered by `ref` here; Secret redaction is always on and
    `redaction` rules add to it.
    """
    rules = [rule for rule in ignore if rule.matches(ref)]
    secret_rules = tuple(redaction)
    if live is None:
        if desired is None:
            raise ValueError(f"{ref}: nothing to compare, both sides are absent")
        view = _prepare(ref, desired, rules, FieldSet(), secret_rules)
        return Drift(DriftType.MISSING, ref, _api_version(desired), desired=view)
    if desired is None:
        view = _prepare(ref, live, rules, FieldSet(), secret_rules)
        return Drift(DriftType.EXTRA, ref, _api_version(live), live=view)

    owners = fieldsets.managers(live)
    ignored = ignored_fields(rules, owners)
    live_view = _prepare(ref, live, rules, ignored, secret_rules)
    if dry_run is not None:
        wanted = _prepare(ref, dry_run, rules, ignored, secret_rules)
        ours = None
    else:
        wanted = _prepare(ref, desired, rules, ignored, secret_rules, fold=True)
        ours = fieldsets.union((owners.get(manager, FieldSet()), applied or FieldSet()))
    known = fieldsets.union(owners.values())
    desired_view, live_view = align(
        wanted, live_view, Owners(ours, known), full=dry_run is not None
    )
    changes = _changes(desired_view, live_view)
    if not changes:
        return None
    return Drift(
        DriftType.CHANGED,
        ref,
        _api_version(desired),
        changes,
        desired=unslot(desired_view),
        live=unslot(live_view),
    )


def _prepare(
    ref: ObjectRef,
    obj: Mapping[str, Any],
    rules: list[IgnoreRule],
    ignored: FieldSet,
    secret_rules: tuple[RedactionRule, ...],
    *,
    fold: bool = False,
) -> dict[str, Any]:
    """A copy of `obj` to compare (with a Secret's stringData folded into data when
    `fold`, as the server does to a desired Secret)."""
    view: dict[str, Any] = plain(obj)
    if fold:
        fold_string_data(view)
    # Redaction comes first so that no later step ever holds a secret value.
    redact_in_place(view, secret_rules, GroupKind(ref.group, ref.kind))
    strip_server_fields(view)
    apply_ignore(view, rules, ignored)
    return view


def _changes(desired: Any, live: Any) -> tuple[Change, ...]:
    if identical(desired, live):
        return ()  # most objects are in sync; DeepDiff costs far more than this check
    # Imported at the first drift, not at start: deepdiff (and the pydantic it loads)
    # is a tenth of the daemon's start-up, and an in-sync start never needs it.
    from deepdiff import DeepDiff
    from deepdiff.helper import notpresent

    report = DeepDiff(live, desired, view="tree", threshold_to_diff_deeper=0)
    found: list[tuple[list[Segment], Change]] = []
    for kind in _REPORTS:
        for level in report.get(kind, ()):
            path = [_segment(s) for s in level.path(output_format="list")]
            change = Change(
                format_pointer(path), _value(level.t2, notpresent), _value(level.t1, notpresent)
            )
            found.append((path, change))
    found.sort(key=lambda item: [(isinstance(s, str), s) for s in item[0]])
    return tuple(change for _, change in found)


def identical(a: Any, b: Any) -> bool:
    """Equal as DeepDiff sees it: the same types all the way down (1 is neither 1.0 nor
    True). Anything but JSON's own types is left to DeepDiff."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(identical(value, b[key]) for key, value in a.items())
    if isinstance(a, list):
        return len(a) == len(b) and all(map(identical, a, b))
    return isinstance(a, str | int | float | bool | None) and a == b


def _segment(key: Any) -> Segment:
    if isinstance(key, Slot):
        return key.index
    return key if isinstance(key, int) else str(key)


def _value(value: Any, absent: object) -> Any:
    """A side's value in a Change: None where DeepDiff marks it `absent`."""
    return None if value is absent else unslot(value)


def _api_version(obj: Mapping[str, Any]) -> str:
    return str(obj.get("apiVersion", ""))
