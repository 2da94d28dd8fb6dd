"""Attribution graphs (issue 19) on the tiny model: the replacement model, edge weights, pruning and scores."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from saelab.errors import BadInputError, IncompatibleSAEError
from saelab.graphs.attribution import GraphConfig, build_raw_graph
from saelab.graphs.linearised import clean_state, replacement_logits, replacement_preacts
from saelab.graphs.prune import influence, prune, scores
from saelab.graphs.transcoders import TranscoderSet, random_transcoder_set

TEXT = "The cat sat on the mat and then it ran home"


@pytest.fixture(scope="module")
def tcs(tiny_handle):
    return random_transcoder_set(tiny_handle, 128, density=0.05)


@pytest.fixture(scope="module")
def prompt(tiny_handle):
    return torch.tensor(tiny_handle.tokenizer.encode(TEXT))


@pytest.fixture(scope="module")
def graph(tiny_handle, tcs, prompt):
    return build_raw_graph(tiny_handle, tcs, prompt, GraphConfig(max_feature_nodes=48, batch_size=16))


def test_replacement_model__reproduces_the_real_logits_with_error_nodes(tiny_handle, tcs, prompt):
    clean = clean_state(tiny_handle, tcs, prompt)
    assert sum(int((a > 0).sum()) for a in clean.acts.values()) > 20, "features fire"
    assert all(e.norm() > 0.1 for e in clean.errors.values()), "random transcoders leave real error"
    logits = replacement_logits(tiny_handle, tcs, clean)
    assert torch.allclose(logits, clean.logits, atol=1e-5, rtol=0)
    no_error = {k: torch.zeros_like(v) for k, v in clean.acts.items()}  # a different replacement: logits move
    assert not torch.allclose(replacement_logits(tiny_handle, tcs, clean, acts=no_error), clean.logits, atol=1e-3)


def test_edges__equal_patching_effects_in_the_replacement_model(tiny_handle, tcs, prompt, graph):
    """Scaling one source feature's activation by (1 + ε) moves a later feature's pre-activation by ε × the edge
    (the replacement model is linear in the feature activations once patterns and scales are frozen)."""
    clean = clean_state(tiny_handle, tcs, prompt)
    nf, A = graph.n_features, graph.adjacency
    checked = 0
    for t in [i for i in graph.expanded if graph.features[i, 0] == 1][:4]:
        layer, p, f = (int(v) for v in graph.features[t])
        base = replacement_preacts(tiny_handle, tcs, clean, layer)[p, f]
        for s in [j for j in range(nf) if graph.features[j, 0] == 0 and A[t, j] != 0][:3]:
            _, ps, fs = (int(v) for v in graph.features[s])
            acts = {k: v.clone() for k, v in clean.acts.items()}
            acts[0][ps, fs] *= 1.5
            moved = replacement_preacts(tiny_handle, tcs, clean, layer, acts=acts)[p, f]
            assert float(moved - base) / 0.5 == pytest.approx(float(A[t, s]), rel=1e-3, abs=1e-6)
            checked += 1
    assert checked >= 4
    later = graph.features[:, 1][None, :] > graph.features[:, 1][:, None]  # source after target: no edge
    assert not np.any(A[:nf, :nf][later]), "no edge from a later position"
    same_or_later_layer = graph.features[:, 0][None, :] >= graph.features[:, 0][:, None]
    assert not np.any(A[:nf, :nf][same_or_later_layer]), "features only read earlier layers"


def test_logit_rows__equal_patching_effects_on_the_demeaned_logit(tiny_handle, tcs, prompt, graph):
    clean = clean_state(tiny_handle, tcs, prompt)
    f0, e0, t0, l0 = graph.offsets()
    row, tok = graph.adjacency[l0], int(graph.logit_tokens[0])

    def demeaned(acts=None):
        last = replacement_logits(tiny_handle, tcs, clean, acts=acts)[-1]
        return float(last[tok] - last.mean())

    base = demeaned()
    sources = [j for j in np.argsort(-np.abs(row[:e0]))[:3] if row[j] != 0]
    assert sources and np.abs(row[t0:l0]).sum() > 0 and np.abs(row[e0:t0]).sum() > 0
    for s in sources:
        layer, ps, fs = (int(v) for v in graph.features[s])
        acts = {k: v.clone() for k, v in clean.acts.items()}
        acts[layer][ps, fs] *= 1.5
        assert (demeaned(acts) - base) / 0.5 == pytest.approx(float(row[s]), rel=1e-3, abs=1e-5)
    assert graph.logit_probs[0] == graph.logit_probs.max() and len(graph.logit_tokens) <= 10


def test_influence_prune_and_scores(graph):
    R, rn = graph.rows, graph.row_nodes
    f0, e0, t0, l0 = graph.offsets()
    w = graph.logit_weights()
    infl = influence(R, rn, w)
    assert infl[graph.expanded].sum() > 0 and (infl >= 0).all()
    dense = np.zeros(len(w))  # the same on the dense matrix, by explicit powers
    An = np.abs(graph.adjacency).astype(float)
    An = np.divide(An, An.sum(1, keepdims=True), out=np.zeros_like(An), where=An.sum(1, keepdims=True) > 0)
    r = w.copy()
    for _ in range(20):
        r = r @ An
        dense += r
    np.testing.assert_allclose(infl, dense, atol=1e-9)
    keep, edges, _ = prune(R, rn, w, graph.n_features, 0.8, 0.98)
    assert keep[e0:].all() and 0 < keep[:e0].sum() <= graph.n_features
    assert not edges[~keep[rn]].any() and not edges[:, ~keep].any()
    s = scores(R, rn, w, slice(e0, t0), slice(t0, l0))
    assert 0 < s["replacement_score"] < 1 and 0 < s["completeness_score"] < 1
    clean_R = R.copy()
    clean_R[:, e0:t0] = 0  # no error node feeds anything: a complete replacement
    s2 = scores(clean_R, rn, w, slice(e0, t0), slice(t0, l0))
    assert s2["replacement_score"] == pytest.approx(1.0) and s2["completeness_score"] == pytest.approx(1.0)


def test_bad_input__prompt_length_and_missing_layers(tiny_handle, tcs):
    with pytest.raises(BadInputError, match="1 … 64 tokens"):
        build_raw_graph(tiny_handle, tcs, torch.arange(65))
    with pytest.raises(IncompatibleSAEError, match="no transcoder"):
        build_raw_graph(tiny_handle, TranscoderSet("tiny", {0: tcs[0]}), torch.arange(4))
    with pytest.raises(BadInputError, match="positive integer"):
        GraphConfig(batch_size=0)


def test_train_transcoders__one_pass_per_batch_for_all_layers_saves_sae_lens_folders_and_resumes(tiny_handle, tmp_path):
    from sae_lens import SAE

    from saelab.corpus import CorpusConfig, build_corpus
    from saelab.graphs.train_transcoders import TranscoderTrainConfig, evaluate_layers, train_transcoders
    from saelab.graphs.transcoders import load_transcoder_set

    # init_tokens=0: no least-squares start
    cfg = TranscoderTrainConfig(d_sae=64, k=4, n_tokens=32 * 40, rows_per_step=4, seq_len=32, lr=3e-3,
                                checkpoint_steps=4, init_tokens=0)  # fmt: skip
    seen = []
    tset = train_transcoders(tiny_handle, cfg, tmp_path / "tc", progress=lambda d, t, m: seen.append(m))
    assert len(seen) == 10 and seen[-1]["nmse_mean"] < seen[0]["nmse_mean"], "training lowers the error"

    class Stop(Exception):
        pass

    def first_step(d, t, m):
        fitted.append(m)
        raise Stop

    fitted = []  # the least-squares skip start (fitted on all 40 rows) begins below the zero start
    with pytest.raises(Stop):
        train_transcoders(tiny_handle, TranscoderTrainConfig(**{**cfg.to_dict(), "init_tokens": 32 * 40}),
                          tmp_path / "tc_fit", progress=first_step)  # fmt: skip
    assert fitted[0]["nmse_mean"] < seen[0]["nmse_mean"] - 0.1
    sae = SAE.load_from_disk(str(tmp_path / "tc" / "layer_1"))  # SAE-Lens reads it as a transcoder
    assert sae.cfg.architecture() == "jumprelu_skip_transcoder"
    assert sae.cfg.metadata.hook_name == "blocks.1.ln2.hook_normalized"
    back = load_transcoder_set(tmp_path / "tc")
    assert back.layers == [0, 1] and torch.equal(back[1].W_enc, tset[1].W_enc)
    held = build_corpus(tiny_handle.tokenizer, CorpusConfig(seq_len=32, n_tokens=32 * 8, split="heldout")).tokens
    rows = evaluate_layers(tiny_handle, back, held)
    assert [r["layer"] for r in rows] == [0, 1]
    for r in rows:
        assert 0 < r["l0"] and 0 <= r["dead_fraction"] <= 1 and r["nmse"] < 1.5
        assert r["ce_zero_ablated"] != r["ce_clean"] and math.isfinite(r["ce_loss_score"])

    # a stopped run resumes from its checkpoint and ends with the same weights
    def stop_at_6(d, t, m):
        if d == 6:
            raise Stop

    with pytest.raises(Stop):
        train_transcoders(tiny_handle, cfg, tmp_path / "tc2", progress=stop_at_6)
    assert (tmp_path / "tc2" / ".transcoders.partial" / "state.json").is_file()
    resumed = []
    again = train_transcoders(tiny_handle, cfg, tmp_path / "tc2", progress=lambda d, t, m: resumed.append(d))
    assert resumed[0] == 5, "resumed after the checkpoint at step 4"
    assert torch.allclose(again[0].W_dec, tset[0].W_dec, atol=1e-6)


def test_graph__prunes_exports_neuronpedia_json_and_html_and_round_trips(tiny_handle, tcs):
    import json

    from saelab.graphs.graph import AttributionGraph, attribution_graph

    g = attribution_graph(tiny_handle, tcs, TEXT, GraphConfig(max_feature_nodes=48, batch_size=16))
    kinds = {n["kind"] for n in g.nodes}
    assert kinds == {"feature", "error", "token", "logit"} and g.stats["kept_features"] < g.stats["active_features"]
    for key in ("replacement_score", "completeness_score", "pruned_replacement_score", "pruned_completeness_score"):
        assert 0 <= g.scores[key] <= 1
    ids = {n["id"] for n in g.nodes}
    assert g.edges and all(e["source"] in ids and e["target"] in ids for e in g.edges)
    again = AttributionGraph.from_dict(json.loads(json.dumps(g.to_dict())))
    assert again.nodes == g.nodes and again.edges == g.edges
    npj = g.to_neuronpedia()
    assert set(npj) == {"metadata", "qParams", "nodes", "links"}
    types = {n["feature_type"] for n in npj["nodes"]}
    assert types == {"cross layer transcoder", "mlp reconstruction error", "embedding", "logit"}
    logit = next(n for n in npj["nodes"] if n["feature_type"] == "logit")
    assert logit["layer"] == "3" and logit["node_id"].startswith("3_") and logit["is_target_logit"] in (True, False)
    assert npj["metadata"]["prompt_tokens"] == g.token_strs
    from saelab.reports.graphs import graph_html

    html = graph_html(g)
    assert html.startswith("<!doctype html>") and "plotly" in html and "replacement score" in html.lower()
    assert "<script src=" not in html and len(html) > 1_000_000, "self-contained: plotly.js inlined, no script URL"


def test_interventions__prediction_equals_the_replacement_model_and_the_real_model_is_measured(tiny_handle, tcs):
    """For a last-layer feature the graph's prediction is exact in the replacement model (frozen norms and
    patterns); the real model's response (live norms and attention) is measured for the faithfulness check."""
    from saelab.graphs.graph import attribution_graph
    from saelab.graphs.interventions import Change, measure, predict

    cfg = GraphConfig(max_feature_nodes=200, batch_size=32, node_threshold=1.0, edge_threshold=1.0)
    g = attribution_graph(tiny_handle, tcs, TEXT, cfg)
    last = [n for n in g.nodes if n["kind"] == "feature" and n["layer"] == 1 and n["pos"] == len(g.tokens) - 1]
    n = max(last, key=lambda n: n["influence"])
    change = [Change(1, n["pos"], n["latent"], 0.0)]
    predicted = predict(g, change)
    clean = clean_state(tiny_handle, tcs, torch.tensor(g.tokens))
    acts = {k: v.clone() for k, v in clean.acts.items()}
    acts[1][n["pos"], n["latent"]] = 0.0
    before, after = (
        replacement_logits(tiny_handle, tcs, clean)[-1],
        replacement_logits(tiny_handle, tcs, clean, acts)[-1],
    )
    for tok, p in predicted.items():
        frozen = float((after[tok] - after.mean()) - (before[tok] - before.mean()))
        assert p == pytest.approx(frozen, rel=1e-3, abs=1e-6)
    measured = measure(tiny_handle, tcs, g, change)
    assert set(measured) == set(predicted) and all(math.isfinite(v) for v in measured.values())
    assert any(abs(v) > 0 for v in measured.values()), "ablating the feature moves the real logits"
    with pytest.raises(BadInputError, match="not an active node"):
        predict(g, [Change(0, 0, 10_000, 0.0)])


