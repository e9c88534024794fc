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

// defaultMode: the DRA binary serves DRA unless told otherwise (it can
// serve the device plugin too: it is the same program).
const defaultMode = modeDRA

// draOutput builds the DRA driver from the flags: the API server from
// --kubeconfig or the pod's service account, the node from --node-name,
// the kubelet's plugin directories below --kubelet-dir.
func draOutput(f *flags, _ []string, log zerolog.Logger) (daemon.Output, error) {
	// client-go and the kubelet plugin helper log through klog: into
	// this process's log, at its level. (klog's logger is process-wide,
	// so only the command sets it.)
	klog.SetLogger(dra.NewLogr(log))
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
		Logger:      log,
	})
}
