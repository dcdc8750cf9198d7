"""reconciler: an event-driven GitOps drift reconciler for a three-cluster homelab.

Desired state comes from what is committed in the GitOps repositories; live
state from the cluster APIs. See DESIGN.md for the pipeline and invariants.
"""
