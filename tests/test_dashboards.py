"""Feature dashboards: every stored number against a brute-force recomputation, the store's reads, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sae_lens import StandardSAE, StandardSAEConfig, TopKSAE, TopKSAEConfig

from saelab.errors import BadInputError, CorruptFileError
from saelab.features.dashboards import DashboardConfig, build_dashboards
from saelab.features.projection import project_decoder
from saelab.features.store import LABELS_FILE, LATENTS_FILE, META_FILE, TENSORS, DashboardStore
from saelab.hooks import active_hook_count, cache_activations
from saelab.sae import SaeMeta, load_sae, save_sae
from saelab.storage import DASHBOARD_DIR, load_tensors

HOOK = "blocks.0.hook_resid_post"
D_IN, D_SAE = 64, 48
SEP = 0  # <|endoftext|> in the default tokenizer
CFG = dict(n_top=6, ctx_left=3, ctx_right=2, n_int=3, n_per=3, n_bins=12, batch_size=7, compute_dtype="float32")


def _tokens(seed: int = 0, n_seq: int = 40, seq_len: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(100, 600, (n_seq, seq_len), generator=g)  # a small vocabulary: tokens recur
    tokens[torch.rand(n_seq, seq_len, generator=g) < 0.05] = SEP
    return tokens


def _saved_sae(tmp_path, kind: str = "topk"):
    torch.manual_seed(1)
    if kind == "topk":
        sae = TopKSAE(TopKSAEConfig(d_in=D_IN, d_sae=D_SAE, k=8))
    else:
        sae = StandardSAE(StandardSAEConfig(d_in=D_IN, d_sae=D_SAE))
    with torch.no_grad():
        sae.b_enc.copy_(0.2 * torch.randn(D_SAE))
        sae.W_dec.mul_(1 + torch.rand(D_SAE, 1))  # unequal decoder norms
    meta = SaeMeta(model="tiny", hook=HOOK, d_in=D_IN, d_sae=D_SAE, architecture=kind)
    return save_sae(sae, tmp_path / kind, meta)


def _brute(handle, loaded, tokens, cfg: DashboardConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(acts float32 [n_seq, seq_len, d_sae] with 0 at skipped positions, keep mask), batched like the build."""
    keep = torch.ones_like(tokens, dtype=torch.bool)
    if cfg.skip_first_position:
        keep[:, 0] = False
    if cfg.skip_separator:
        keep &= tokens != SEP
    F = torch.zeros(*tokens.shape, D_SAE)
    with torch.inference_mode():
        for b0 in range(0, len(tokens), cfg.batch_size):
            sl = slice(b0, b0 + cfg.batch_size)
            act = cache_activations(handle, tokens[sl], [HOOK])[HOOK]
            F[sl][keep[sl]] = loaded.sae.encode(act[keep[sl]]).clamp(min=0)
    return F, keep


@pytest.fixture(scope="module")
def built(tiny_handle, tmp_path_factory):
    """A TopK SAE's dashboards, its raw tensors, and the brute-force activations."""
    tmp = tmp_path_factory.mktemp("dash")
    loaded = load_sae(_saved_sae(tmp), handle=tiny_handle)
    tokens, cfg = _tokens(), DashboardConfig(**CFG)
    calls = []
    out = build_dashboards(tiny_handle, loaded, tokens, cfg, progress=lambda *a: calls.append(a))
    F, keep = _brute(tiny_handle, loaded, tokens, cfg)
    return dict(
        out=out, loaded=loaded, tokens=tokens, cfg=cfg, calls=calls, F=F, keep=keep, t=load_tensors(out / LATENTS_FILE)
    )


def test_build__writes_the_contract_layout(built, tiny_handle):
    out, t, cfg = built["out"], built["t"], built["cfg"]
    assert out == built["loaded"].path / DASHBOARD_DIR
    assert sorted(p.name for p in out.iterdir()) == sorted([META_FILE, LATENTS_FILE])
    meta = json.loads((out / META_FILE).read_text())
    assert meta["format"] == "saelab.dashboards" and meta["n_tokens"] == int(built["keep"].sum())
    assert (meta["d_sae"], meta["ctx"], meta["ctx_left"]) == (D_SAE, cfg.ctx, cfg.ctx_left)
    assert set(meta["formulas"]) >= {"density", "logit_effects", "neighbours", "projection", "intervals"}
    assert set(meta["seconds"]) >= {"activations", "statistics", "logits", "neighbours", "projection"}
    for name, (dtype, _) in TENSORS.items():
        assert str(t[name].dtype) == f"torch.{dtype}" and list(t[name].shape) == meta["tensors"][name][1], name
    phases = [c[0] for c in built["calls"]]
    assert phases[0] == "activations" and phases[-1] == "write"
    acts = [c[1:] for c in built["calls"] if c[0] == "activations"]
    assert acts[0] == (0, meta["n_tokens"]) and acts[-1] == (meta["n_tokens"],) * 2 and len(acts) > 3
    assert active_hook_count(tiny_handle) == 0