@pytest.fixture(scope="module")
def tc_folder(tiny_handle, tcs, tmp_path_factory):
    from saelab.graphs.transcoders import save_transcoder

    root = tmp_path_factory.mktemp("transcoders")
    for layer in tcs.layers:
        save_transcoder(tcs[layer], root / f"layer_{layer}", "tiny")
    return root


def test_graph_page__builds_a_graph_picks_a_feature_and_intervenes(tiny_handle, tc_folder, monkeypatch):
    from tests.fixtures_ui import open_page, tiny_app

    monkeypatch.setenv("SAELAB_TRANSCODERS", str(tc_folder))
    at = open_page(tiny_app(monkeypatch), "pages/graphs.py")
    assert any("Type a prompt" in i.value for i in at.info)
    at.text_input(key="graph_prompt").set_value(TEXT).run()
    at.button(key="graph_build").click().run()
    assert not at.exception, at.exception
    labels = [m.label for m in at.metric]
    assert "Replacement score" in labels and "Completeness" in labels
    node = at.selectbox(key="graph_node")
    assert node.value and node.value.count("_") == 2
    assert any("No dashboards for this layer" in i.value for i in at.info), "empty state for a layer without them"
    at.button(key="graph_iv_run").click().run()
    assert not at.exception, at.exception
    table = at.dataframe[0].value
    assert list(table.columns) == ["logit", "graph predicts Δ", "model measured Δ"] and len(table) >= 1
    at.multiselect(key="graph_super_members").set_value([node.value])
    at.text_input(key="graph_super_name").set_value("subject").run()
    at.button(key="graph_super_add").click().run()
    assert not at.exception and any("**subject**" in m.value for m in at.markdown)


