"""The dev cluster's Service range: one definition for the API server's
--service-cluster-ip-range, the real node's route to it and the serving certificate.

A /16 holds 65,534 Services. The /24 it replaces held 253, and the scale benchmark's N = 1,000
has 333 ModelServers: the rest got "failed to allocate a serviceIP: range is full"
(benchmarks/README.md, "The operator at scale").
"""

from __future__ import annotations

import ipaddress

SERVICE_CIDR = "10.0.0.0/16"
# The first address of the range is the `kubernetes` Service's (the API server takes it itself).
KUBERNETES_SERVICE_IP = str(ipaddress.ip_network(SERVICE_CIDR)[1])
