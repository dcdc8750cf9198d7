"""The diff stage: desired vs live objects in, Drift out. Pure: no I/O, no clients.

Modules, in the order an object passes through them: `normalize` (server-written
fields), `ignore` and `jq` (Argo CD ignoreDifferences), `redact` (secrets),
`fieldsets` and `align` (field ownership, merge keys), `compare` (deepdiff),
`render` (text and JSON).
"""

from reconciler.diff.compare import diff_object
from reconciler.diff.ignore import IgnoreRule, parse_ignore_rules
from reconciler.diff.pointer import RuleError
from reconciler.diff.redact import SECRET_RULE, RedactionRule, redact, redact_text
from reconciler.diff.render import drift_to_json, render_text

# The version of what the diff stage calls in sync (normalising, comparing, the no-op
# tests, the fields Argo CD applied), part of every stored in-sync verdict: raise it
# with any change that can turn a verdict, and an upgraded daemon looks at every
# object again rather than trust verdicts the old diff gave.
DIFF_VERSION = "1"

__all__ = [
    "DIFF_VERSION",
    "SECRET_RULE",
    "IgnoreRule",
    "RedactionRule",
    "RuleError",
    "diff_object",
    "drift_to_json",
    "parse_ignore_rules",
    "redact",
    "redact_text",
    "render_text",
]
