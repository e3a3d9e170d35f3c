#!/usr/bin/env bash
# The local Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler) plus our node agent, for tests and local use. See hack/README.md.
#
#   hack/control-plane.sh install   build the pinned binaries once (cached by version)
#   hack/control-plane.sh up        start everything in the background (prints `export KUBECONFIG=...`)
#   hack/control-plane.sh env       print `export KUBECONFIG=...`   (eval "$(hack/control-plane.sh env)")
#   hack/control-plane.sh status    list the running components
#   hack/control-plane.sh down      stop everything `up` started
#   hack/control-plane.sh up --real-node     the same control plane with a real node instead: kubelet,
#                                            containerd, runc, CNI, kube-proxy, in a network namespace
#                                            of its own (root; prints how to run kubectl in it)
#   hack/control-plane.sh down --real-node   stop it and remove the namespace
#
# Binaries go to ${LITGPT_CACHE:-~/.cache/litgpt-operator}/bin/<version>/; `up` keeps its state
# (certs, etcd data, logs, kubeconfig) in .../run/local/ (or --state-dir DIR before the command).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-}
if [[ -z $python ]]; then
  if [[ -x $repo/.venv/bin/python ]]; then python=$repo/.venv/bin/python; else python=python3; fi
fi
# Everything except `install` is the Python implementation the pytest fixture uses too.
# PYTHONPATH: `install` runs before the virtualenv exists (CI overlaps the two).
rn_py() { (cd "$repo" && PYTHONPATH="$repo/devcluster${PYTHONPATH:+:$PYTHONPATH}" "$python" -m litgpt_devcluster.realnode "$@"); }
cp_py() { (cd "$repo" && PYTHONPATH="$repo/devcluster${PYTHONPATH:+:$PYTHONPATH}" "$python" -m litgpt_devcluster.controlplane "$@"); }

install() {
  local dest
  dest=$(cp_py bin-dir)
  if cp_py installed; then
    echo "control-plane binaries already installed in $dest" >&2
    return 0
  fi
  if ! command -v go >/dev/null; then
    echo "error: building the control plane needs Go (see hack/control-plane/go.mod for the version)" >&2
    return 1
  fi
  echo "building the control-plane binaries into $dest (cold: ~15-20 min on 2 cores; later runs use the Go build cache)" >&2
  local start=$SECONDS tmp="$dest.partial.$$"
  rm -rf "$tmp"
  # Build into a temporary folder and rename: an interrupted build never looks installed.
  # `go build` is silent for many minutes: say every minute that it is still working.
  ( while sleep 60; do echo "  ... still building ($(( (SECONDS - start) / 60 )) min)" >&2; done ) &
  local ticker=$!
  trap 'kill $ticker 2>/dev/null; rm -rf "$tmp"' EXIT
  "$repo/hack/control-plane/build.sh" "$tmp"
  kill $ticker 2>/dev/null || true
  mkdir -p "$(dirname "$dest")"
  rm -rf "$dest"
  mv "$tmp" "$dest"
  trap - EXIT
  echo "installed in $dest after $((SECONDS - start))s:" >&2
  "$dest/kubectl" version --client >&2 || true
}

real_node=0
args=()
for arg in "$@"; do
  if [[ $arg == --real-node ]]; then real_node=1; else args+=("$arg"); fi
done
if ((real_node)); then
  case ${args[0]:-} in
    up|down) rn_py "${args[@]}" ;;
    env|status) rn_py shell ;;
    *) echo "--real-node goes with up, down, env or status" >&2; exit 2 ;;
  esac
  exit
fi

case ${1:-} in
  install) install ;;
  up|down|env|status|bin-dir|installed) cp_py "$@" ;;
  --state-dir) cp_py "$@" ;;
  *) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
