#!/usr/bin/env bash
# `make demo`: the end-to-end flow on this machine (see README, "End to end").
#   bash hack/demo.sh            run the flow; leave the cluster up, serving a model
#   bash hack/demo.sh --down     run the flow, then stop everything (or DEMO_TEARDOWN=1)
# Needs the virtualenv (`make venv`) and builds the control-plane binaries on first use.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$repo/.venv/bin/python}
if [[ ! -x $python ]]; then
  echo "error: no virtualenv at $repo/.venv: run 'make demo' (it creates it) or 'make venv'" >&2
  exit 1
fi
if ! (cd "$repo" && "$python" -m litgpt_devcluster.controlplane installed); then
  echo "The control-plane binaries are not built yet: building them now." >&2
  echo "The first build takes ~15-20 minutes on 2 cores (later runs reuse it)." >&2
  bash "$repo/hack/control-plane.sh" install
fi
cd "$repo"
exec "$python" -m litgpt_devcluster.e2e "$@"
