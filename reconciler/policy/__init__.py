"""Policies: the declarative rules in `policies/`, loaded and validated at start-up.

Kinds (apiVersion reconciler.kernow.io/v1alpha1): ValidatingPolicy (CEL
validations, reported like drift under the policy's name), IgnoreDifferences
(fields that are not drift), PruneProtection and PruneAllowance (what prune
must leave alone, and the explicit exceptions), ClusterMode (clusters forced
into report mode).
"""

import sys
import types
from pathlib import Path

# The CEL runtime's package imports its command-line tool (typer, rich, prompt_toolkit)
# beside the runtime: a fifth of a CPU second at every start of every command, for a
# tool nothing here runs. An empty module in its place keeps the runtime's import from
# loading it; this package is the only one that imports `cel`, and runs first.
sys.modules.setdefault("cel.cli", types.ModuleType("cel.cli"))

from reconciler.policy.evaluate import Policies, load_policies  # noqa: E402
from reconciler.policy.load import PolicyError  # noqa: E402

# The defaults shipped with the reconciler, at the root of the source tree.
SHIPPED_POLICIES = Path(__file__).resolve().parents[2] / "policies"

__all__ = ["SHIPPED_POLICIES", "Policies", "PolicyError", "load_policies"]
