// Package cluster is the single-node cluster suite (make e2e-cluster): a
// real kube-apiserver, etcd, kube-scheduler, kube-controller-manager,
// kubelet and containerd, built from their Go modules at the versions this
// go.mod pins (scripts/cluster-build.sh), driven through the API server with
// the project's own manifests.
package cluster
