#!/usr/bin/env bash
# Prints the `replace (...)` block for go.mod when pinning k8s.io/kubernetes at $1 (vX.Y.Z):
# every staging module of that release (its own go.mod's `=> ./staging/...` lines) replaced by
# its published v0.Y.Z. Paste it over the block in go.mod, then `go mod tidy`.
set -euo pipefail
version=${1:?usage: gen-replaces.sh vX.Y.Z}
gomod=$(go mod download -json "k8s.io/kubernetes@$version" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')
staging="v0.${version#v1.}"
echo "replace ("
grep -E '=> \./staging/' "$gomod" | awk -v v="$staging" '{printf "\t%s => %s %s\n", $1, $1, v}'
echo ")"
