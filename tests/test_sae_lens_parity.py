"""SAEs that SAE-Lens's own tools accept: the metadata SAE Lab writes into `cfg.json`, and `saelab eval` agreeing
with `sae_lens.evals.run_evals` on the same tokens.

The setting in which both compute the same thing (`test_run_evals__agrees_with_saelab_eval`):

* SAE-Lens splices the SAE at every position that is not an "excluded special token" and zero-ablates EVERY
  position; SAE Lab splices and ablates positions 1.. (position 0 is the attention sink: its norm is ~100× the
  rest, and SAE Lab's SAEs never see it). So SAE Lab runs with `skip_first_position=False`, and rows hold no
  special token except the last one (below).
* SAE-Lens's KL is a mean over all L positions of a row, SAE Lab's over the L−1 predicted positions 0..L−2 (those
  CE is scored on). Ending every row with a special token that occurs nowhere else and passing it to
  `run_evals(exclude_special_tokens=[it])` drops exactly that last position from SAE-Lens's KL; its CE already
  leaves it out (CE is masked by the input token at 0..L−2) and so does the splice's effect on earlier logits.
* But the same exclusion would drop the last position from SAE-Lens's L0, so L0 comes from a second `run_evals`
  with `exclude_special_tokens=False`, over all L positions as SAE Lab's L0.
* SAE-Lens's default `exclude_special_tokens=True` excludes the tokenizer's BOS/EOS/PAD (ids 1 and 2 for
  SmolLM2's tokenizer), NOT SAE Lab's document separator `<|endoftext|>` (id 0): on a real SAE Lab corpus the two
  defaults skip different positions, which is why the test fixes the setting above.

Tolerance: 1e-5 relative (1e-6 absolute) on L0, CE-loss score and KL score, since SAE-Lens averages in float32
where SAE Lab sums in float64; measured agreement is ~1e-7.
"""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from datasets import Dataset
from sae_lens import SAE
from sae_lens.evals import EvalConfig, run_evals
from sae_lens.training.activation_scaler import ActivationScaler
from sae_lens.training.activations_store import ActivationsStore

from saelab.corpus import CorpusConfig
from saelab.defaults import REPO_ROOT
from saelab.sae import SaeKnobs, SaeMeta, get_architecture, load_sae, save_sae
from saelab.sae.evaluate import evaluate_sae
from saelab.sae.files import DEFAULT_CONTEXT_SIZE, sae_lens_metadata
from saelab.storage import DASHBOARD_DIR, SAE_CFG_FILE, read_json

HOOK = "blocks.0.hook_resid_post"
N_SEQ, SEQ_LEN, BATCH = 8, 32, 4
END = 2  # <|im_end|>: a special token (SAE-Lens's get_special_token_ids) that the random rows below never hold
CORPUS = {"config": {"seq_len": SEQ_LEN, "split": "heldout"}, "separator_id": 0, "data_version": "0.4.2",
          "fingerprint": "0123456789abcdef"}  # fmt: skip
REQUIRED = ("model_name", "hook_name", "hook_head_index", "context_size", "prepend_bos", "seqpos_slice",
            "exclude_special_tokens", "sequence_separator_token", "disable_concat_sequences", "dataset_path")  # fmt: skip
SHIPPED = REPO_ROOT / "cached_features" / "default"
pytestmark = pytest.mark.filterwarnings("ignore:To copy construct from a tensor:UserWarning")  # SAE-Lens's store


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A ReLU SAE on the tiny model, written by SAE Lab's own writer (so L0 is not fixed by a k)."""
    torch.manual_seed(0)
    sae = get_architecture("standard").build(SaeKnobs(d_in=64, d_sae=128, normalize_activations="none"))
    with torch.no_grad():
        sae.W_enc.add_(0.05 * torch.randn_like(sae.W_enc))
        sae.b_enc.add_(0.02)
    meta = SaeMeta(model="tiny", hook=HOOK, d_in=64, d_sae=128, architecture="standard", corpus=CORPUS)
    return save_sae(sae, tmp_path_factory.mktemp("saelab_sae") / "sae", meta)


def _tokens() -> torch.Tensor:
    tokens = torch.randint(100, 20000, (N_SEQ, SEQ_LEN), generator=torch.Generator().manual_seed(0))
    tokens[:, -1] = END
    return tokens


