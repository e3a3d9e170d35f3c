"""`exec` mode: each container's command runs as a local process.

What a container sees, and how it differs from a real one:
- argv: `command` + `args` with `$(VAR)` expanded. The image is not used; an empty `command`
  (image entrypoint) cannot run and the container waits with reason `NoCommand`. PATH starts
  with the agent's Python environment, so the project's console scripts resolve.
- env: `env` (values, Secret/ConfigMap keys, pod fields) and `envFrom`, plus
  KUBERNETES_SERVICE_HOST/PORT pointing at the local apiserver; nothing else of the agent's
  environment except PATH, HOME, LANG and TMPDIR.
- volumes become local folders: emptyDir per pod under the agent's work dir, a PVC as the
  hostPath of its bound PersistentVolume (so data outlives the pod, as on a real volume; our
  provisioner's are `<work>/pvc/<ns>/<claim>`), hostPath as is, and
  configMap/secret/downwardAPI/projected files written at start. There is no mount namespace,
  so every occurrence of a mount path in argv, env values and workingDir is rewritten to its
  folder (`/data/out` → `<work>/pvc/ns/claim/out`).
- a pod with a service-account token volume also gets KUBECONFIG holding that token: the
  in-cluster token path does not exist on this machine, so clients (kubernetes, kopf) fall back
  to KUBECONFIG, and what the process may do is exactly what the pod's RBAC allows. The token is
  not refreshed (valid ~1 h, plenty for a test).
- stdout+stderr go to `<work>/pods/<ns>_<pod>_<uid8>/logs/<container>.log`.
- terminationMessagePath (default /dev/termination-log) is the file
  `<work>/pods/<ns>_<pod>_<uid8>/termination/<container>`, mapped like a mount; what the container
  writes there becomes `state.terminated.message`.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from kubernetes import client
from kubernetes.client.rest import ApiException

from litgpt_devcluster.node_agent import probes
from litgpt_devcluster.node_agent.probes import ProbeState
from litgpt_devcluster.node_agent.provisioner import claim_folder
from litgpt_devcluster.node_agent.runtimes import StartError, default_path
from litgpt_devcluster.node_agent.status import ContainerRun, PodRun, Termination
from litgpt_devcluster.processes import _die_with_parent

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
_CONFIG_ERROR = "CreateContainerConfigError"


@dataclass
class _Proc:
    popen: subprocess.Popen
    started_at: float
    log: Path
    spec: dict
    env: dict[str, str]
    cwd: Path
    mounts: list[tuple[str, str]]
    readiness: ProbeState | None = None
    kill_at: float | None = None  # SIGKILL deadline once SIGTERM was sent


class ProcessRuntime:
    def __init__(self, work_dir: Path, api_client: client.ApiClient, api_server: str):
        self.work_dir = Path(work_dir)
        self.core = client.CoreV1Api(api_client)
        self.ca_file = api_client.configuration.ssl_ca_cert
        self.api_server = api_server
        self.procs: dict[tuple[str, str], _Proc] = {}
        self._volumes: dict[str, dict[str, Path]] = {}  # pod uid → volume name → folder
        self._ended: dict[tuple[str, str], Termination] = {}  # stopped pods' containers, until polled

    # -- the Runtime protocol -----------------------------------------------------------------

    def start(self, run: PodRun, container: ContainerRun) -> None:
        pod = run.pod
        spec = _container_spec(pod, container)
        volumes = self._prepare_volumes(run)
        mounts = _mount_map(spec, volumes)
        # The kubelet mounts a writable file at terminationMessagePath and reports what the
        # container left there; here it is a per-container file, the path mapped like a mount.
        termination = self.pod_dir(pod) / "termination" / container.name
        termination.parent.mkdir(parents=True, exist_ok=True)
        termination.write_text("")
        mounts = sorted(mounts + [(spec.get("terminationMessagePath") or "/dev/termination-log", str(termination))],
                        key=lambda pair: len(pair[0]), reverse=True)
        env = self._environment(run, spec, mounts)
        argv = [_map_paths(_expand(a, env), mounts) for a in (spec.get("command") or []) + (spec.get("args") or [])]
        if not spec.get("command"):
            raise StartError("NoCommand", f"container {container.name} has no command: exec mode cannot run an image's entrypoint")
        cwd = Path(_map_paths(spec["workingDir"], mounts)) if spec.get("workingDir") else self.pod_dir(pod) / "work"
        cwd.mkdir(parents=True, exist_ok=True)
        log = self.pod_dir(pod) / "logs" / f"{container.name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            try:
                popen = subprocess.Popen(
                    argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True, preexec_fn=_die_with_parent,
                )
            except OSError as error:  # command not found, not executable: as a runtime would say
                raise StartError("RunContainerError", f"cannot run {argv[0]!r}: {error.strerror}") from error
        started = time.time()
        probe = spec.get("readinessProbe")
        readiness = ProbeState.for_container(probe, started) if probe else None
        self.procs[(run.uid, container.name)] = _Proc(popen, started, log, spec, env, cwd, mounts, readiness)

    def ready(self, run: PodRun, container: ContainerRun) -> bool:
        proc = self.procs.get((run.uid, container.name))
        if proc is None or proc.popen.poll() is not None:
            return False
        if proc.readiness is None:
            return True
        probe = proc.readiness.probe
        if "exec" in probe:  # the probe's command sees the container's paths and env, as inside it
            probe = {**probe, "exec": {"command": [_map_paths(a, proc.mounts) for a in probe["exec"]["command"]]}}
        return proc.readiness.update(lambda: probes.check(probe, proc.spec, proc.env, str(proc.cwd)))

    def poll(self, run: PodRun, container: ContainerRun) -> Termination | None:
        proc = self.procs.get((run.uid, container.name))
        if proc is None:
            return self._ended.pop((run.uid, container.name), None)
        code = proc.popen.poll()
        if code is None:
            return None
        # A process killed by signal N shows as 128+N, as a container's exit code does.
        exit_code = 128 - code if code < 0 else code
        # What the container wrote to its termination message file; when it wrote nothing, the
        # log's last line explains a failure (terminationMessagePolicy FallbackToLogsOnError).
        termination = proc.log.parent.parent / "termination" / proc.spec["name"]
        message = termination.read_text(errors="replace").strip()[:4096] if termination.is_file() else ""
        if not message and exit_code != 0:
            message = _last_line(proc.log)
        return Termination(exit_code, proc.started_at, time.time(), message)

    def stop_pod(self, run: PodRun, grace_s: float) -> None:
        now = time.time()
        for (uid, _), proc in self.procs.items():
            if uid != run.uid or proc.popen.poll() is not None and not _group_alive(proc.popen.pid):
                continue
            if proc.kill_at is None:
                proc.kill_at = now + grace_s
                _signal_group(proc.popen.pid, signal.SIGTERM if grace_s > 0 else signal.SIGKILL)
            elif now >= proc.kill_at:
                _signal_group(proc.popen.pid, signal.SIGKILL)
        if self.pod_stopped(run):
            for key in [k for k in self.procs if k[0] == run.uid]:
                # Keep how it ended: the agent reports the exit code before deleting the pod.
                running = any(c.name == key[1] and c.running for c in run.containers)
                ended = self.poll(run, ContainerRun(key[1], "")) if running else None
                if ended is not None:
                    self._ended[key] = ended
                del self.procs[key]
            self._volumes.pop(run.uid, None)

    def pod_stopped(self, run: PodRun) -> bool:
        return all(
            proc.popen.poll() is not None and not _group_alive(proc.popen.pid)
            for (uid, _), proc in self.procs.items() if uid == run.uid
        )

    def shutdown(self) -> None:
        for proc in self.procs.values():
            _signal_group(proc.popen.pid, signal.SIGTERM)
        deadline = time.time() + 5
        while time.time() < deadline and any(p.popen.poll() is None for p in self.procs.values()):
            time.sleep(0.05)
        for proc in self.procs.values():
            _signal_group(proc.popen.pid, signal.SIGKILL)
            proc.popen.wait()
        self.procs.clear()

    # -- folders ------------------------------------------------------------------------------

    def pod_dir(self, pod: dict) -> Path:
        meta = pod["metadata"]
        return self.work_dir / "pods" / f"{meta['namespace']}_{meta['name']}_{meta['uid'][:8]}"

    def _prepare_volumes(self, run: PodRun) -> dict[str, Path]:
        if run.uid in self._volumes:
            return self._volumes[run.uid]
        pod, volumes = run.pod, {}
        namespace = pod["metadata"]["namespace"]
        for volume in pod["spec"].get("volumes") or []:
            name = volume["name"]
            folder = self.pod_dir(pod) / "volumes" / name
            if "emptyDir" in volume:
                folder.mkdir(parents=True, exist_ok=True)
            elif "persistentVolumeClaim" in volume:
                folder = self._claim_path(namespace, volume["persistentVolumeClaim"]["claimName"])
                folder.mkdir(parents=True, exist_ok=True)
            elif "hostPath" in volume:
                folder = Path(volume["hostPath"]["path"])
            elif "configMap" in volume or "secret" in volume:
                _write_files(folder, self._key_files(namespace, volume))
            elif "downwardAPI" in volume:
                _write_files(folder, _downward_files(pod, volume["downwardAPI"].get("items") or []))
            elif "projected" in volume:
                _write_files(folder, self._projected_files(pod, volume["projected"].get("sources") or []))
            else:
                kind = next((k for k in volume if k != "name"), "?")
                raise StartError(_CONFIG_ERROR, f"volume {name}: type {kind} is not supported in exec mode")
            volumes[name] = folder
        self._volumes[run.uid] = volumes
        return volumes

    def _claim_path(self, namespace: str, claim: str) -> Path:
        """The folder of the claim's bound hostPath volume (ours or one a test made), so the data
        lives where the PersistentVolume says; our provisioner's folder otherwise."""
        try:
            volume_name = self.core.read_namespaced_persistent_volume_claim(claim, namespace).spec.volume_name
            if volume_name:
                host_path = self.core.read_persistent_volume(volume_name).spec.host_path
                if host_path is not None:
                    return Path(host_path.path)
        except ApiException as error:
            if error.status != 404:
                raise
            raise StartError(_CONFIG_ERROR, f'persistentvolumeclaim "{claim}" not found') from error
        return claim_folder(self.work_dir, namespace, claim)

    def _key_files(self, namespace: str, source: dict) -> dict[str, bytes]:
        if "configMap" in source:
            ref, data = source["configMap"], self._configmap(namespace, source["configMap"]["name"], source["configMap"].get("optional"))
        else:
            ref = source["secret"]
            name = ref.get("secretName") or ref.get("name")
            data = self._secret(namespace, name, ref.get("optional"))
        items = ref.get("items")
        if not items:
            return data
        return {item["path"]: data[item["key"]] for item in items if item["key"] in data}

    def _projected_files(self, pod: dict, sources: list[dict]) -> dict[str, bytes]:
        files: dict[str, bytes] = {}
        for source in sources:
            if "serviceAccountToken" in source:
                token_source = source["serviceAccountToken"]
                files[token_source["path"]] = self._token(pod, token_source).encode()
            elif "downwardAPI" in source:
                files.update(_downward_files(pod, source["downwardAPI"].get("items") or []))
            else:
                files.update(self._key_files(pod["metadata"]["namespace"], source))
        return files

    def _token(self, pod: dict, source: dict) -> str:
        # A real bound token for the pod's service account, bound to the pod (as a kubelet does).
        meta = pod["metadata"]
        spec = {"expirationSeconds": source.get("expirationSeconds", 3607),
                "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": meta["name"], "uid": meta["uid"]}}
        if source.get("audience"):
            spec["audiences"] = [source["audience"]]
        response = self.core.create_namespaced_service_account_token(
            pod["spec"].get("serviceAccountName", "default"), meta["namespace"], {"spec": spec})
        return response.status.token

    def _configmap(self, namespace: str, name: str, optional: bool | None) -> dict[str, bytes]:
        try:
            cm = self.core.read_namespaced_config_map(name, namespace)
        except ApiException as error:
            if error.status == 404 and optional:
                return {}
            raise StartError(_CONFIG_ERROR, f'configmap "{name}" not found') from error
        data = {k: v.encode() for k, v in (cm.data or {}).items()}
        data.update({k: base64.b64decode(v) for k, v in (cm.binary_data or {}).items()})
        return data

    def _secret(self, namespace: str, name: str, optional: bool | None) -> dict[str, bytes]:
        try:
            secret = self.core.read_namespaced_secret(name, namespace)
        except ApiException as error:
            if error.status == 404 and optional:
                return {}
            raise StartError(_CONFIG_ERROR, f'secret "{name}" not found') from error
        return {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}

    # -- environment --------------------------------------------------------------------------

    def _environment(self, run: PodRun, spec: dict, mounts: list[tuple[str, str]]) -> dict[str, str]:
        pod = run.pod
        namespace = pod["metadata"]["namespace"]
        api = urlparse(self.api_server)
        # PYTHONPATH too: a container runs the code the agent runs (a worktree's, under test), as
        # PATH gives it the agent's Python environment.
        env = {key: os.environ[key] for key in ("HOME", "LANG", "TMPDIR", "PYTHONPATH") if key in os.environ}
        env.update(
            PATH=default_path(),
            HOSTNAME=pod["metadata"]["name"],
            KUBERNETES_SERVICE_HOST=api.hostname or "127.0.0.1",
            KUBERNETES_SERVICE_PORT=str(api.port or 443),
        )
        sa_folder = dict(mounts).get(SA_DIR)
        if sa_folder and (Path(sa_folder) / "token").exists():
            env["KUBECONFIG"] = str(self._token_kubeconfig(pod, Path(sa_folder)))
        for source in spec.get("envFrom") or []:
            prefix = source.get("prefix", "")
            if "configMapRef" in source:
                ref = source["configMapRef"]
                data = self._configmap(namespace, ref["name"], ref.get("optional"))
            else:
                ref = source["secretRef"]
                data = self._secret(namespace, ref["name"], ref.get("optional"))
            env.update({prefix + k: v.decode(errors="replace") for k, v in data.items()})
        for var in spec.get("env") or []:
            if "valueFrom" in var:
                value = self._value_from(pod, spec, var["valueFrom"])
                if value is None:
                    continue
            else:
                value = _expand(var.get("value", ""), env)
            env[var["name"]] = _map_pod_dns(_map_paths(value, mounts), pod)
        return env

    def _value_from(self, pod: dict, spec: dict, source: dict) -> str | None:
        namespace = pod["metadata"]["namespace"]
        for kind, read in (("secretKeyRef", self._secret), ("configMapKeyRef", self._configmap)):
            if kind in source:
                ref = source[kind]
                data = read(namespace, ref["name"], ref.get("optional"))
                if ref["key"] not in data:
                    if ref.get("optional"):
                        return None
                    raise StartError(_CONFIG_ERROR, f'couldn\'t find key {ref["key"]} in {kind[:-6]} {namespace}/{ref["name"]}')
                return data[ref["key"]].decode(errors="replace")
        if "fieldRef" in source:
            return _field(pod, source["fieldRef"]["fieldPath"])
        if "resourceFieldRef" in source:
            resource = source["resourceFieldRef"]["resource"]
            section, _, name = resource.partition(".")
            return str((spec.get("resources") or {}).get(section, {}).get(name, "0"))
        raise StartError(_CONFIG_ERROR, f"unsupported env source {sorted(source)}")

    def _token_kubeconfig(self, pod: dict, sa_folder: Path) -> Path:
        namespace = pod["metadata"]["namespace"]
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "pod",
            "clusters": [{"name": "local", "cluster": {"server": self.api_server, "certificate-authority": self.ca_file}}],
            # The token inline, not `tokenFile`: some clients (kopf's own login) read only `token`.
            "users": [{"name": "pod", "user": {"token": (sa_folder / "token").read_text().strip()}}],
            "contexts": [{"name": "pod", "context": {"cluster": "local", "user": "pod", "namespace": namespace}}],
        }
        path = self.pod_dir(pod) / "kubeconfig"
        path.write_text(json.dumps(config, indent=2))
        return path


