"""Test support code shared by several test folders (local control plane, node agent)."""
