"""kopf's kubeconfig login ignores `tokenFile`; the operator's login adds it (else: anonymous)."""

from __future__ import annotations

import json

import kopf

from litgpt_operator.handlers.startup import with_kubeconfig_token_file


def test_token_file_of_the_current_context_is_used(tmp_path, monkeypatch):
    (tmp_path / "token").write_text("abc.def\n")
    config = {"apiVersion": "v1", "kind": "Config", "current-context": "pod",
              "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
              "users": [{"name": "other", "user": {"tokenFile": "/nonexistent"}},
                        {"name": "sa", "user": {"tokenFile": str(tmp_path / "token")}}],
              "contexts": [{"name": "pod", "context": {"cluster": "c", "user": "sa"}}]}
    (tmp_path / "kubeconfig").write_text(json.dumps(config))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
    info = with_kubeconfig_token_file(kopf.ConnectionInfo(server="https://127.0.0.1:6443"))
    assert info.token == "abc.def" and info.server == "https://127.0.0.1:6443"
    # explicit credentials are left alone
    assert with_kubeconfig_token_file(kopf.ConnectionInfo(server="s", token="t")).token == "t"
    assert with_kubeconfig_token_file(None) is None
