"""Policies: the declarative rules in `policies/`, loaded and validated at start-up.

Kinds (apiVersion reconciler.kernow.io/v1alpha1): ValidatingPolicy (CEL
validations, reported like drift under the policy's name), IgnoreDifferences
(fields that are not drift), PruneProtection and PruneAllowance (what prune
must leave alone, and the explicit exceptions), ClusterMode (clusters forced
into report mode).
"""

from pathlib import Path

from reconciler.policy.evaluate import Policies, load_policies
from reconciler.policy.load import PolicyError

# The defaults shipped with the reconciler, at the root of the source tree.
SHIPPED_POLICIES = Path(__file__).resolve().parents[2] / "policies"

__all__ = ["SHIPPED_POLICIES", "Policies", "PolicyError", "load_policies"]
