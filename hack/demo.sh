#!/usr/bin/env bash
# `make demo`: the end-to-end flow on this machine (see README, "End to end").
#   bash hack/demo.sh            run the flow; leave the cluster up, serving a model
#   bash hack/demo.sh --down     run the flow, then stop everything (or DEMO_TEARDOWN=1)
# On the real node (kubelet, containerd, runc, the project's images) when this machine allows it
# (root, runc can start a container, the tools installed): otherwise on the node agent's exec
# node, whose pods are local processes. Either way it says which, and why.
# Needs the virtualenv (`make venv`) and builds the control-plane binaries (and, for the real
# node, the images) on first use.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$repo/.venv/bin/python}
if [[ ! -x $python ]]; then
  echo "error: no virtualenv at $repo/.venv: run 'make demo' (it creates it) or 'make venv'" >&2
  exit 1
fi
cd "$repo"
export PYTHONPATH="$repo/devcluster${PYTHONPATH:+:$PYTHONPATH}"
if ! "$python" -m litgpt_devcluster.controlplane installed; then
  echo "The control-plane binaries are not built yet: building them now." >&2
  echo "The first build takes ~15-20 minutes on 2 cores (later runs reuse it)." >&2
  bash "$repo/hack/control-plane.sh" install
fi

down=0
for arg in "$@"; do [[ $arg == --down ]] && down=1; done
[[ ${DEMO_TEARDOWN:-} == 1 ]] && down=1

if [[ ${DEMO_NODE:-auto} != exec ]] && why=$("$python" -m litgpt_devcluster.realnode check 2>&1); then
  echo "make demo: on the real node: kubelet, containerd and runc run the project's images (DEMO_NODE=exec: the exec node)"
  if [[ -f $repo/hack/images.sh ]]; then
    bash "$repo/hack/images.sh" build
  fi
  "$python" -m litgpt_devcluster.realnode down >/dev/null 2>&1 || true
  "$python" -m litgpt_devcluster.realnode up
  status=0
  "$python" -m litgpt_devcluster.realnode exec -- "$python" -m litgpt_devcluster.e2e --real-node "$@" || status=$?
  if ((down)); then
    "$python" -m litgpt_devcluster.realnode down
  elif ((status != 0)); then
    echo "the real node is left running to look at: hack/control-plane.sh down --real-node stops it" >&2
  fi
  exit $status
fi
echo "make demo: on the node agent's exec node (pods are local processes, no images), because the real node" \
  "cannot run here: ${why:-DEMO_NODE=exec}"
exec "$python" -m litgpt_devcluster.e2e "$@"