def test_build__density_max_mean_match_brute_force(built):
    F, keep, t = built["F"], built["keep"], built["t"]
    A = F[keep]  # [n_tokens, d]
    pos = A > 0
    assert torch.equal(t["density"], (pos.sum(0) / len(A)).float())
    assert torch.equal(t["max_act"], A.amax(0))
    mean = (A.double().sum(0) / pos.sum(0).clamp(min=1)).float()
    torch.testing.assert_close(t["mean_act"], mean, rtol=1e-6, atol=0)
    assert (t["density"] > 0).sum() > D_SAE // 2  # the test exercises live latents


def test_build__top_contexts_match_brute_force(built):
    F, keep, t, tokens, cfg = built["F"], built["keep"], built["t"], built["tokens"], built["cfg"]
    seq_len, c = tokens.shape[1], cfg.ctx_left
    for i in range(D_SAE):
        vals = F[..., i][keep].half()
        want = vals[vals > 0].sort(descending=True).values[: cfg.n_top]
        n = len(want)
        centre = t["top_acts"][i, :, c]
        assert torch.equal(centre[:n], want), i  # sorted descending, the true maxima
        assert (t["top_seq"][i, n:] == -1).all() and (t["top_tokens"][i, n:] == -1).all()
        for j in range(n):
            r, p = int(t["top_seq"][i, j]), int(t["top_pos"][i, j])
            assert F[r, p, i].half() == centre[j] and keep[r, p]
            for o in range(-cfg.ctx_left, cfg.ctx_right + 1):
                tok, act = int(t["top_tokens"][i, j, c + o]), t["top_acts"][i, j, c + o]
                if 0 <= p + o < seq_len:
                    assert tok == int(tokens[r, p + o]) and act == F[r, p + o, i].half()
                else:
                    assert tok == -1 and act == 0


def test_build__histogram_and_intervals_match_brute_force(built):
    F, keep, t, cfg = built["F"], built["keep"], built["t"], built["cfg"]
    A = F[keep]
    assert torch.equal(t["hist_counts"].sum(1).long(), (A > 0).sum(0))
    for i in range(D_SAE):
        v = A[:, i][A[:, i] > 0].half().float()
        top = float(t["max_act"][i])
        edges = top * torch.arange(cfg.n_bins + 1) / cfg.n_bins
        hist = [int(((v > edges[b]) & (v <= edges[b + 1])).sum()) for b in range(cfg.n_bins)]
        hist[-1] += int((v > top).sum())  # float16 rounding above max_act belongs to the last bin
        assert t["hist_counts"][i].tolist() == hist, i
        lo, hi = t["q_bounds"][i, :, 0], t["q_bounds"][i, :, 1]
        assert torch.allclose(lo, top * torch.arange(cfg.n_int) / cfg.n_int)
        if len(v):
            assert t["q_frac"][i].sum() == pytest.approx(1.0, abs=1e-5)
        for j in range(cfg.n_int):
            inside = int(((v > lo[j]) & (v <= hi[j])).sum()) + (int((v > top).sum()) if j == cfg.n_int - 1 else 0)
            assert t["q_frac"][i, j] == pytest.approx(inside / max(len(v), 1), abs=1e-6)
            centre = t["q_acts"][i, j, :, cfg.ctx_left].float()
            present = t["q_tokens"][i, j, :, cfg.ctx_left] >= 0
            assert int(present.sum()) == min(cfg.n_per, inside)
            got = centre[present]
            assert ((got > lo[j]) & (got <= hi[j] * (1 + 1e-3))).all(), (i, j)
            assert torch.equal(got, got.sort(descending=True).values)
            assert (t["q_tokens"][i, j, ~present] == -1).all()


