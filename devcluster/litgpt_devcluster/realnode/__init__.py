"""A real Kubernetes node (kubelet, containerd, runc, CNI, kube-proxy) in a network namespace of
its own, for the end-to-end flow with the project's images. See hack/README.md."""
