#!/usr/bin/env bash
# The end-to-end flow on a kind cluster, with the images built from the Dockerfile, for people
# with Docker (it needs docker, kind, kubectl, helm and internet access to the Hugging Face Hub).
# Not exercised in CI; `make demo` runs the same flow without Docker.
#
#   hack/kind-e2e.sh          create the cluster `litgpt`, install, run examples/full-flow.yaml, query
#   hack/kind-e2e.sh --down   the same, then delete the cluster
set -euo pipefail
cd "$(dirname "$0")/.."
cluster=${KIND_CLUSTER:-litgpt}
tag=${IMAGE_TAG:-dev}
ns=${NAMESPACE:-litgpt-demo}
port=${LOCAL_PORT:-8000}
runtime_image=litgpt-runtime:$tag
operator_image=litgpt-operator:$tag

step() { printf '\n==> %s\n' "$*"; }

step "building the images (Dockerfile targets runtime and operator)"
docker build --target runtime -t "$runtime_image" .
docker build --target operator -t "$operator_image" .

step "kind cluster $cluster"
kind get clusters | grep -qx "$cluster" || kind create cluster --name "$cluster" --wait 120s
kubectl config use-context "kind-$cluster"
kind load docker-image --name "$cluster" "$runtime_image" "$operator_image"

step "installing the chart (CRDs, RBAC, operator)"
kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f -
helm upgrade --install litgpt-operator charts/litgpt-operator \
  --namespace litgpt-system --create-namespace \
  --set replicaCount=1 --set peering.enabled=false \
  --set image.repository=litgpt-operator --set image.tag="$tag" --set image.pullPolicy=Never \
  --set runtime.image="$runtime_image" --set runtime.imagePullPolicy=Never \
  --wait --timeout 5m

step "applying examples/full-flow.yaml (model -> LoRA finetune -> server)"
kubectl apply -n "$ns" -f examples/full-flow.yaml
kubectl wait -n "$ns" --for=jsonpath='{.status.phase}'=Ready litgptmodel/flow-model --timeout=15m
kubectl wait -n "$ns" --for=jsonpath='{.status.phase}'=Succeeded finetunejob/flow-finetune --timeout=30m
kubectl wait -n "$ns" --for=jsonpath='{.status.phase}'=Ready modelserver/flow-server --timeout=15m
kubectl get litgpt -n "$ns"

step "querying the server through its Service (port-forward to localhost:$port)"
kubectl port-forward -n "$ns" svc/flow-server "$port:8000" >/dev/null &
forward=$!
trap 'kill "$forward" 2>/dev/null || true' EXIT
for _ in $(seq 30); do
  curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
  sleep 1
done
model=$(curl -sf "http://127.0.0.1:$port/v1/models" | python3 -c 'import json, sys; print(json.load(sys.stdin)["data"][0]["id"])')
curl -sf "http://127.0.0.1:$port/v1/chat/completions" -H 'Content-Type: application/json' \
  -d "{\"model\": \"$model\", \"messages\": [{\"role\": \"user\", \"content\": \"Say hello.\"}], \"max_tokens\": 16}"
echo

if [[ ${1:-} == --down ]]; then
  step "deleting the cluster"
  kind delete cluster --name "$cluster"
else
  printf '\nThe cluster is up: kubectl get litgpt -n %s; kubectl port-forward -n %s svc/flow-server %s:8000\n' \
    "$ns" "$ns" "$port"
fi
