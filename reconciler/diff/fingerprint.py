"""What a diff verdict depends on, so a verdict can be reused without a dry-run.

A server-side dry-run is a PATCH, audited as a write; a steady state must send
none (invariant 3). The verdict "in sync" for a desired object stays true as long
as the desired object and the live values of the fields it sets are unchanged:
fields only other managers write (status, a controller's annotation) are carried
through an apply untouched, so they cannot turn the verdict. Projecting the live
object onto the desired object's shape captures exactly that, and, unlike the
resourceVersion, it does not move when a controller updates status.

The daemon fingerprints desired objects the same way, to tell a revert of a live
edit (the same desired object applied again) from a new commit.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any


def project(live: Any, desired: Any) -> Any:
    """`live` restricted to the keys `desired` has, recursively through mappings;
    any other value (lists included, with their server defaults) is taken whole."""
    if isinstance(desired, Mapping) and isinstance(live, Mapping):
        return {key: project(live.get(key), value) for key, value in desired.items()}
    return live


# Made once: json.dumps with options builds an encoder per call, a third of its cost
# for the small values of a verdict.
_CANONICAL = json.JSONEncoder(sort_keys=True, default=str)


def canonical(obj: Any) -> str:
    """One text per value, whatever the order of its keys."""
    return _CANONICAL.encode(obj)


def digest(obj: Any) -> str:
    """A fixed-size stand-in for `canonical(obj)`, to remember many values cheaply."""
    return hashlib.sha256(canonical(obj).encode()).hexdigest()
