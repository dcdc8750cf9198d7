//go:build tools

// Package tools pins the VictoriaLogs server that log-shipping tests send to,
// the same store the homelab's monitoring cluster runs.
package tools

import _ "github.com/VictoriaMetrics/VictoriaLogs/app/victoria-logs"
