"""Our node agent: plays the kubelet for the local control plane.

It registers Nodes (capacity may include `nvidia.com/gpu`), keeps them Ready with leases, and
runs the pods the scheduler binds to them through a *runtime*:

- `simulate`: containers do not run; each is reported Running, and finishes only when told to
  (see `runtimes.SimulatedRuntime` for the annotations) — enough for controllers and operators.
- `exec`: each container's command runs as a local process (see `runtimes.ProcessRuntime`).

The agent itself (`agent.NodeAgent`) only watches pods, asks the runtime what their containers
are doing, writes pod status (`status.pod_status`, pure) and finishes deletions as a kubelet does.
Run it with `python -m litgpt_devcluster.node_agent --help`.
"""
