//go:build tools

// Package tools pins the CNCF distribution registry that OCI chart tests push
// charts to and the reconciler pulls them from, as from any OCI registry.
package tools

import _ "github.com/distribution/distribution/v3/cmd/registry"
