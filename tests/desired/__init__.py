"""Desired state from real git repositories: config, sources, catalogue, render."""
