//go:build tools

// Package tools pins the real helm CLI that renders chart-based apps.
package tools

import _ "helm.sh/helm/v3/cmd/helm"
