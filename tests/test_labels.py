"""Offline labels, their detection score, labels.json, and the optional LLM endpoint (fake local server).

The planted SAE reads `blocks.0.hook_resid_pre`, which in the rotary tiny model is exactly the token
embedding: latent 0 is W_E[' Paris'] / |W_E[' Paris']| with a bias of −0.8 |W_E[' Paris']|, so it fires on
' Paris' and on no other token; latent 1 fires everywhere, latent 2 never.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from sae_lens import StandardSAE, StandardSAEConfig
from safetensors.numpy import save_file

from saelab.corpus import sink_mask
from saelab.errors import BadInputError, IncompatibleSAEError
from saelab.features.autolabel import auto_label, label_all
from saelab.features.label_detection import detection_scores, heldout_rows, latent_activity, token_presence
from saelab.features.labels import LabelConfig, LabelSet, dashboard_arrays, read_labels, write_labels
from saelab.features.llm import UNREACHABLE_NOTE, EndpointError, LLMEndpoint, format_contexts, llm_labels
from saelab.features.store import FORMAT, FORMAT_VERSION, TENSORS, DashboardStore, tensor_shape
from saelab.hooks import active_hook_count, cache_activations
from saelab.sae.files import LoadedSAE

HOOK = "blocks.0.hook_resid_pre"
D_SAE = 48
PARIS = 7042  # ' Paris' in the SmolLM2 tokenizer
N_TOP, CTX, CTX_LEFT = 10, 8, 4


# ---------------------------------------------------------------- builders


def write_dashboards(sae_dir: Path, top_tokens: np.ndarray, top_acts: np.ndarray, **extra: np.ndarray) -> Path:
    """A dashboards folder `DashboardStore` reads: the given arrays, zeros for every other tensor."""
    d, n_top, ctx = top_tokens.shape
    meta = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "d_sae": d,
        "ctx_left": CTX_LEFT,
        "ctx_right": ctx - CTX_LEFT - 1,
        "ctx": ctx,
        "n_top": n_top,
        "n_int": 2,
        "n_per": 2,
        "n_bins": 4,
        "n_logits": 10,
        "n_neighbours": 3,
    }
    given = {"top_tokens": top_tokens, "top_acts": top_acts, **extra}
    arrays = {}
    for name, (dtype, _) in TENSORS.items():
        shape = tensor_shape(name, meta)
        arrays[name] = np.ascontiguousarray(given[name].astype(dtype) if name in given else np.zeros(shape, dtype))
    out = sae_dir / "dashboards"
    out.mkdir(parents=True, exist_ok=True)
    save_file(arrays, str(out / "latents.safetensors"))
    (out / "meta.json").write_text(json.dumps(meta))
    return sae_dir


def word_pool(tokenizer) -> np.ndarray:
    """Token ids of ' lowercase' words: rows built from them can never spell 'Paris'."""
    ids = list(range(1000, 6000))
    return np.array(
        [i for i, t in zip(ids, tokenizer.convert_ids_to_tokens(ids)) if re.fullmatch(r"Ġ[a-z]{3,}", t)],
        dtype=np.int64,
    )


def planted_dashboards(pool: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Top contexts for D_SAE latents: latent 0 peaks on ' Paris' (all other tokens distinct), latent 2 is
    dead, the rest peak on random pool words."""
    tt = rng.choice(pool, size=(D_SAE, N_TOP, CTX)).astype(np.int32)
    ta = np.zeros((D_SAE, N_TOP, CTX), np.float16)
    ta[:, :, CTX_LEFT] = rng.uniform(1, 5, size=(D_SAE, N_TOP))
    tt[0] = rng.choice(pool, size=N_TOP * CTX, replace=False).reshape(N_TOP, CTX)
    tt[0, :, CTX_LEFT] = PARIS
    ta[2] = 0
    return tt, ta


def planted_sae(handle) -> StandardSAE:
    torch.manual_seed(0)
    sae = StandardSAE(StandardSAEConfig(d_in=64, d_sae=D_SAE))
    w = handle.model.W_E[PARIS].detach()
    with torch.no_grad():
        sae.b_dec.zero_()
        sae.W_enc[:, 0] = w / w.norm()
        sae.b_enc[0] = -0.8 * w.norm()
        sae.W_enc[:, 1] = 0
        sae.b_enc[1] = 1.0  # fires everywhere
        sae.W_enc[:, 2] = 0
        sae.b_enc[2] = -1.0  # never fires
    return sae.eval()


