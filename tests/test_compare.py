"""SAE comparison: decoder matching (permutations, splits), metrics, report escaping, the `saelab compare` CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from saelab.cli import main
from saelab.compare.matching import MatchResult, match_decoders
from saelab.compare.metrics import read_metrics
from saelab.errors import BadInputError, CorruptFileError
from tests.fixtures_ui import XSS, build_dashboards_folder, build_tiny_sae


def _decoder(n: int, d_in: int = 48, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d_in)).astype(np.float32)


@pytest.mark.parametrize("exact_limit", [None, 10])  # exact solver, and the greedy fallback
def test_permuted_copy_is_recovered_exactly(exact_limit):
    w = _decoder(200)
    rng = np.random.default_rng(1)
    perm = rng.permutation(200)
    scaled = w[perm] * rng.uniform(0.2, 5.0, (200, 1)).astype(np.float32)  # norms must not matter
    kw = {} if exact_limit is None else {"max_exact_entries": exact_limit}
    r = match_decoders(w, scaled, **kw)
    assert r.exact is (exact_limit is None)
    assert r.pairs_a == list(range(200))
    assert r.pairs_b == np.argsort(perm).tolist()
    assert np.allclose(r.pairs_cos, 1.0, atol=1e-5) and np.allclose(r.best_a, 1.0, atol=1e-5)
    assert r.best_a_index == np.argsort(perm).tolist() and r.best_b_index == perm.tolist()
    assert r.splits == {} and r.summary()["assigned pairs"] == 200


def test_different_widths_find_splits():
    narrow = _decoder(40)
    rng = np.random.default_rng(2)
    split = [3, 7, 11]
    rows = [narrow[i] for i in range(40) if i not in split]
    for i in split:  # two near-copies of each split latent
        rows += [narrow[i] + 0.15 * np.linalg.norm(narrow[i]) / np.sqrt(48) * rng.standard_normal(48) for _ in range(2)]
    wide = np.stack(rows).astype(np.float32)
    r = match_decoders(wide, narrow, threshold=0.7, name_a="wide", name_b="narrow")
    assert (r.d_a, r.d_b, r.narrow) == (43, 40, "b")
    assert len(r.pairs_a) == 40  # min(d_a, d_b) one-to-one pairs
    assert set(r.splits) == {"3", "7", "11"}
    base = 37
    assert r.splits["3"] == [base, base + 1] and r.splits["11"] == [base + 4, base + 5]
    # the same from the other side: narrow as A
    r2 = match_decoders(narrow, wide, threshold=0.7)
    assert r2.narrow == "a" and set(r2.splits) == {"3", "7", "11"}


def test_round_trip_and_bad_input():
    r = match_decoders(_decoder(30), _decoder(25, seed=3))
    r.correlation = np.full(len(r.pairs_a), np.nan)
    back = MatchResult.from_dict(json.loads(json.dumps(r.to_dict())))
    assert back.pairs_a == r.pairs_a and back.pairs_b == r.pairs_b and back.splits == r.splits
    assert np.allclose(back.best_a, r.best_a, atol=1e-6) and np.isnan(back.correlation).all()
    assert back.formulas["cosine"].startswith("cos(i,j)")
    with pytest.raises(CorruptFileError):
        MatchResult.from_dict({**r.to_dict(), "best_a": [0.1]})
    with pytest.raises(CorruptFileError):
        MatchResult.from_dict({"kind": "other"})
    with pytest.raises(BadInputError, match="wide"):
        match_decoders(_decoder(10, 48), _decoder(10, 32))


def test_metrics_flag_different_tokens(tmp_path):
    from saelab.sae.evaluate import SaeEval

    base = dict(hook="h", model="tiny", d_in=64, d_sae=32, n_seq=4, seq_len=16, batch_size=2,
                skip_first_position=True, n_tokens=60, n_predicted=60, l0=4.0, mse=0.1, cosine_similarity=0.9,
                explained_variance=0.8, explained_variance_legacy=0.8, relative_reconstruction_norm=1.0,
                ce_clean=3.0, ce_sae=3.2, ce_zero_ablated=5.0, ce_mean_ablated=4.0, delta_loss=0.2,
                ce_loss_score_zero=0.9, ce_loss_score_mean=0.8, kl_sae=0.1, kl_zero_ablated=1.0,
                kl_mean_ablated=0.5, kl_score_zero=0.9, kl_score_mean=0.8, dead_fraction=0.0, dense_fraction=0.0,
                dense_threshold=0.1, density_hist_edges=[0.0, 1.0], density_hist_counts=[32])  # fmt: skip
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        (tmp_path / name).mkdir()
        SaeEval(**base, notes=[f'held-out corpus: {{"seed": {seed}}}']).save(tmp_path / name / "eval.json")
    (tmp_path / "d").mkdir()
    same = read_metrics([tmp_path / "a", tmp_path / "b"])
    assert same.same_tokens and same.rows[0].metrics["l0"] == 4.0
    diff = read_metrics([tmp_path / "a", tmp_path / "c", tmp_path / "d"])
    assert not diff.same_tokens and any("different held-out tokens" in n for n in diff.notes)
    assert diff.rows[2].tokens is None and any("no eval.json" in n for n in diff.notes)


def test_cli_two_tiny_saes(tmp_path, capsys):
    from saelab.compare.run import CompareResult
    from saelab.models import load_model
    from saelab.reports import read_export

    a, b = build_tiny_sae(tmp_path / "sae-a", seed=0), build_tiny_sae(tmp_path / "sae-b", seed=1)
    build_dashboards_folder(a, load_model("tiny").tokenizer)  # latent 3's label holds HTML
    out = tmp_path / "cmp"
    assert main(["compare", str(a), str(b), "--model", "tiny", "--threshold", "0.5", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "mean best cos A→B" in text
    assert "Core metrics" in text and "splits" in text and "sae-a" in text
    html = (out / "report.html").read_text()
    assert XSS not in html and "&lt;script&gt;" in html
    back = read_export(out, CompareResult)
    assert back.names == ["sae-a", "sae-b"] and len(back.matches) == 1 and back.matches[0].exact
    assert (out / "pairs-1.csv").is_file()


def test_cli_correlation_needs_a_model_and_reports_pair_r(tmp_path, capsys):
    a, b = build_tiny_sae(tmp_path / "sae-a", seed=0), build_tiny_sae(tmp_path / "sae-b", seed=0)  # the same SAE
    assert main(["compare", str(a), str(b), "--correlation", "512"]) == 2
    assert "--model" in capsys.readouterr().err
    assert main(["compare", str(a), str(b), "--model", "tiny", "--correlation", "512"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "mean pair activation r" in x)
    r = float(line.split("mean pair activation r: ")[1].split(" ")[0])
    assert r > 0.999  # a copy: every assigned pair fires identically


def test_activation_correlation_of_a_copy_is_one(tmp_path):
    from saelab.compare.matching import activation_correlation, match_saes
    from saelab.models import load_model
    from saelab.sae.files import load_sae

    handle = load_model("tiny")
    a = load_sae(build_tiny_sae(tmp_path / "a", seed=0), handle=handle)
    b = load_sae(build_tiny_sae(tmp_path / "b", seed=0), handle=handle)
    r = match_saes(a, b)
    tokens = torch.randint(0, handle.cfg.d_vocab, (4, 16))
    activation_correlation(handle, a, b, r, tokens, batch_size=2)
    assert r.correlation_tokens == 4 * 15
    live = np.isfinite(r.correlation)
    assert live.any() and np.allclose(r.correlation[live], 1.0, atol=1e-5)


def test_cli_refuses_different_widths(tmp_path, capsys):
    from saelab.sae import SaeKnobs, SaeMeta, get_architecture, save_sae

    a = build_tiny_sae(tmp_path / "a")
    knobs = SaeKnobs(
        d_in=32, d_sae=16, k=4, normalize_activations="none", metadata={"hook_name": "blocks.0.hook_resid_post"}
    )
    sae = get_architecture("topk").build(knobs)
    b = save_sae(
        sae,
        tmp_path / "b",
        SaeMeta(model="tiny", hook="blocks.0.hook_resid_post", d_in=32, d_sae=16, architecture="topk"),
    )
    assert main(["compare", str(a), str(b)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "wide" in err


def test_the_two_shipped_saes_compare_out_of_the_box():
    """cached_features ships two SAEs of the default model at one hook (issue 16 item 5): both have an eval.json
    on the same kind of held-out tokens, dashboards with labels, and decoder matching finds shared directions."""
    from pathlib import Path

    from saelab.compare.run import compare_saes

    root = Path(__file__).resolve().parents[1] / "cached_features"
    result = compare_saes([root / "default", root / "topk-k32-2304"])
    rows = {r.name: r for r in result.metrics.rows}
    assert len(rows) == 2 and all(r.metrics["explained_variance"] > 0.9 for r in rows.values())
    (m,) = result.matches
    assert m.d_a == 4608 and m.d_b == 2304
    rng = np.random.default_rng(0)  # the same widths with random directions: what "no shared structure" gives
    chance = match_decoders(rng.normal(size=(4608, 576)), rng.normal(size=(2304, 576)), max_exact_entries=0)
    shipped, random = m.summary()["mean best cos B→A"], chance.summary()["mean best cos B→A"]
    assert shipped > 2 * random, (shipped, random)  # the narrower SAE's directions reappear in the wider one
    for name in ("default", "topk-k32-2304"):
        assert (root / name / "dashboards" / "labels.json").exists()
