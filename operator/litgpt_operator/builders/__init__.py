"""Pure functions: a custom resource (+ settings) -> the Kubernetes objects that realise it."""
