"""Notifications to, and approvals from, the homelab's Matrix room (issue 15)."""