def test_graph_page__empty_state_without_transcoders(tiny_handle, monkeypatch, tmp_path):
    from tests.fixtures_ui import open_page, tiny_app

    monkeypatch.delenv("SAELAB_TRANSCODERS", raising=False)
    at = open_page(tiny_app(monkeypatch, tmp_path), "pages/graphs.py")
    assert any("No transcoders found" in i.value for i in at.info)


@pytest.mark.browser
def test_browser__graph_page_builds_a_graph_and_a_click_opens_a_feature(tiny_handle, tcs, tmp_path):
    """A real server and Chromium: build the default prompt's graph on the tiny model, click a feature point in
    the figure, and see that feature's card."""
    from playwright.sync_api import sync_playwright

    from saelab.graphs.transcoders import save_transcoder
    from tests.fixtures_ui import build_feature_root
    from tests.test_browser import _chromium, _wait_idle, app_server

    root = tmp_path / "features"
    build_feature_root(root, tiny_handle.tokenizer)
    for layer in tcs.layers:
        save_transcoder(tcs[layer], root / "transcoders-tiny" / f"layer_{layer}", "tiny")
    with app_server(root) as url, sync_playwright() as pw:
        browser = _chromium(pw)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1200})
            page.goto(f"{url}/graphs", wait_until="domcontentloaded")
            page.get_by_text("Type a prompt and build its graph").wait_for(timeout=120_000)
            page.get_by_role("button", name="Build graph").click()
            page.get_by_text("Replacement score").first.wait_for(timeout=120_000)
            _wait_idle(page)
            first_card = page.get_by_text(" transcoder · latent ").first.inner_text()
            page.wait_for_selector(".js-plotly-plot .scatterlayer .trace path.point", timeout=60_000)
            feature_trace = (
                "() => Array.from(document.querySelector('.js-plotly-plot').data).findIndex(t => t.name === 'feature')"
            )
            k = page.evaluate(feature_trace)
            ids = page.evaluate(f"() => document.querySelector('.js-plotly-plot').data[{k}].customdata")
            target = next(i for i, nid in enumerate(ids) if nid.split("_")[1] not in first_card)
            layer, latent, _ = ids[target].split("_")
            point = page.locator(".scatterlayer .trace").nth(k).locator("path.point").nth(target)
            point.scroll_into_view_if_needed()
            box = point.bounding_box()
            x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
            page.mouse.move(x, y)  # plotly finds the point under the pointer on its drag layer
            page.mouse.click(x, y)
            page.get_by_text(f"Layer {layer} transcoder · latent {latent}").first.wait_for(timeout=60_000)
        finally:
            browser.close()


