"""A local volume provisioner, so PersistentVolumeClaims bind as in a real cluster.

The agent installs a default StorageClass `local` whose provisioner is us; for each pending
claim of that class (or of no class) we create a hostPath PersistentVolume pre-bound to it
(`claimRef`), and the controller-manager's PV controller completes the binding. Released
volumes we made are deleted with their folder (reclaim policy Delete). The folder is the same
one exec mode maps the claim to: `<work>/pvc/<namespace>/<claim>`.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
from pathlib import Path

from kubernetes import client
from kubernetes.client.rest import ApiException

log = logging.getLogger("node-agent.provisioner")

PROVISIONER = "node-agent.litgpt.dev/local"
STORAGE_CLASS = "local"
POLL_S = 0.5


def claim_folder(work_dir: Path, namespace: str, claim: str) -> Path:
    return Path(work_dir) / "pvc" / namespace / claim


def storage_class() -> dict:
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": STORAGE_CLASS, "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
        "provisioner": PROVISIONER,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
    }


def volume_for(claim: dict, folder: Path) -> dict:
    meta, spec = claim["metadata"], claim["spec"]
    request = ((spec.get("resources") or {}).get("requests") or {}).get("storage", "1Gi")
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": f"pvc-{meta['uid']}", "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER}},
        "spec": {
            "capacity": {"storage": request},
            "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
            "volumeMode": spec.get("volumeMode", "Filesystem"),
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": spec.get("storageClassName") or "",
            "hostPath": {"path": str(folder), "type": "DirectoryOrCreate"},
            "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": meta["namespace"],
                         "name": meta["name"], "uid": meta["uid"]},
        },
    }


class Provisioner:
    """Provisions claims of the `local` class as hostPath volumes under `work_dir`/pvc. The node
    agent runs it in a thread; the real node as its own process (`python -m ...provisioner`)."""

    def __init__(self, api_client: client.ApiClient, work_dir: Path, stopping: threading.Event):
        self.core = client.CoreV1Api(api_client)
        self.storage = client.StorageV1Api(api_client)
        self.work_dir = Path(work_dir)
        self.stopping = stopping

    def install_storage_class(self) -> None:
        try:
            self.storage.create_storage_class(storage_class())
        except ApiException as error:
            if error.status != 409:
                raise

    def ours(self, class_name: str | None) -> bool:
        return not class_name or class_name == STORAGE_CLASS

    def run(self) -> None:
        while not self.stopping.wait(POLL_S):
            try:
                self._provision()
                self._reclaim()
            except Exception as error:  # the apiserver going away must not kill the agent
                log.warning("provisioning pass failed: %s", error)

    def _provision(self) -> None:
        claims = self.core.list_persistent_volume_claim_for_all_namespaces(_preload_content=False)
        for claim in json.loads(claims.data)["items"]:
            spec = claim["spec"]
            if spec.get("volumeName") or (claim.get("status") or {}).get("phase") != "Pending":
                continue
            if not self.ours(spec.get("storageClassName")) or claim["metadata"].get("deletionTimestamp"):
                continue
            meta = claim["metadata"]
            folder = claim_folder(self.work_dir, meta["namespace"], meta["name"])
            folder.mkdir(parents=True, exist_ok=True)
            # Writable for the pods' non-root user, as local-path provisioners make them: a
            # hostPath volume keeps the folder's owner (fsGroup does not apply to hostPath).
            folder.chmod(0o777)
            try:
                self.core.create_persistent_volume(volume_for(claim, folder))
                log.info("provisioned %s for claim %s/%s", f"pvc-{meta['uid']}", meta["namespace"], meta["name"])
            except ApiException as error:
                if error.status != 409:
                    raise

    def _reclaim(self) -> None:
        for volume in self.core.list_persistent_volume().items:
            annotations = volume.metadata.annotations or {}
            if annotations.get("pv.kubernetes.io/provisioned-by") != PROVISIONER:
                continue
            if volume.status.phase not in ("Released", "Failed"):
                continue
            try:
                self.core.delete_persistent_volume(volume.metadata.name)
            except ApiException as error:
                if error.status != 404:
                    raise
            if volume.spec.host_path and Path(volume.spec.host_path.path).is_relative_to(self.work_dir):
                shutil.rmtree(volume.spec.host_path.path, ignore_errors=True)
            log.info("deleted released volume %s", volume.metadata.name)


def main(argv: list[str] | None = None) -> int:
    import argparse

    from kubernetes import config

    parser = argparse.ArgumentParser(description="the local volume provisioner, on its own")
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--work-dir", required=True, type=Path, help="claim folders go to WORK_DIR/pvc/")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    provisioner = Provisioner(config.new_client_from_config(config_file=args.kubeconfig), args.work_dir,
                              threading.Event())
    provisioner.install_storage_class()
    provisioner.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
