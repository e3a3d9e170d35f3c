#!/usr/bin/env bash
# Builds the pinned binaries of go.mod (the control plane, and kubelet and kube-proxy for the real
# node) into $1 in ONE `go build`, so that the packages the binaries share (client-go,
# apimachinery, grpc, ...) compile once and the node runs exactly the control plane's version.
# Usage: hack/control-plane/build.sh OUT_DIR
set -euo pipefail
out=${1:?usage: build.sh OUT_DIR}
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"

# The version the Kubernetes binaries report (`kubectl version`, /version): without these they
# say v0.0.0-master and tools that compare server versions (helm's kubeVersion) misbehave.
k8s_version=$(go list -m -f '{{.Version}}' k8s.io/kubernetes)
helm_version=$(go list -m -f '{{.Version}}' helm.sh/helm/v3)
major=${k8s_version#v}; major=${major%%.*}
minor=${k8s_version#v*.}; minor=${minor%%.*}
build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
done
ldflags+=" -X helm.sh/helm/v3/internal/version.version=$helm_version"
ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"

mkdir -p "$out"
# CGO off: static binaries that run on any Linux box, and no C compiler needed.
CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$out/" \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler \
  k8s.io/kubernetes/cmd/kubectl \
  k8s.io/kubernetes/cmd/kubelet \
  k8s.io/kubernetes/cmd/kube-proxy \
  go.etcd.io/etcd/server/v3 \
  helm.sh/helm/v3/cmd/helm
# A main package at a /vN path is named after the element before it.
mv "$out/server" "$out/etcd"