# --- helpers (pure) ----------------------------------------------------------------------------

def _container_spec(pod: dict, container: ContainerRun) -> dict:
    specs = pod["spec"].get("initContainers" if container.init else "containers") or []
    return next(c for c in specs if c["name"] == container.name)


def _mount_map(spec: dict, volumes: dict[str, Path]) -> list[tuple[str, str]]:
    """(mountPath, local folder) pairs, longest mount path first so nested mounts win."""
    pairs = []
    for mount in spec.get("volumeMounts") or []:
        if mount["name"] not in volumes:
            raise StartError(_CONFIG_ERROR, f"volume mount {mount['name']} names no volume of the pod")
        folder = volumes[mount["name"]] / mount["subPath"] if mount.get("subPath") else volumes[mount["name"]]
        if not folder.exists():  # as the kubelet, create a missing subPath folder
            folder.mkdir(parents=True)
        pairs.append((mount["mountPath"].rstrip("/") or "/", str(folder)))
    return sorted(pairs, key=lambda pair: len(pair[0]), reverse=True)


# Host folders that pods see as they are: the runtime pods run is this checkout's virtualenv (there
# is no image), so a path into it must survive a pod that mounts, say, an emptyDir at /tmp while
# the checkout itself lives under /tmp (as a CI clone may).
HOST_PREFIXES: tuple[str, ...] = tuple(sorted({sys.prefix, str(Path(__file__).resolve().parents[3])}, key=len, reverse=True))