def planted_rows(pool: np.ndarray, rng: np.random.Generator, n: int = 120, seq_len: int = 16) -> torch.Tensor:
    """Rows of pool words; ' Paris' at a random position ≥ 1 in half of them; in a few rows only at
    position 0 (the attention sink, which must count as neither 'fires' nor 'contains'); a separator
    (id 0) in some rows."""
    rows = rng.choice(pool, size=(n, seq_len))
    rows[: n // 2, :][np.arange(n // 2), rng.integers(1, seq_len, n // 2)] = PARIS
    rows[n // 2 : n // 2 + 6, 0] = PARIS
    rows[::7, seq_len // 2] = 0
    return torch.from_numpy(rows).long()


@pytest.fixture(scope="module")
def planted(tiny_handle, tmp_path_factory):
    rng = np.random.default_rng(0)
    pool = word_pool(tiny_handle.tokenizer)
    sae_dir = tmp_path_factory.mktemp("planted")
    tt, ta = planted_dashboards(pool, rng)
    logit_ids = np.tile(np.arange(100, 110, dtype=np.int32), (D_SAE, 1))
    write_dashboards(sae_dir, tt, ta, logit_pos_ids=logit_ids)
    loaded = LoadedSAE(sae=planted_sae(tiny_handle), meta=None, path=sae_dir, hook=HOOK)
    rows = planted_rows(pool, rng)
    cfg = LabelConfig(batch_size=64, compute_dtype="float32")
    calls: list[tuple[int, int]] = []
    labels = label_all(tiny_handle, loaded, sae_dir, rows, progress=lambda d, t: calls.append((d, t)), cfg=cfg)
    return {"dir": sae_dir, "loaded": loaded, "rows": rows, "labels": labels, "calls": calls, "cfg": cfg}


# ---------------------------------------------------------------- rules


def test_auto_label__planted_token_becomes_the_rule(tiny_handle, planted):
    lab = planted["labels"][0]
    assert lab.kind == "tokens"
    assert lab.token_ids == [PARIS]
    assert lab.label == "tokens: ' Paris'"


def test_auto_label__dead_latent_is_marked_dead_and_unscored(planted):
    lab = planted["labels"][2]
    assert lab.kind == "dead" and lab.token_ids == []
    assert lab.detection_balanced_accuracy is None


def test_auto_label__previous_token_rule_and_visible_whitespace(tiny_handle):
    rng = np.random.default_rng(1)
    pool = word_pool(tiny_handle.tokenizer)
    tt = rng.choice(pool, size=(6, N_TOP, CTX), replace=True).astype(np.int32)
    ta = np.zeros(tt.shape, np.float32)
    ta[:, :, CTX_LEFT] = 1.0
    tt[0, :, CTX_LEFT] = rng.choice(pool, N_TOP, replace=False)  # all different peak tokens ...
    tt[0, :, CTX_LEFT - 1] = 260  # ... always right after ' the'
    tt[1, :, CTX_LEFT] = 198  # '\n'
    labs = auto_label(tt, ta, CTX_LEFT, tiny_handle.tokenizer)
    assert labs[0].label == "after: ' the'" and labs[0].token_ids == labs[0].after_ids == [260]
    assert labs[1].label.startswith("tokens: '\\n'") and labs[1].token_ids[0] == 198


def test_auto_label__no_shared_token_falls_back_to_promoted_logits(tiny_handle):
    pool = word_pool(tiny_handle.tokenizer)
    tt = pool[: 3 * N_TOP * CTX].reshape(3, N_TOP, CTX).astype(np.int32)  # every token distinct
    ta = np.zeros(tt.shape, np.float32)
    ta[:, :, CTX_LEFT] = 1.0
    logits = np.array([[PARIS, 260, 198, 5]] * 3, dtype=np.int32)
    labs = auto_label(tt, ta, CTX_LEFT, tiny_handle.tokenizer, logit_pos_ids=logits)
    assert all(lab.kind == "promotes" for lab in labs)
    assert labs[0].label == "promotes: ' Paris', ' the', '\\n'" and labs[0].token_ids == [PARIS, 260, 198]
    assert auto_label(tt, ta, CTX_LEFT, tiny_handle.tokenizer)[0].kind == "none"


# ---------------------------------------------------------------- detection


def test_detection__planted_token_latent_scores_one(planted):
    lab = planted["labels"][0]
    assert lab.detection_balanced_accuracy == pytest.approx(1.0)
    assert lab.detection_f1 == pytest.approx(1.0)
    assert lab.n_pos == lab.n_neg > 0 and lab.tp == lab.n_pos and lab.tn == lab.n_neg
    assert lab.fp == lab.fn == 0
    assert lab.rule_family == "tokens" and lab.token_balanced_accuracy == pytest.approx(1.0)
    assert lab.token_n_pos > 0 and lab.token_n_neg > lab.token_n_pos
    assert planted["labels"].detection["median_token_balanced_accuracy"] is not None


def test_detection__latent_firing_everywhere_has_no_score(planted):
    lab = planted["labels"][1]
    assert lab.detection_balanced_accuracy is None and lab.detection_f1 is None
    assert "too few positions without it" in lab.note


def test_detection__random_latent_scores_about_half():
    rng = np.random.default_rng(0)
    n = 4000
    fires = rng.random((n, 2)) < 0.3
    tokens = torch.from_numpy(rng.integers(10, 20, size=(n, 1))).long()
    tokens = torch.cat([torch.zeros(n, 1, dtype=torch.long), tokens], dim=1)  # position 0 is a sink
    presence = token_presence(tokens, sink_mask(tokens, sep_id=0), vocab=32)
    fires[:, 1] = (tokens[:, 1] == 15).numpy()  # latent 1: fires exactly when the row holds token 15
    scores = detection_scores(fires, presence, [[15], [15]], LabelConfig(n_per_class=1000))
    assert abs(scores[0]["detection_balanced_accuracy"] - 0.5) < 0.06
    assert scores[1]["detection_balanced_accuracy"] == 1.0
    assert scores[0]["n_pos"] == scores[0]["n_neg"] == 1000
    few = detection_scores(np.zeros((n, 1), bool), presence, [[15]])
    assert "fires in only 0" in few[0]["note"]


def test_detection__after_rule_reads_the_token_before_an_analysed_position():
    # rows: [sink, a, b, c]; token 7 right before an analysed position predicts; 7 at the last position
    # precedes nothing and 7 at position 0 precedes position 1 (analysed), unless position 1 is a separator.
    tokens = torch.tensor([[7, 3, 3, 3], [3, 3, 3, 7], [3, 7, 3, 3], [7, 0, 3, 3], [3, 3, 3, 3]] * 3)
    keep = sink_mask(tokens, sep_id=0)
    before = token_presence(tokens, keep, vocab=8, before=True)
    assert before[:5, 7].toarray().ravel().tolist() == [1, 0, 1, 0, 0]
    fires = np.array([[1, 0, 1, 0, 0]] * 3).reshape(-1, 1).astype(bool)
    at = token_presence(tokens, keep, vocab=8)
    cfg = LabelConfig(min_rows=2)
    (score,) = detection_scores(fires, at, [[]], cfg, presence_before=before, after_rules=[[7]])
    assert score["detection_balanced_accuracy"] == 1.0
    (at_only,) = detection_scores(fires, at, [[7]], cfg)  # as an 'at' token, 7 misses row 0 and hits row 1
    assert at_only["detection_balanced_accuracy"] < 1.0


def test_latent_activity__matches_direct_encode_without_sinks(tiny_handle, planted):
    loaded, rows = planted["loaded"], planted["rows"][:20]
    fires = latent_activity(tiny_handle, loaded, rows, batch_size=7, compute_dtype=torch.float32)
    with torch.no_grad():
        f = loaded.sae.encode(cache_activations(tiny_handle, rows, [HOOK])[HOOK])
    keep = sink_mask(rows, 0)
    assert torch.equal(fires, ((f > 0) & keep[..., None]).any(1))
    assert torch.equal(fires[:, 0], ((rows == PARIS) & keep).any(1))
    assert active_hook_count(tiny_handle) == 0


def test_label_all__progress_reaches_total(planted):
    calls = planted["calls"]
    assert calls[-1][0] == calls[-1][1] and [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_label_all__rejects_dashboards_of_another_width(tiny_handle, planted, tmp_path):
    sae = StandardSAE(StandardSAEConfig(d_in=64, d_sae=D_SAE + 1))
    other = LoadedSAE(sae=sae, meta=None, path=tmp_path, hook=HOOK)
    with pytest.raises(IncompatibleSAEError, match="rebuild the dashboards"):
        label_all(tiny_handle, other, planted["dir"], planted["rows"])
    with pytest.raises(BadInputError):
        label_all(tiny_handle, planted["loaded"], planted["dir"], torch.zeros(3))


def test_dashboard_arrays__path_store_and_mapping_agree(planted):
    keys = ("top_tokens", "top_acts")
    from_path, meta = dashboard_arrays(planted["dir"], keys)
    from_store, meta_s = dashboard_arrays(DashboardStore(planted["dir"]), keys)
    from_map, _ = dashboard_arrays({**from_path, "meta": meta}, keys)
    for k in keys:
        assert np.array_equal(from_path[k], from_store[k]) and np.array_equal(from_path[k], from_map[k])
    assert meta["ctx_left"] == meta_s["ctx_left"] == CTX_LEFT


# ---------------------------------------------------------------- labels.json


def test_write_labels__round_trips_atomically_and_store_reads_it(planted, tmp_path, monkeypatch):
    sae_dir = write_dashboards(tmp_path, *planted_dashboards(np.arange(1000, 1300), np.random.default_rng(2)))
    labels: LabelSet = planted["labels"]
    path = write_labels(sae_dir, labels)
    assert read_labels(sae_dir) == labels
    data = json.loads(path.read_text())
    assert data["method"] == "contrastive-tokens" and data["proxy"] is True and "PROXY" in data["formula"]
    assert data["latents"][0]["label"] == "tokens: ' Paris'" and data["latents"][0]["token_ids"] == [PARIS]
    assert data["detection"]["n_rows"] == planted["rows"].shape[0]
    assert DashboardStore(sae_dir).labels()[0].detection_balanced_accuracy == 1.0

    before = path.read_bytes()
    broken = LabelSet(latents=labels.latents, provenance={"bad": float("nan")})
    with pytest.raises(ValueError):
        write_labels(sae_dir, broken)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["labels.json", "latents.safetensors", "meta.json"]
    assert read_labels(tmp_path / "nowhere") is None


# ---------------------------------------------------------------- LLM endpoint


class _FakeLLM(BaseHTTPRequestHandler):
    """Canned OpenAI-style answers: the explainer names Paris when a context marks it, the simulator says
    yes iff the text holds 'Paris'. Paths: /slow never answers in time, /bad returns junk, /fail a 500."""

    def log_message(self, *args):  # keep test output clean
        pass

    def _trickle(self, status: int) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "100000")
        self.end_headers()
        for _ in range(40):  # a byte every 0.1 s: each read succeeds, the whole never arrives in time
            try:
                self.wfile.write(b"x")
                self.wfile.flush()
            except OSError:
                return
            time.sleep(0.1)

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path.startswith("/trickle"):
            return self._trickle(500 if "error" in self.path else 200)
        if self.path.startswith("/deep"):
            payload = b"[" * 100_000 + b"]" * 100_000
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        if self.path.startswith("/slow"):
            time.sleep(3)  # the client has given up by now: answer nothing
            return
        if self.path.startswith("/fail"):
            self.send_response(500)
            self.end_headers()
            self.wfile.write(b"model not loaded")
            return
        system, user = body["messages"][0]["content"], body["messages"][-1]["content"]
        if system.startswith("We're studying"):
            answer = "the word Paris" if "<< Paris>>" in user else "something else"
        else:
            answer = "Yes." if "Paris" in user else "no"
        payload = (
            b"not json"
            if self.path.startswith("/bad")
            else json.dumps({"choices": [{"message": {"role": "assistant", "content": answer}}]}).encode()
        )
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture(scope="module")
def fake_llm():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeLLM)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_llm_endpoint__fake_server_answers(fake_llm):
    ep = LLMEndpoint(fake_llm + "/v1/", "fake", api_key="secret")
    assert ep.url == fake_llm + "/v1/chat/completions" and "secret" not in repr(ep)
    assert ep.chat([{"role": "system", "content": "sim"}, {"role": "user", "content": "in Paris"}]) == "Yes."


def test_llm_endpoint__unreachable_port_fails_fast_with_endpoint_error():
    ep = LLMEndpoint(f"http://127.0.0.1:{_closed_port()}/v1", "fake", timeout=2)
    t0 = time.perf_counter()
    with pytest.raises(EndpointError, match="Cannot reach"):
        ep.chat([{"role": "user", "content": "hi"}])
    assert time.perf_counter() - t0 < 2


@pytest.mark.parametrize(
    ("path", "match"),
    [
        ("/slow", "did not answer within"),
        ("/bad", "OpenAI-style"),
        ("/fail", "HTTP 500"),
        ("/deep", "OpenAI-style"),  # deeply nested JSON: RecursionError inside json.loads, caught
        ("/trickle", "took longer than"),  # a byte at a time: the total deadline holds
        ("/trickle-error", "HTTP 500"),  # an error body trickling in: read capped by size and deadline
    ],
)
def test_llm_endpoint__timeout_junk_and_http_errors_become_endpoint_errors(fake_llm, path, match):
    ep = LLMEndpoint(fake_llm + path, "fake", timeout=0.5)
    t0 = time.perf_counter()
    with pytest.raises(EndpointError, match=match):
        ep.chat([{"role": "user", "content": "hi"}])
    assert time.perf_counter() - t0 < 2.5


def test_llm_endpoint__bad_settings_are_bad_input():
    with pytest.raises(BadInputError):
        LLMEndpoint("localhost:8080", "m")
    with pytest.raises(BadInputError):
        LLMEndpoint("http://localhost:8080", " ")


def test_llm_endpoint__only_allowed_hosts(monkeypatch):
    from saelab.trust import HOSTS_ENV

    monkeypatch.delenv(HOSTS_ENV, raising=False)
    with pytest.raises(BadInputError, match=HOSTS_ENV):
        LLMEndpoint("http://169.254.169.254/v1", "m")  # the app never POSTs to another machine unless told to
    assert LLMEndpoint("http://[::1]:8080/v1", "m").base_url == "http://[::1]:8080/v1"
    monkeypatch.setenv(HOSTS_ENV, "llm.example.org, other.host")
    assert LLMEndpoint("https://LLM.example.org/v1", "m").url.endswith("/chat/completions")


def test_llm_labels__explanation_scored_like_offline_rule(tiny_handle, planted, fake_llm):
    rows = heldout_rows(tiny_handle, planted["loaded"], planted["rows"], compute_dtype=torch.float32)
    ep = LLMEndpoint(fake_llm + "/v1", "fake", timeout=5)
    out = llm_labels(ep, planted["dir"], [0, 2], planted["labels"], rows, tiny_handle.tokenizer, n_per_class=4)
    assert out.latents == planted["labels"].latents and out.proxy is True  # offline labels untouched
    got = out.llm["latents"]["0"]
    assert out.llm["proxy"] is False and out.llm["note"] is None
    assert got["label"] == "the word Paris"
    assert got["detection_balanced_accuracy"] == 1.0 and got["n_pos"] == got["n_neg"] == 4
    assert got["offline_balanced_accuracy_same_rows"] == 1.0
    assert out.llm["latents"]["2"]["label"] is None  # dead: nothing to explain
    json.dumps(out.to_dict(), allow_nan=False)


def test_llm_labels__unreachable_endpoint_returns_offline_labels_with_note(tiny_handle, planted):
    rows = heldout_rows(tiny_handle, planted["loaded"], planted["rows"][:10], compute_dtype=torch.float32)
    ep = LLMEndpoint(f"http://127.0.0.1:{_closed_port()}", "fake", timeout=2)
    out = llm_labels(ep, planted["dir"], [0], planted["labels"], rows, tiny_handle.tokenizer)
    assert out.latents == planted["labels"].latents
    assert out.llm["note"].startswith(UNREACHABLE_NOTE)


def test_format_contexts__marks_peak_tokens(tiny_handle):
    tt = np.array([[260, PARIS, -1]], dtype=np.int32)
    ta = np.array([[0.1, 2.0, 0.0]], dtype=np.float32)
    assert format_contexts(tt, ta, tiny_handle.tokenizer) == "1.  the<< Paris>>"


def test_store_labels__typed_label_set_and_a_clear_error_for_a_foreign_file(planted, tmp_path):
    from saelab.errors import CorruptFileError

    sae_dir = write_dashboards(tmp_path, *planted_dashboards(np.arange(1000, 1300), np.random.default_rng(3)))
    path = write_labels(sae_dir, planted["labels"])
    store = DashboardStore(sae_dir)
    assert isinstance(store.labels(), LabelSet) and store.labels()[0].label == "tokens: ' Paris'"
    path.write_text('{"0": "not a label set"}')
    os.utime(path, (1, 1))  # a new mtime: the store re-reads
    with pytest.raises(CorruptFileError):
        store.labels()
