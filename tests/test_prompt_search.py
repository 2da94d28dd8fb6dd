"""Prompt analysis (per-token latents of one text) and latent search (by label, by peak token)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sae_lens import StandardSAE, StandardSAEConfig
from safetensors.numpy import save_file

from saelab.errors import BadInputError
from saelab.features import search as search_mod
from saelab.features.labels import LabelSet, LatentLabel
from saelab.features.prompt import analyse_text
from saelab.features.search import search_labels, search_token
from saelab.features.store import FORMAT, FORMAT_VERSION, TENSORS, DashboardStore, tensor_shape
from saelab.hooks import active_hook_count, cache_activations
from saelab.sae.files import LoadedSAE

HOOK = "blocks.1.hook_resid_post"
PARIS = 7042  # ' Paris'
TEXT = "The capital of France is Paris.<|endoftext|>It rains in London."


@pytest.fixture(scope="module")
def loaded(tiny_handle, tmp_path_factory):
    torch.manual_seed(0)
    sae = StandardSAE(StandardSAEConfig(d_in=64, d_sae=48))
    with torch.no_grad():
        sae.b_enc.fill_(-0.2)  # sparser than SAE-Lens's zero bias: not every latent on every token
    return LoadedSAE(sae=sae.eval(), meta=None, path=tmp_path_factory.mktemp("sae"), hook=HOOK)


# ---------------------------------------------------------------- analyse_text


def test_analyse_text__per_token_acts_equal_direct_encode(tiny_handle, loaded):
    res = analyse_text(tiny_handle, loaded, TEXT, top_n=3)
    ids = torch.tensor([res.token_ids])
    with torch.no_grad():
        direct = loaded.sae.encode(cache_activations(tiny_handle, ids, [HOOK])[HOOK])[0]  # [pos, d_sae]
    sinks = set(res.sink_positions)
    assert res.token_ids[0] == 0 and 0 in sinks  # the separator put in front is the sink
    assert sinks == {i for i, t in enumerate(res.token_ids) if t == 0} and len(sinks) == 2
    assert res.tokens[0] == "<|endoftext|>" and "".join(res.tokens[1:]).replace("<|endoftext|>", "|") == (
        "The capital of France is Paris.|It rains in London."
    )
    for j in range(direct.shape[1]):
        got = torch.tensor(res.latent_acts(j))
        want = direct[:, j].clone()
        want[list(sinks)] = 0
        assert torch.allclose(got, want, atol=1e-6)
    for p, pairs in enumerate(res.acts):
        if p in sinks:
            assert pairs == []
            continue
        top = torch.topk(direct[p], 3)
        assert [i for i, _ in pairs] == [int(i) for i, v in zip(top.indices, top.values) if v > 0]
    assert active_hook_count(tiny_handle) == 0


def test_analyse_text__top_latents_ranked_without_sinks(tiny_handle, loaded):
    res = analyse_text(tiny_handle, loaded, TEXT)
    maxes = [m for _, m, _ in res.top_latents]
    assert maxes == sorted(maxes, reverse=True) and all(m > 0 for m in maxes)
    assert all(pos not in res.sink_positions for _, _, pos in res.top_latents)
    for latent, m, pos in res.top_latents[:5]:
        acts = res.latent_acts(latent)
        assert acts[pos] == pytest.approx(m) and max(acts) == pytest.approx(m)


def test_analyse_text__long_text_is_truncated_not_refused(tiny_handle, loaded):
    text = " ".join(["word"] * 50)
    res = analyse_text(tiny_handle, loaded, text, max_tokens=10)
    assert res.truncated and res.n_input_tokens == 50 and res.max_tokens == 10
    assert len(res.token_ids) == 11 and res.truncation_note.startswith("Only the first 10 tokens")
    assert res.text == " ".join(["word"] * 10)
    assert not analyse_text(tiny_handle, loaded, text, max_tokens=50).truncated
    huge = analyse_text(tiny_handle, loaded, text * 100, max_tokens=2)  # cut to 128 characters first
    assert huge.truncated and huge.input_cut and len(huge.token_ids) == 3 and "more than" in huge.truncation_note


@pytest.mark.parametrize("bad", ["", "   \n\t ", None, 123, b"\xff\xfe", "bad \ud800 surrogate"])
def test_analyse_text__empty_nontext_or_undecodable_input_is_bad_input(tiny_handle, loaded, bad):
    with pytest.raises(BadInputError):
        analyse_text(tiny_handle, loaded, bad)


def test_analyse_text__utf8_bytes_are_text(tiny_handle, loaded):
    assert analyse_text(tiny_handle, loaded, "café".encode()).text == "café"


def test_prompt_analysis__views_for_the_page_agree_with_acts(tiny_handle, loaded):
    res = analyse_text(tiny_handle, loaded, TEXT, top_n=3)
    sinks = set(res.sink_positions)
    strongest = res.strongest_latents()
    assert len(strongest) == len(res.tokens) and all(strongest[p] is None for p in sinks)
    for pairs, top1 in zip(res.acts, strongest):
        assert top1 == (pairs[0] if pairs and pairs[0][1] > 0 else None)
    top = res.top(4)
    assert top == [(lat, m) for lat, m, _ in res.top_latents[:4]] and res.top(0) == []
    matrix = res.activation_matrix([lat for lat, _ in top])
    assert matrix.shape == (len(top), len(res.tokens))
    for row, (lat, m) in zip(matrix, top):
        assert row.tolist() == pytest.approx(res.latent_acts(lat)) and row.max() == pytest.approx(m)
    rows = res.token_rows({res.acts[1][0][0]: "a <label>"})
    assert [r["pos"] for r in rows] == list(range(len(res.tokens))) and rows[0]["token"].endswith(" (sink)")
    assert rows[1]["latent 1"].startswith(f"#{res.acts[1][0][0]} (") and rows[1]["latent 1"].endswith("a <label>")
    assert {k for r in rows for k in r} == {"pos", "token", "latent 1", "latent 2", "latent 3"}


# ---------------------------------------------------------------- search_token


def _arrays(d: int = 12, n_top: int = 6, ctx: int = 5, ctx_left: int = 2) -> dict:
    rng = np.random.default_rng(0)
    tt = rng.integers(1000, 1200, size=(d, n_top, ctx)).astype(np.int32)
    ta = np.zeros((d, n_top, ctx), np.float16)
    ta[:, :, ctx_left] = rng.uniform(1, 2, size=(d, n_top))
    tt[7, :, ctx_left] = PARIS  # latent 7 always peaks on ' Paris'
    ta[7, :, ctx_left] = 3.0
    tt[3, :2, ctx_left] = PARIS  # latent 3 twice, weaker
    ta[3, :2, ctx_left] = 1.5
    tt[5, 0, ctx_left] = 38634  # latent 5 once on 'Paris' (no space)
    ta[5, 0, ctx_left] = 1.0
    tt[9, :, ctx_left - 1] = PARIS  # ' Paris' next to the peak, not at it: not a hit
    tt[4, :, ctx_left] = PARIS  # peaks on ' Paris' but never fired (act 0): not a hit
    ta[4] = 0
    return {"top_tokens": tt, "top_acts": ta, "meta": {"ctx_left": ctx_left}}


def test_search_token__finds_planted_latent_with_and_without_space(tiny_handle):
    arrays = _arrays()
    for query in ("Paris", " Paris"):
        hits = search_token(arrays, tiny_handle.tokenizer, query)
        assert [h.latent for h in hits] == [7, 3, 5]
        assert hits[0].count == 6 and hits[0].mean_act == pytest.approx(3.0)
        assert hits[1].count == 2 and hits[2].count == 1
    assert search_token(arrays, tiny_handle.tokenizer, "Paris", limit=1)[0].latent == 7


def _write_store(sae_dir: Path, arrays: dict) -> None:
    """The dashboards folder `DashboardStore` reads: the given top contexts, zeros elsewhere."""
    d, n_top, ctx = arrays["top_tokens"].shape
    meta = {"format": FORMAT, "version": FORMAT_VERSION, "d_sae": d, "ctx": ctx, "n_top": n_top}
    meta |= {"n_int": 1, "n_per": 1, "n_bins": 2, "n_logits": 2, "n_neighbours": 1, **arrays["meta"]}
    out = {n: np.zeros(tensor_shape(n, meta), dt) for n, (dt, _) in TENSORS.items()}
    out |= {k: arrays[k] for k in ("top_tokens", "top_acts")}
    (sae_dir / "dashboards").mkdir()
    save_file(out, str(sae_dir / "dashboards" / "latents.safetensors"))
    (sae_dir / "dashboards" / "meta.json").write_text(json.dumps(meta))


def test_search_token__index_is_built_once_per_store_file(tiny_handle, tmp_path, monkeypatch):
    _write_store(tmp_path, _arrays())
    built = []
    real = search_mod._TokenIndex
    monkeypatch.setattr(search_mod, "_TokenIndex", lambda *a: built.append(1) or real(*a))
    first = search_token(tmp_path, tiny_handle.tokenizer, "Paris")
    assert search_token(tmp_path, tiny_handle.tokenizer, " Paris") == first
    assert search_token(DashboardStore(tmp_path), tiny_handle.tokenizer, "Paris") == first
    assert [h.latent for h in first] == [7, 3, 5] and len(built) == 1


def test_search_token__multi_token_or_empty_query_is_bad_input(tiny_handle):
    with pytest.raises(BadInputError, match="not a single token"):
        search_token(_arrays(), tiny_handle.tokenizer, "antidisestablishmentarianism")
    with pytest.raises(BadInputError):
        search_token(_arrays(), tiny_handle.tokenizer, "  ")


# ---------------------------------------------------------------- search_labels


def _labels() -> LabelSet:
    def lab(text: str, ba: float | None) -> LatentLabel:
        return LatentLabel(text, [], "tokens", detection_balanced_accuracy=ba)

    return LabelSet(
        latents=[
            lab("tokens: ' Parisian'", 0.9),  # 0: token prefix
            lab("tokens: ' Paris', ' France'", 0.7),  # 1: exact token
            lab("tokens: ' London'", 0.99),  # 2: no match
            lab("promotes: ' Paris'", 0.8),  # 3: exact token, better detection than 1
            lab("tokens: 'comparison'", None),  # 4: substring only
        ],
        llm={"latents": {"2": {"label": "mentions of paris in travel text", "detection_balanced_accuracy": 0.6}}},
    )


def test_search_labels__ranks_exact_token_then_prefix_then_substring():
    hits = search_labels(_labels(), "paris")
    assert [h.latent for h in hits] == [3, 1, 0, 2, 4]
    assert [h.score for h in hits] == [3.0, 3.0, 2.0, 1.0, 1.0]
    assert hits[3].label == "mentions of paris in travel text"  # found through its LLM label
    assert [h.latent for h in search_labels(_labels().to_dict(), "PARIS", limit=2)] == [3, 1]


def test_search_labels__latent_id_and_words():
    assert search_labels(_labels(), "4")[0].latent == 4
    assert search_labels(_labels(), "travel paris")[0].latent == 2
    assert search_labels(_labels(), "zebra") == []
    with pytest.raises(BadInputError):
        search_labels(_labels(), " ")