def test_build__neighbours_and_logit_effects_match_brute_force(built, tiny_handle):
    t, W = built["t"], built["loaded"].sae.W_dec.detach()
    U = W / W.norm(dim=1, keepdim=True)
    cos = U @ U.T
    cos.fill_diagonal_(-2)
    want = cos.topk(10, dim=1)
    assert (t["nbr_ids"] != torch.arange(D_SAE)[:, None]).all()
    assert (t["nbr_cos"][:, :-1] >= t["nbr_cos"][:, 1:]).all()
    torch.testing.assert_close(t["nbr_cos"], want.values)
    assert torch.equal(t["nbr_ids"].long(), want.indices)
    model = tiny_handle.model
    effects = W @ (model.ln_final.w[:, None] * model.W_U)
    pos, neg = effects.topk(10, dim=1), effects.topk(10, dim=1, largest=False)
    torch.testing.assert_close(t["logit_pos_vals"], pos.values, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(t["logit_neg_vals"], neg.values, rtol=1e-4, atol=1e-5)
    assert torch.equal(t["logit_pos_ids"].long(), pos.indices) and torch.equal(t["logit_neg_ids"].long(), neg.indices)


def test_build__skipped_positions_are_not_analysed(built, tiny_handle, tmp_path):
    t, tokens = built["t"], built["tokens"]
    top = t["top_seq"] >= 0
    assert (t["top_pos"][top] > 0).all()
    assert (tokens[t["top_seq"][top].long(), t["top_pos"][top].long()] != SEP).all()
    assert (t["top_acts"][t["top_tokens"] == SEP] == 0).all()
    # without skipping, every position counts and row starts can be top examples
    cfg = DashboardConfig(**{**CFG, "skip_first_position": False, "skip_separator": False, "projection": "pca"})
    out = build_dashboards(tiny_handle, built["loaded"], tokens, cfg, out_dir=tmp_path / "all")
    meta = json.loads((out / META_FILE).read_text())
    assert meta["n_tokens"] == tokens.numel() and not meta["first_position_skipped"]
    F, _ = _brute(tiny_handle, built["loaded"], tokens, cfg)
    assert torch.equal(load_tensors(out / LATENTS_FILE)["max_act"], F.flatten(0, 1).amax(0))


def test_build__dense_standard_sae(tiny_handle, tmp_path):
    loaded = load_sae(_saved_sae(tmp_path, "standard"), handle=tiny_handle)
    tokens, cfg = _tokens(seed=2, n_seq=10), DashboardConfig(**CFG)
    t = load_tensors(build_dashboards(tiny_handle, loaded, tokens, cfg) / LATENTS_FILE)
    F, keep = _brute(tiny_handle, loaded, tokens, cfg)
    A = F[keep]
    assert torch.equal(t["density"], ((A > 0).sum(0) / len(A)).float())
    assert torch.equal(t["top_acts"][:, 0, cfg.ctx_left], A.amax(0).half())


def test_build__keeps_labels_of_the_same_sae(built, tiny_handle, tmp_path):
    out, cfg = tmp_path / "dash", DashboardConfig(**CFG, projection="pca")
    build_dashboards(tiny_handle, built["loaded"], built["tokens"][:5], cfg, out_dir=out)
    assert DashboardStore(out).labels() is None
    from saelab.features.labels import LabelSet, LatentLabel

    kept = LabelSet(latents=[LatentLabel(label="a label", token_ids=[], kind="none")])
    (out / LABELS_FILE).write_text(json.dumps(kept.to_dict()))
    build_dashboards(tiny_handle, built["loaded"], built["tokens"][5:10], cfg, out_dir=out)
    assert DashboardStore(out).labels() == kept
    meta = json.loads((out / META_FILE).read_text())
    meta["sae"]["fingerprint"] = "another sae"
    (out / META_FILE).write_text(json.dumps(meta))
    build_dashboards(tiny_handle, built["loaded"], built["tokens"][:5], cfg, out_dir=out)
    assert DashboardStore(out).labels() is None  # labels of other weights are dropped


def test_build__rejects_bad_input(built, tiny_handle):
    with pytest.raises(BadInputError, match="integer tensor"):
        build_dashboards(tiny_handle, built["loaded"], torch.zeros(3, 8), built["cfg"])
    with pytest.raises(BadInputError, match="token ids"):
        build_dashboards(tiny_handle, built["loaded"], torch.full((2, 8), 10**6), built["cfg"])
    with pytest.raises(BadInputError, match="max_entries"):
        build_dashboards(tiny_handle, built["loaded"], built["tokens"], DashboardConfig(**CFG, max_entries=10))
    with pytest.raises(BadInputError, match="n_top"):
        DashboardConfig(n_top=0)
    cfg = DashboardConfig(**CFG)
    assert DashboardConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(BadInputError, match="Unknown"):
        DashboardConfig.from_dict({"nope": 1})


def test_store__slices_equal_full_loads(built):
    store, t = DashboardStore(built["out"].parent), built["t"]
    assert store.d_sae == D_SAE and DashboardStore.exists(built["out"].parent)
    for i in (0, 7, D_SAE - 1):
        lat = store.latent(i)
        assert lat.index == i and lat.ctx_left == built["cfg"].ctx_left
        for name in TENSORS:
            np.testing.assert_array_equal(np.asarray(getattr(lat, name)), t[name][i].numpy(), err_msg=name)
    summary = store.summary()
    assert set(summary) >= {"density", "max_act", "map_xy", "map_cluster"}
    np.testing.assert_array_equal(summary["map_xy"], t["map_xy"].numpy())
    assert DashboardStore(built["out"]).d_sae == D_SAE  # the dashboards folder itself works too


def test_store__errors_are_clear(built, tmp_path):
    store = DashboardStore(built["out"].parent)
    for bad in (-1, D_SAE, "3", 2.0):
        with pytest.raises(BadInputError, match=f"0 … {D_SAE - 1}"):
            store.latent(bad)
    assert not DashboardStore.exists(tmp_path)
    with pytest.raises(BadInputError, match="build them"):
        DashboardStore(tmp_path)
    copy = tmp_path / "copy" / DASHBOARD_DIR
    copy.mkdir(parents=True)
    (copy / META_FILE).write_bytes((built["out"] / META_FILE).read_bytes())
    raw = (built["out"] / LATENTS_FILE).read_bytes()
    (copy / LATENTS_FILE).write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CorruptFileError, match="rebuild"):
        DashboardStore(copy.parent)
    (copy / META_FILE).write_text("{not json")
    with pytest.raises(CorruptFileError):
        DashboardStore(copy.parent)