def test_cli__saelab_graph_writes_neuronpedia_json_and_html(tiny_handle, tc_folder, tmp_path, monkeypatch, capsys):
    import json

    from saelab import cli

    monkeypatch.setattr("saelab.models.load_model", lambda spec=None: tiny_handle)
    out = tmp_path / "g.json"
    argv = ["graph", "--model", "tiny", "--transcoders", str(tc_folder), "--prompt", TEXT, "--out", str(out),
            "--html", str(tmp_path / "g.html"), "--max-feature-nodes", "32", "--batch-size", "16"]  # fmt: skip
    assert cli.main(argv) == 0
    data = json.loads(out.read_text())
    assert set(data) == {"metadata", "qParams", "nodes", "links"} and data["links"]
    assert (tmp_path / "g.saelab.json").is_file() and (tmp_path / "g.html").stat().st_size > 1_000_000
    printed = json.loads(capsys.readouterr().out.splitlines()[0])
    assert 0 <= printed["replacement_score"] <= 1
    assert cli.main(["graph", "--model", "tiny", "--transcoders", str(tmp_path), "--prompt", TEXT]) == 2
    assert "no layer_<L>/" in capsys.readouterr().err


def test_cli__saelab_transcoders_trains_evaluates_and_prints_each_layer(tiny_handle, tmp_path, monkeypatch, capsys):
    import json

    from saelab import cli

    monkeypatch.setattr("saelab.models.load_model", lambda spec=None: tiny_handle)
    argv = ["transcoders", "--model", "tiny", "--out", str(tmp_path / "tc"), "--d-sae", "32", "--k", "4",
            "--tokens", str(32 * 16), "--rows-per-step", "4", "--seq-len", "32", "--eval-tokens", "256"]  # fmt: skip
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "CE-loss score" in out and len([ln for ln in out.splitlines() if ln.strip()[:1].isdigit()]) == 2
    meta = json.loads((tmp_path / "tc" / "transcoders.json").read_text())
    assert [r["layer"] for r in meta["evaluation"]["rows"]] == [0, 1] and meta["config"]["d_sae"] == 32


def test_ordinary__leaves_out_massive_mlp_outputs_and_sinks():
    from saelab.graphs.train_transcoders import ordinary

    y = torch.ones(2, 5, 3)
    y[1, 3] *= 40  # a massive output, as SmolLM2's layer-2 MLP writes on some tokens
    keep = torch.ones(2, 5, dtype=torch.bool)
    keep[:, 0] = False  # position 0: a sink already
    ok = ordinary(y, keep, 10.0)
    assert ok.sum() == 7 and not ok[1, 3] and not ok[:, 0].any()
    assert torch.equal(ordinary(y, keep, 0.0), keep), "factor 0 leaves nothing else out"