def _map_paths(text: str, mounts: list[tuple[str, str]], keep: tuple[str, ...] = HOST_PREFIXES) -> str:
    """Rewrite each mount path that appears as a whole path prefix in `text` to its folder.

    One pass over `text` (longest mount path first): a folder already substituted is never
    rewritten again, e.g. a claim folder under /tmp when the pod also mounts something at /tmp.
    Paths under `keep` (the host's runtime installation) are left alone."""
    if not mounts:
        return text
    folders = dict(mounts)
    alternatives = "|".join(re.escape(m) for m in sorted(folders, key=len, reverse=True))
    pattern = r"(?<![\w./-])(" + alternatives + r")(?=/|$|[^\w.-])"

    def replace(match: re.Match) -> str:
        rest = text[match.start():]
        if any(rest == k or rest.startswith(k + "/") or rest.startswith(k + ":") for k in keep):
            return match.group(0)
        return folders[match.group(1)]

    return re.sub(pattern, replace, text)


def _expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion: defined variables are replaced, `$$` escapes, the rest stays."""
    def replace(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", replace, text)


def _field(pod: dict, path: str) -> str:
    meta, spec, status = pod["metadata"], pod["spec"], pod.get("status") or {}
    match = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if match:
        return (meta.get(match.group(1)) or {}).get(match.group(2), "")
    fields = {
        "metadata.name": meta["name"], "metadata.namespace": meta["namespace"], "metadata.uid": meta["uid"],
        "spec.nodeName": spec.get("nodeName", ""), "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.hostIP": "127.0.0.1", "status.podIP": status.get("podIP", ""),
    }
    if path not in fields:
        raise StartError(_CONFIG_ERROR, f"unsupported fieldRef {path}")
    return fields[path]


def _downward_files(pod: dict, items: list[dict]) -> dict[str, bytes]:
    return {item["path"]: _field(pod, item["fieldRef"]["fieldPath"]).encode() for item in items if "fieldRef" in item}


def _write_files(folder: Path, files: dict[str, bytes]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for relative, content in files.items():
        target = folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)


def _last_line(log: Path) -> str:
    try:
        with open(log, "rb") as handle:
            handle.seek(max(0, log.stat().st_size - 2048))
            lines = handle.read().decode(errors="replace").strip().splitlines()
        return lines[-1][:1000] if lines else ""
    except OSError:
        return ""


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _map_pod_dns(value: str, pod: dict) -> str:
    """A value that is a pod DNS name of the pod's own subdomain (`<host>.<subdomain>[.<ns>[.svc
    [.cluster.local]]]`) becomes 127.0.0.1: there is no cluster DNS here and every exec pod is a
    process on this host, so e.g. a distributed job's MASTER_ADDR (`job-0.job`) is this host."""
    subdomain = pod["spec"].get("subdomain")
    if not subdomain:
        return value
    namespace = re.escape(pod["metadata"]["namespace"])
    pattern = rf"[a-z0-9]([-a-z0-9]*[a-z0-9])?\.{re.escape(subdomain)}(\.{namespace}(\.svc(\.cluster\.local)?)?)?"
    return "127.0.0.1" if re.fullmatch(pattern, value) else value
