"""Builders for the app tests: a tiny SAE on the tiny model plus a dashboards folder beside it.

The dashboards are written by hand in the on-disk layout `saelab.features.store.DashboardStore`
reads (`dashboards/meta.json`, `latents.safetensors` with a leading d_sae dimension, `labels.json`),
so page tests take seconds. Values are random but consistent (max token at `ctx_left`, histogram
over (0, max_act], neighbours are other latents). Latent 3's label and top context hold HTML on
purpose, to check that the pages show it as text.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from streamlit.testing.v1 import AppTest

from saelab.sae import SaeKnobs, SaeMeta, get_architecture, save_sae
from saelab.storage import DASHBOARD_DIR, save_tensors, write_json

HOOK = "blocks.0.hook_resid_post"  # the tiny model's first residual stream (d_model 64)
D_IN = 64
D_SAE = 32
XSS = "<script>alert(1)</script>"
APP = str(Path(__file__).resolve().parents[1] / "app.py")


def tiny_app(monkeypatch, feature_root: Path | None = None, timeout: int = 120) -> AppTest:
    """app.py under AppTest on the tiny model, reading SAEs from `feature_root` when given."""
    if feature_root is not None:
        monkeypatch.setenv("SAELAB_FEATURES", str(feature_root))
    monkeypatch.setenv("SAELAB_MODEL", "tiny")
    return AppTest.from_file(APP, default_timeout=timeout)


def open_page(at: AppTest, page: str, **query: str) -> AppTest:
    """Run `page` (with `?key=value` query parameters) in `at`; it must raise nothing."""
    for key, value in query.items():
        at.query_params[key] = value
    at.switch_page(page)
    at.run()
    assert not at.exception, at.exception
    return at


def page_html(at: AppTest) -> str:
    """Every st.html body the last run drew, concatenated."""
    return "".join(h.proto.body for h in at.get("html"))


def build_tiny_sae(folder: Path, seed: int = 0) -> Path:
    """A TopK SAE for the tiny model's `blocks.0.hook_resid_post`, saved as SAE Lab writes SAEs."""
    torch.manual_seed(seed)
    knobs = SaeKnobs(d_in=D_IN, d_sae=D_SAE, k=4, normalize_activations="none", metadata={"hook_name": HOOK})
    sae = get_architecture("topk").build(knobs)
    with torch.no_grad():
        sae.b_enc.add_(0.05)  # so a few latents fire on random-model activations
    meta = SaeMeta(model="tiny", hook=HOOK, d_in=D_IN, d_sae=D_SAE, architecture="topk")
    return save_sae(sae, folder, meta)


