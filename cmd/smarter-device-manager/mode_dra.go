//go:build dra

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/rs/zerolog"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/smarter-project/smarter-device-manager/daemon"
	"github.com/smarter-project/smarter-device-manager/dra"
)

// draClientConfig is how the driver reaches the API server: --kubeconfig,
// or the pod's service account. Its rate limit is the kubelet's own
// default (kubeAPIQPS 50, kubeAPIBurst 100), not client-go's (5, 10):
// every NodePrepareResources reads its claim, so at client-go's a node
// starting a few pods waited 100-200 ms per claim on the limiter alone
// (e2e TestDRABench: NodePrepareResources p50 135 ms, 24 ms with these).
func draClientConfig(f *flags) (*rest.Config, error) {
	var cfg *rest.Config
	var err error
	if f.kubeconfig != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", f.kubeconfig)
	} else {
		cfg, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("DRA mode: the API server (set --kubeconfig outside a pod): %w", err)
	}
	cfg.UserAgent = "smarter-device-manager/" + version()
	cfg.QPS, cfg.Burst = 50, 100
	return cfg, nil
}

// defaultMode: the DRA binary serves DRA unless told otherwise (it can
// serve the device plugin too: it is the same program).
const defaultMode = modeDRA

// draOutput builds the DRA driver from the flags: the API server from
// --kubeconfig or the pod's service account, the node from --node-name,
// the kubelet's plugin directories below --kubelet-dir. The driver counts
// the errors it logs into stats.
func draOutput(f *flags, _ []string, stats *daemon.Stats, log zerolog.Logger) (daemon.Output, error) {
	// client-go and the kubelet plugin helper log through klog: into
	// this process's log, at its level. (klog's logger is process-wide,
	// so only the command sets it.)
	klog.SetLogger(dra.NewLogr(log))
	cfg, err := draClientConfig(f)
	if err != nil {
		return nil, err
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("DRA mode: %w", err)
	}
	node := f.nodeName
	if node == "" {
		// The kubelet's own default: the host name, lowercased.
		host, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("DRA mode: no --node-name, and no host name: %w", err)
		}
		node = strings.ToLower(host)
	}
	return dra.New(dra.Options{
		DriverName:  f.driverName,
		NodeName:    node,
		Client:      client,
		RegistryDir: filepath.Join(f.kubeletDir, "plugins_registry"),
		PluginDir:   filepath.Join(f.kubeletDir, "plugins", f.driverName),
		CDIDir:      f.cdiDir,
		RemoveAfter: f.removeAfter,
		Logger:      log,
		Stats:       stats,
	})
}
