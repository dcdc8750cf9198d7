"""Test environment: real Kubernetes control planes built from Go modules, run on loopback."""
