"""Bring your own model: harvest → train → eval → dashboards → Explorer on a non-Llama model (a tiny GPT-2 saved as a
Hugging Face folder, as a user's would be), through the same CLI commands and app a researcher uses."""

from __future__ import annotations

import shutil

import pytest
import torch

from saelab.cli import main
from saelab.storage import EVAL_FILE, SAE_WEIGHTS_FILE
from tests.fixtures_ui import open_page, tiny_app

pytestmark = pytest.mark.slow
HOOK = "blocks.1.hook_resid_post"


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory):
    import transformers

    from saelab.models import load_tokenizer

    folder = tmp_path_factory.mktemp("byo") / "tiny-gpt2"
    tok = load_tokenizer()
    tok.save_pretrained(str(folder))
    cfg = transformers.GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=128, vocab_size=len(tok) + 8)
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(cfg).eval().save_pretrained(str(folder))
    return folder


def test_byo__gpt2_folder_round_trip_through_cli_and_explorer(gpt2_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("SAELAB_CACHE", str(tmp_path / "cache"))
    acts, features = tmp_path / "acts", tmp_path / "features"
    sae = features / "mine"
    model = str(gpt2_folder)
    assert main(["harvest", "--model", model, "--hooks", HOOK, "--tokens", "16384", "--seq-len", "64",
                 "--out", str(acts)]) == 0  # fmt: skip
    assert main(["train", "--acts", str(acts), "--arch", "topk", "--d-sae", "128", "--k", "8", "--batch-size", "128",
                 "--epochs", "2", "--out", str(sae)]) == 0  # fmt: skip
    assert (sae / SAE_WEIGHTS_FILE).exists()
    assert main(["eval", "--sae", str(sae), "--model", model, "--tokens", "4096", "--seq-len", "64"]) == 0
    assert (sae / EVAL_FILE).exists()
    assert main(["dashboards", "--sae", str(sae), "--model", model, "--tokens", "8192", "--label-tokens", "4096",
                 "--seq-len", "64"]) == 0  # fmt: skip
    assert (sae / "dashboards" / "meta.json").exists()

    monkeypatch.setenv("SAELAB_ALLOWED_ROOTS", str(tmp_path))
    at = tiny_app(monkeypatch, features)
    monkeypatch.setenv("SAELAB_MODEL", model)  # the app on the user's model
    at = open_page(at, "pages/explorer.py", latent="0")
    assert not at.error, [e.value for e in at.error]
    shutil.rmtree(acts)