def test_projection__shapes_and_determinism():
    W = torch.randn(60, 16, generator=torch.Generator().manual_seed(0))
    xy, cluster = project_decoder(W, n_clusters=5)
    assert xy.shape == (60, 2) and xy.dtype == np.float32 and np.isfinite(xy).all()
    assert cluster.dtype == np.int32 and set(cluster.tolist()) == set(range(5))
    xy2, cluster2 = project_decoder(W, n_clusters=5)
    np.testing.assert_array_equal(xy, xy2)
    np.testing.assert_array_equal(cluster, cluster2)
    xy_pca, _ = project_decoder(W * 3, method="pca", n_clusters=5)  # scale-free: rows are normalised
    assert xy_pca.shape == (60, 2)


def test_store__threads_read_the_same_as_one(built):
    from concurrent.futures import ThreadPoolExecutor

    store, ids = DashboardStore(built["out"].parent), list(range(D_SAE)) * 3
    alone = [store.latent(i).top_acts for i in ids]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda i: store.latent(i).top_acts, ids))
    assert all(np.array_equal(a, b) for a, b in zip(alone, together))


class _Killed(Exception):
    pass


def test_build__resumes_from_its_checkpoint_and_ends_identical(tiny_handle, tmp_path, caplog):
    from saelab.features.dashboard_collect import STATE_FILE, partial_dir

    loaded = load_sae(_saved_sae(tmp_path), handle=tiny_handle)
    tokens = _tokens(seed=3)
    cfg = DashboardConfig(**{**CFG, "checkpoint_rows": 10})  # 2 batches of 7 → checkpoints after rows 14, 28
    whole = load_tensors(build_dashboards(tiny_handle, loaded, tokens, cfg, out_dir=tmp_path / "whole") / LATENTS_FILE)
    assert not partial_dir(tmp_path / "whole").exists()  # cleared on success

    def die_late(phase, done, total):
        if phase == "activations" and done > 30 * 31:  # after the second checkpoint
            raise _Killed

    out = tmp_path / "resumed"
    with pytest.raises(_Killed):
        build_dashboards(tiny_handle, loaded, tokens, cfg, out_dir=out, progress=die_late)
    state = json.loads((partial_dir(out) / STATE_FILE).read_text())
    assert state["rows_done"] == 28 and state["n_chunks"] == 2 and not out.exists()
    with caplog.at_level("INFO", logger="saelab.features.dashboard_collect"):
        build_dashboards(tiny_handle, loaded, tokens, cfg, out_dir=out)
    assert any("resuming after row 28" in r.message for r in caplog.records)
    resumed = load_tensors(out / LATENTS_FILE)
    assert resumed.keys() == whole.keys()
    for k in whole:
        torch.testing.assert_close(resumed[k], whole[k], rtol=0, atol=0, equal_nan=True, msg=k)
    assert not partial_dir(out).exists()


