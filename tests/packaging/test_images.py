"""The images that hack/images.sh builds with buildah from the Dockerfile (no Docker, no registry).

The built runtime image runs `litgpt`, the operator image `litgpt-operator`, both as user 1000;
the operator image holds no torch; neither image keeps the builder's pip settings; our package is
a small layer on top of the dependency layer; the docker archives for containerd carry the image
names. The first build takes minutes (the runtime image downloads torch, ~5-10 min on 2 cores);
later ones reuse the layers and the archives. Skipped where buildah, runc, mmdebstrap or gcc is
missing, or without root.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "hack" / "images.sh"
TOOLS = ("buildah", "runc", "mmdebstrap", "gcc")

pytestmark = pytest.mark.slow


def images_script(*args: str, timeout: float = 60) -> str:
    result = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


@pytest.fixture(scope="module")
def images() -> dict[str, str]:
    """{"runtime": name, "operator": name, "pause": name}, built (or found built) by hack/images.sh."""
    missing = [tool for tool in TOOLS if not shutil.which(tool)]
    if missing:
        pytest.skip(f"building images needs {', '.join(missing)} (apt-get install -y buildah runc mmdebstrap gcc)")
    if os.geteuid() != 0:
        pytest.skip("building images needs root (buildah's storage, mmdebstrap's chroot)")
    images_script("build", timeout=3600)
    return dict(zip(("runtime", "operator", "pause"), images_script("names").split()))


def buildah(*args: str, timeout: float = 120) -> str:
    result = subprocess.run(["buildah", *args], capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"buildah {' '.join(args)}: {result.stderr[-2000:]}"
    return result.stdout


def run_in(image: str, *argv: str) -> str:
    """Run argv in a fresh container of `image` as the image's user, without network; its stdout."""
    container = buildah("from", "--pull=never", image).strip()
    try:
        return buildah("run", "--runtime", "runc", "--network", "none", container, "--", *argv)
    finally:
        buildah("rm", container)


def config_of(image: str) -> dict:
    return json.loads(buildah("inspect", "--type", "image", image))["OCIv1"]["config"]


@pytest.mark.parametrize("target,script,expect", [
    ("runtime", "litgpt", "finetune_lora"),
    ("operator", "litgpt-operator", "LITGPT_OPERATOR_"),
])
def test_image_runs_its_console_script_as_user_1000(images, target, script, expect):
    config = config_of(images[target])
    assert config["User"] == "1000:1000" and config["Entrypoint"] == [script]
    out = run_in(images[target], "sh", "-c", f"id -u; id -g; {script} --help")
    uid, gid, help_text = out.split("\n", 2)
    assert (uid, gid) == ("1000", "1000")
    assert expect in help_text, help_text[:2000]


def test_operator_image_has_no_torch_and_runtime_image_has_cuda_torch(images):
    probe = "import importlib.util as u; print(u.find_spec('torch') is not None)"
    assert run_in(images["operator"], "python", "-c", probe).strip() == "False"
    version = run_in(images["runtime"], "python", "-c", "import torch; print(torch.version.cuda)").strip()
    assert version and version != "None", "the runtime image's torch should be a CUDA build (PyPI's Linux wheels)"


def test_images_keep_nothing_of_the_builders_pip_settings(images):
    """The settings and CA bundle were build secrets: no /etc/pip.conf (not even an empty mount
    point), and the image's CA bundle is its own Debian one."""
    for target in ("runtime", "operator"):
        container = buildah("from", "--pull=never", images[target]).strip()
        try:
            root = Path(buildah("mount", container).strip())
            assert not (root / "etc" / "pip.conf").exists(), target
            bundle = (root / "etc" / "ssl" / "certs" / "ca-certificates.crt").read_bytes()
            debian_bundle = (root / "usr" / "share" / "ca-certificates").is_dir()
            assert bundle and debian_bundle, target
        finally:
            buildah("rm", container)


def archive_manifest(path: Path) -> tuple[list[dict], dict[str, int]]:
    """manifest.json of a docker archive and the size of each member (members are skipped, not read)."""
    with tarfile.open(path, "r:") as archive:
        sizes = {m.name: m.size for m in archive.getmembers()}
        manifest = json.load(archive.extractfile("manifest.json"))
    return manifest, sizes


def test_archives_carry_the_image_names_and_a_small_package_layer(images):
    archives = dict(zip(("runtime", "operator", "pause"), images_script("archives").split()))
    for target, path in archives.items():
        manifest, sizes = archive_manifest(Path(path))
        assert [entry["RepoTags"] for entry in manifest] == [[images[target]]], manifest
        layers = [sizes[layer] for layer in manifest[0]["Layers"]]
        if target == "pause":
            assert len(layers) == 1 and layers[0] < 2 << 20, layers  # one static binary
            continue
        # ..., the dependencies, our package, the import check: what a source edit rebuilds is small.
        assert sum(layers[-2:]) < 10 << 20, f"{target}: the package layers are {layers[-2:]}"
        assert layers[-3] > 20 * sum(layers[-2:]), f"{target}: the layer below our package should be the dependencies"
    assert Path(archives["runtime"]).stat().st_size > 1 << 30  # torch is in it


def test_pause_image_is_one_static_binary(images):
    config = config_of(images["pause"])
    assert config["Entrypoint"] == ["/pause"] and config["User"] == "65535:65535"
    assert "pause" in run_in(images["pause"], "/pause", "-v")
