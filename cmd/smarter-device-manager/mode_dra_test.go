//go:build dra

package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/smarter-project/smarter-device-manager/daemon"
	"github.com/smarter-project/smarter-device-manager/dra"
)

// The DRA binary serves DRA by default, under the driver name the dra
// package defaults to, and builds its driver from a kubeconfig and the
// node's name (the API server is reached only once it runs); with no
// kubeconfig and no service account it says what to set.
func TestDRAOutputFromFlags(t *testing.T) {
	if defaultMode != modeDRA || defaultDriverName != dra.DefaultDriverName {
		t.Errorf("default mode %q, driver %q; want dra, %q", defaultMode, defaultDriverName, dra.DefaultDriverName)
	}
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte("apiVersion: v1\nkind: Config\ncurrent-context: x\n"+
		"clusters: [{name: c, cluster: {server: \"https://127.0.0.1:1\"}}]\nusers: [{name: u, user: {token: t}}]\n"+
		"contexts: [{name: x, context: {cluster: c, user: u}}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := parseFlags([]string{"--kubeconfig", kubeconfig, "--node-name", "node-a", "--kubelet-dir", dir}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	out, err := draOutput(f, nil, new(daemon.Stats), zerolog.Nop())
	if _, ok := out.(*dra.Driver); err != nil || !ok {
		t.Errorf("draOutput: %T, %v; want a *dra.Driver", out, err)
	}
	// The kubelet's own rate limit: client-go's default (5 per second)
	// throttled the claim reads of NodePrepareResources.
	if cfg, err := draClientConfig(f); err != nil {
		t.Errorf("client config: %v", err)
	} else if cfg.QPS < 50 || cfg.Burst < 100 {
		t.Errorf("client rate limit %v per second, burst %d; want 50, 100 (the kubelet's)", cfg.QPS, cfg.Burst)
	}
	t.Setenv("KUBERNETES_SERVICE_HOST", "") // not in a pod
	f.kubeconfig = ""
	if _, err := draOutput(f, nil, new(daemon.Stats), zerolog.Nop()); err == nil || !strings.Contains(err.Error(), "--kubeconfig") {
		t.Errorf("no kubeconfig outside a pod: %v; want an error naming --kubeconfig", err)
	}
}
