"""Development tooling people run: the local control plane, the process node agent, the local Hub
file server with tiny models, and the end-to-end flow behind `make demo` and tests/e2e/.

Installed with the project (`pip install -e '.[dev]'`); the tests import it, never the reverse.
"""
