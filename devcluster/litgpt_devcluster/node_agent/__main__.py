"""`python -m litgpt_devcluster.node_agent --kubeconfig K --node name:cpu=8,nvidia.com/gpu=2 ...`"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from kubernetes import config

from litgpt_devcluster.node_agent.agent import NodeAgent
from litgpt_devcluster.node_agent.nodes import NodeSpec
from litgpt_devcluster.node_agent.runtimes import make_runtime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="node_agent", description=__doc__)
    parser.add_argument("--kubeconfig", required=True, type=Path)
    parser.add_argument("--node", action="append", required=True, help="name:resource=qty,... (repeatable)")
    parser.add_argument("--mode", choices=("simulate", "exec"), default="simulate", help="for nodes without mode=...")
    parser.add_argument("--work-dir", type=Path, required=True, help="pod folders, volumes (PVCs), logs")
    parser.add_argument("--run-seconds", type=float, default=1.0, help="simulate: how long a finishing container runs")
    parser.add_argument("--job-exit-code", type=int, default=0, help="simulate: exit code of Job pods")
    parser.add_argument("--kubelet-port", type=int, default=0, help="serve container logs here (0: do not)")
    parser.add_argument("--tls-cert", type=Path, help="serving certificate for --kubelet-port")
    parser.add_argument("--tls-key", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    try:
        nodes = [NodeSpec.parse(spec, default_mode=args.mode) for spec in args.node]
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    api_client = config.new_client_from_config(config_file=str(args.kubeconfig))
    runtimes = {
        mode: make_runtime(
            mode, run_seconds=args.run_seconds, job_exit_code=args.job_exit_code,
            work_dir=args.work_dir, api_client=api_client, api_server=api_client.configuration.host,
        )
        for mode in {node.mode for node in nodes}
    }
    agent = NodeAgent(api_client, nodes, runtimes, work_dir=args.work_dir, kubelet_port=args.kubelet_port or 10250)
    if args.kubelet_port:
        if not (args.tls_cert and args.tls_key):
            parser.error("--kubelet-port needs --tls-cert and --tls-key")
        agent.serve_logs(args.tls_cert, args.tls_key)
    # SIGTERM (from `down` or the fixture) ends the loop, which then stops every container.
    signal.signal(signal.SIGTERM, lambda *_: agent.stopping.set())
    signal.signal(signal.SIGINT, lambda *_: agent.stopping.set())
    agent.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