def build_dashboards_folder(sae_dir: Path, tokenizer, *, seed: int = 0, labels: bool = True) -> Path:
    """Write `<sae_dir>/dashboards/` with random, self-consistent dashboards for D_SAE latents."""
    rng = np.random.default_rng(seed)
    cl, cr, n_top, n_int, n_per, n_bins = 4, 4, 5, 3, 2, 10
    ctx = cl + 1 + cr
    d = D_SAE
    vocab = np.array(tokenizer.encode(" the cat sat on a mat and then it ran home to eat fish ."), dtype=np.int32)
    xss_ids = np.array(tokenizer.encode(XSS), dtype=np.int32)

    density = rng.uniform(1e-4, 0.05, d).astype(np.float32)
    density[0] = 0.0  # latent 0 is dead
    max_act = rng.uniform(1.0, 10.0, d).astype(np.float32)
    max_act[0] = 0.0
    mean_act = (max_act * 0.3).astype(np.float32)

    top_tokens = rng.choice(vocab, size=(d, n_top, ctx)).astype(np.int32)
    top_tokens[:, -1, :2] = -1  # padding at the start of the last context
    decay = np.linspace(1.0, 0.4, n_top)[None, :, None]
    top_acts = rng.uniform(0, 0.5, (d, n_top, ctx)) * max_act[:, None, None]
    top_acts[:, :, cl] = max_act[:, None] * decay[:, :, 0]
    top_acts[0] = 0.0
    xss = xss_ids[:ctx]
    top_tokens[3, 0, cl : cl + len(xss)] = xss[: ctx - cl]

    q_tokens = rng.choice(vocab, size=(d, n_int, n_per, ctx)).astype(np.int32)
    top_seq = rng.integers(0, 100, (d, n_top)).astype(np.int32)
    top_seq[0] = -1
    q_bounds = (
        np.stack([np.linspace(0, 2 / 3, n_int), np.linspace(1 / 3, 1, n_int)], axis=-1)[None] * max_act[:, None, None]
    )
    q_acts = rng.uniform(0, 1, (d, n_int, n_per, ctx)) * q_bounds[:, :, None, 1:2]
    q_frac = np.tile(np.array([0.7, 0.25, 0.05]), (d, 1))
    q_frac[0] = 0.0
    hist = np.sort(rng.integers(0, 200, (d, n_bins)), axis=1)[:, ::-1].astype(np.int32)
    hist[0] = 0

    logit_ids = rng.choice(vocab, size=(d, 20)).astype(np.int32)
    pos_vals = np.sort(rng.uniform(0.1, 1.0, (d, 10)), axis=1)[:, ::-1]
    neg_vals = -pos_vals
    nbr_ids = np.stack([np.roll(np.arange(d), -k) for k in range(1, 11)], axis=1).astype(np.int32)
    nbr_cos = np.sort(rng.uniform(0.0, 0.6, (d, 10)), axis=1)[:, ::-1]
    map_xy = rng.normal(size=(d, 2))
    map_cluster = (np.arange(d) % 4).astype(np.int32)

    t = torch.from_numpy
    tensors = {
        "density": t(density),
        "max_act": t(max_act),
        "mean_act": t(mean_act),
        "top_tokens": t(top_tokens),
        "top_acts": t(top_acts.astype(np.float16)),
        "top_seq": t(top_seq),
        "top_pos": t(rng.integers(0, 128, (d, n_top)).astype(np.int32)),
        "q_tokens": t(q_tokens),
        "q_acts": t(q_acts.astype(np.float16)),
        "q_bounds": t(q_bounds.astype(np.float32)),
        "q_frac": t(q_frac.astype(np.float32)),
        "hist_counts": t(np.ascontiguousarray(hist)),
        "logit_pos_ids": t(logit_ids[:, :10].copy()),
        "logit_pos_vals": t(np.ascontiguousarray(pos_vals.astype(np.float32))),
        "logit_neg_ids": t(logit_ids[:, 10:].copy()),
        "logit_neg_vals": t(np.ascontiguousarray(neg_vals.astype(np.float32))),
        "nbr_ids": t(nbr_ids),
        "nbr_cos": t(np.ascontiguousarray(nbr_cos.astype(np.float32))),
        "map_xy": t(map_xy.astype(np.float32)),
        "map_cluster": t(map_cluster),
    }
    out = Path(sae_dir) / DASHBOARD_DIR
    out.mkdir(parents=True, exist_ok=True)
    save_tensors(out / "latents.safetensors", tensors)
    write_json(
        out / "meta.json",
        {
            "format": "saelab.dashboards",
            "version": 1,
            "ctx": ctx,
            "n_logits": 10,
            "n_neighbours": 10,
            "ctx_left": cl,
            "ctx_right": cr,
            "n_top": n_top,
            "n_int": n_int,
            "n_per": n_per,
            "n_bins": n_bins,
            "n_tokens": 1000,
            "d_sae": d,
            "formulas": {"density": "fraction of dashboard tokens with activation > 0"},
        },
    )
    if labels:
        entries = [
            {
                "label": f"tokens like cat {i}" if i != 3 else f"{XSS} & <b>bold</b>",
                "token_ids": [int(vocab[i % len(vocab)])],
                "kind": "tokens" if i else "dead",
                "detection_balanced_accuracy": 0.5 + 0.01 * i,
                "detection_f1": 0.4,
                "n_pos": 50,
                "n_neg": 50,
                **(
                    {
                        "token_balanced_accuracy": 0.6 + 0.02 * i,
                        "token_tpr": 0.7,
                        "token_tnr": 0.9,
                        "rule_family": "tokens",
                        "fit_balanced_accuracy": 0.8,
                        "token_n_pos": 40,
                        "token_n_neg": 900,
                    }
                    if i
                    else {}
                ),  # fmt: skip
            }
            for i in range(d)
        ]
        write_json(
            out / "labels.json",
            {
                "method": "top-token proxy",
                "proxy": True,
                "formula": "(TPR + TNR) / 2 on held-out rows",
                "latents": entries,
            },
        )
    return out


def build_real_dashboards(sae_dir: Path, handle) -> Path:
    """Dashboards made by the real builder (`build_dashboards`) over a few rows of text (~2 s on the tiny model)."""
    from saelab.corpus import texts_to_tokens
    from saelab.features.dashboards import DashboardConfig, build_dashboards
    from saelab.sae import load_sae

    text = f"The cat sat on the mat, then {XSS} ran home to eat fish.\n"
    tokens = texts_to_tokens(handle.tokenizer, [text * (1 + i % 3) for i in range(40)], 32)
    cfg = DashboardConfig(n_top=5, ctx_left=4, ctx_right=3, n_int=3, n_per=2, n_bins=10, projection="pca", n_clusters=4)
    return build_dashboards(handle, load_sae(sae_dir, handle=handle), tokens, cfg)


def build_feature_root(root: Path, tokenizer, *, dashboards: bool = True) -> Path:
    """`root/default/` = tiny SAE (+ dashboards): point `SAELAB_FEATURES` at `root`."""
    sae_dir = build_tiny_sae(Path(root) / "default")
    if dashboards:
        build_dashboards_folder(sae_dir, tokenizer)
    return sae_dir
