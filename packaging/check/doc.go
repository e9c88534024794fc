// Package check holds the tests of packaging/: the Kubernetes manifests,
// the kustomize overlays and the Helm chart (see manifests_test.go).
package check