def test_build__discards_a_checkpoint_of_other_settings_or_a_corrupt_one(tiny_handle, tmp_path, caplog):
    from saelab.features.dashboard_collect import partial_dir

    loaded = load_sae(_saved_sae(tmp_path), handle=tiny_handle)
    tokens, out = _tokens(seed=4), tmp_path / "d"
    cfg = DashboardConfig(**{**CFG, "checkpoint_rows": 7})

    def die(phase, done, total):
        if phase == "activations" and done > 20 * 31:
            raise _Killed

    with pytest.raises(_Killed):
        build_dashboards(tiny_handle, loaded, tokens, cfg, out_dir=out, progress=die)
    (partial_dir(out) / "chunk_00000.safetensors").write_bytes(b"garbage")
    with caplog.at_level("INFO"):
        build_dashboards(tiny_handle, loaded, tokens, cfg, out_dir=out)
    assert any("starting over" in r.message for r in caplog.records)
    with pytest.raises(_Killed):
        build_dashboards(tiny_handle, loaded, tokens, DashboardConfig(**{**CFG, "checkpoint_rows": 7}),
                         out_dir=tmp_path / "e", progress=die)  # fmt: skip
    caplog.clear()
    with caplog.at_level("INFO"):
        build_dashboards(tiny_handle, loaded, tokens, DashboardConfig(**{**CFG, "n_top": 5}), out_dir=tmp_path / "e")
    assert any("another build" in r.message for r in caplog.records)


def test_rebuild__drops_a_corrupt_labels_file_instead_of_copying_it_back(built, tiny_handle, tmp_path):
    import shutil

    sae_dir = tmp_path / "sae"
    shutil.copytree(built["loaded"].path, sae_dir)
    (sae_dir / DASHBOARD_DIR / LABELS_FILE).write_text('{"latents": [1, 2, 3]}')
    loaded = load_sae(sae_dir, handle=tiny_handle)
    with pytest.raises(CorruptFileError):
        DashboardStore(sae_dir).labels()
    out = build_dashboards(tiny_handle, loaded, built["tokens"], built["cfg"])
    assert not (out / LABELS_FILE).exists()
    assert DashboardStore(sae_dir).labels() is None


def test_dashboard_tokens__measured_rate_fits_the_budget_in_whole_power_of_two_rows(tiny_handle, tmp_path, monkeypatch):
    from saelab.features import sizing

    loaded = load_sae(_saved_sae(tmp_path), handle=tiny_handle)
    assert sizing.measure_rate(tiny_handle, loaded, seq_len=32, rows=4, compute_dtype="float32") > 0
    monkeypatch.setattr(sizing, "measure_rate", lambda *a, **k: 1000.0)
    s = sizing.dashboard_tokens(tiny_handle, loaded, seq_len=128, budget_s=480)
    assert s.n_tokens == 2048 * 128  # 1000 tok/s × 480 s × 0.9 = 432k → 3375 rows → 2048 rows
    assert "1,000 tokens/s" in s.note and s.n_tokens <= 1000 * 480
    monkeypatch.setattr(sizing, "measure_rate", lambda *a, **k: 1.0)
    assert sizing.dashboard_tokens(tiny_handle, loaded, seq_len=128).n_tokens == 128 * 128  # the floor (16k)


def test_map__keeps_decoder_neighbourhoods_far_above_chance_and_names_clusters():
    """Clustered decoder directions (24 groups around random centres): the map keeps most 10-NN neighbourhoods
    (chance ≈ 10 / d), KMeans finds the groups, and clusters are named by their members' labels."""
    from saelab.features.projection import cluster_names, neighbourhood_preservation

    g = torch.Generator().manual_seed(0)
    centres = torch.randn(24, 64, generator=g)
    W = centres.repeat_interleave(20, 0) + 0.35 * torch.randn(480, 64, generator=g)
    xy, cluster = project_decoder(W, n_clusters=24)
    assert neighbourhood_preservation(W, xy) > max(0.3, 10 * (10 / 480))  # ≥ 10× chance
    groups = torch.arange(480) // 20
    purity = np.mean([np.bincount(groups[cluster == c].numpy()).max() / (cluster == c).sum() for c in np.unique(cluster)])
    assert purity > 0.9
    labels = {i: "tokens: ' Paris', ' France'" if groups[i] == 0 else f"tokens: ' code{groups[i]}'" for i in range(480)}
    names = cluster_names(cluster, labels)
    c0 = int(np.bincount(cluster[:20]).argmax())
    assert names[c0].startswith(("Paris", "France")) and "France" in names[c0]
