//go:build tools

// Package tools pins the Kubernetes control-plane commands that the
// reconciler's integration tests run as real clusters.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
)