def _store(model, sae, tokens) -> ActivationsStore:
    """SAE-Lens's store from the SAE's own metadata (context size, BOS, hook), fed SAE Lab's token rows."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "dataset is pretokenized ... fewer samples than training tokens"
        return ActivationsStore.from_sae(
            model, sae, dataset=Dataset.from_dict({"tokens": tokens.tolist()}), streaming=False,
            store_batch_size_prompts=BATCH, device="cpu",
        )  # fmt: skip


def test_save__cfg_json_carries_complete_sae_lens_metadata(saved):
    md = read_json(saved / SAE_CFG_FILE)["metadata"]
    assert set(REQUIRED) <= md.keys()
    assert md["model_name"] == "tiny" and md["hook_name"] == HOOK and md["hook_head_index"] is None
    assert md["context_size"] == SEQ_LEN and md["prepend_bos"] is False and md["seqpos_slice"] == [1, None]
    assert md["exclude_special_tokens"] == [0] and md["sequence_separator_token"] == 0
    assert "sae-probes==0.4.2" in md["dataset_path"] and "heldout" in md["dataset_path"]
    sae = SAE.load_from_disk(saved)  # SAE-Lens keeps it all
    assert sae.cfg.metadata.prepend_bos is False and sae.cfg.metadata.context_size == SEQ_LEN


def test_sae_lens_metadata__defaults_and_overrides():
    plain = sae_lens_metadata(SaeMeta(model="m", hook=HOOK, d_in=4, d_sae=8, architecture="topk"))
    assert plain["context_size"] == DEFAULT_CONTEXT_SIZE == CorpusConfig().seq_len
    assert plain["exclude_special_tokens"] is False and plain["sequence_separator_token"] is None
    assert plain["dataset_path"] == "" and plain["prepend_bos"] is False
    kept = {**CORPUS, "first_position_skipped": False, "separator_skipped": False}
    md = sae_lens_metadata(SaeMeta(model="m", hook=HOOK, d_in=4, d_sae=8, architecture="topk", corpus=kept,
                                   extra={"context_size": 64, "dataset_path": "me/my-tokens"}))  # fmt: skip
    assert md["seqpos_slice"] == [None] and md["exclude_special_tokens"] is False
    assert md["sequence_separator_token"] == 0
    assert md["context_size"] == 64 and md["dataset_path"] == "me/my-tokens"


def test_activations_store__refuses_without_metadata_and_accepts_ours(saved, tiny_handle, tmp_path):
    bare = SAE.load_from_disk(saved)
    bare.cfg.metadata.prepend_bos = None  # as SAE Lab wrote SAEs before
    with pytest.raises(ValueError, match="prepend_bos is required"):
        _store(tiny_handle.model, bare, _tokens())
    store = _store(tiny_handle.model, SAE.load_from_disk(saved), _tokens())
    assert (store.context_size, store.prepend_bos, store.hook_name) == (SEQ_LEN, False, HOOK)
    assert torch.equal(store.get_batch_tokens(BATCH).cpu(), _tokens()[:BATCH])


def test_run_evals__agrees_with_saelab_eval(saved, tiny_handle):
    tokens, model = _tokens(), tiny_handle.model
    sae = SAE.load_from_disk(saved)
    n_batches = N_SEQ // BATCH  # every row exactly once
    downstream, _ = run_evals(
        sae, _store(model, sae, tokens), model, ActivationScaler(),
        EvalConfig(batch_size_prompts=BATCH, n_eval_reconstruction_batches=n_batches, compute_kl=True,
                   compute_ce_loss=True),
        exclude_special_tokens=[END],
    )  # fmt: skip
    sparsity, _ = run_evals(
        sae, _store(model, sae, tokens), model, ActivationScaler(),
        EvalConfig(batch_size_prompts=BATCH, n_eval_sparsity_variance_batches=n_batches,
                   compute_sparsity_metrics=True, compute_variance_metrics=True),
        exclude_special_tokens=False,
    )  # fmt: skip
    ours = evaluate_sae(tiny_handle, load_sae(saved, handle=tiny_handle).sae, HOOK, tokens, batch_size=BATCH,
                        skip_first_position=False)  # fmt: skip

    close = {"rel": 1e-5, "abs": 1e-6}
    perf, behaviour = downstream["model_performance_preservation"], downstream["model_behavior_preservation"]
    assert 0 < ours.l0 < 128 and ours.l0 != round(ours.l0)  # a ReLU SAE: L0 is a real average
    assert sparsity["sparsity"]["l0"] == pytest.approx(ours.l0, **close)
    assert perf["ce_loss_score"] == pytest.approx(ours.ce_loss_score_zero, **close)
    assert behaviour["kl_div_score"] == pytest.approx(ours.kl_score_zero, **close)
    # the parts of the scores, and the reconstruction metrics both define the same way
    assert perf["ce_loss_without_sae"] == pytest.approx(ours.ce_clean, **close)
    assert perf["ce_loss_with_sae"] == pytest.approx(ours.ce_sae, **close)
    assert perf["ce_loss_with_ablation"] == pytest.approx(ours.ce_zero_ablated, **close)
    assert behaviour["kl_div_with_sae"] == pytest.approx(ours.kl_sae, **close)
    assert behaviour["kl_div_with_ablation"] == pytest.approx(ours.kl_zero_ablated, **close)
    quality = sparsity["reconstruction_quality"]
    assert quality["explained_variance"] == pytest.approx(ours.explained_variance, rel=1e-4)
    assert quality["mse"] == pytest.approx(ours.mse * 64, rel=1e-4)  # SAE-Lens: Σ over dims; SAE Lab: mean


def test_shipped_default__carries_the_metadata_and_still_loads(tiny_handle):
    cfg = json.loads((SHIPPED / SAE_CFG_FILE).read_text())
    md = cfg["metadata"]
    assert set(REQUIRED) <= md.keys()
    assert (md["context_size"], md["prepend_bos"], md["exclude_special_tokens"]) == (128, False, [0])
    meta = load_sae(SHIPPED).meta
    assert {k: md[k] for k in sae_lens_metadata(meta)} == sae_lens_metadata(meta)  # as save_sae writes them
    sae = SAE.load_from_disk(SHIPPED)
    # SAE-Lens's store takes it (the model is only stored here, so the tiny one stands in for SmolLM2)
    rows = torch.randint(100, 20000, (2, 128), generator=torch.Generator().manual_seed(0))
    store = _store(tiny_handle.model, sae, rows)
    assert (store.context_size, store.prepend_bos, store.hook_name) == (128, False, "blocks.12.hook_resid_post")
    # weights untouched: the dashboards were built for exactly these bytes
    from saelab.features.dashboard_collect import sae_fingerprint

    dash = read_json(SHIPPED / DASHBOARD_DIR / "meta.json")
    assert sae_fingerprint(load_sae(SHIPPED)) == dash["sae"]["fingerprint"]
