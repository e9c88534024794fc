// Package packaging holds no code: the directory has the deployment files
// (Kubernetes manifests, the nfpm config for the .deb and .rpm packages,
// their maintainer scripts, the host rules file) and deb_test.go, which
// builds the packages with scripts/package.sh and installs the .deb for
// real.
package packaging
