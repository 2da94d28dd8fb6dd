"""Harvest on a local Ray cluster of 2 workers (issue 18): the same folder as one process, retries, resume."""

from __future__ import annotations

import json
import time

import pytest
import torch

ray = pytest.importorskip("ray")

from saelab.activations import HarvestConfig, harvest  # noqa: E402
from saelab.corpus import CorpusConfig, build_corpus  # noqa: E402
from saelab.distributed.ray_harvest import RayShardRunner  # noqa: E402

HOOKS = ["blocks.0.hook_resid_post", "blocks.1.hook_mlp_out"]


@pytest.fixture(scope="module")
def runner():
    r = RayShardRunner("tiny", address="local", workers=2)
    yield r
    r.shutdown()
    ray.shutdown()


@pytest.fixture(scope="module")
def corpus(tiny_handle):
    return build_corpus(tiny_handle.tokenizer, CorpusConfig(seq_len=32, n_tokens=32 * 40, seed=0))


def _cfg() -> HarvestConfig:
    return HarvestConfig(hooks=HOOKS, batch_size=4, shard_tokens=31 * 8, compute_dtype="float32", store_dtype="float32")


def _shards(folder):
    manifest = json.loads((folder / "manifest.json").read_text())
    return manifest, {s["file"]: (folder / s["file"]).read_bytes() for s in manifest["shards"]}


def test_ray_harvest__same_shards_byte_for_byte_as_one_process(tiny_handle, corpus, runner, tmp_path):
    local = harvest(tiny_handle, corpus, _cfg(), tmp_path / "local")
    remote = harvest(tiny_handle, corpus, _cfg(), tmp_path / "ray", runner=runner)
    assert remote.n_shards == local.n_shards == 5 and runner.shards_done == remote.n_shards
    m_local, b_local = _shards(tmp_path / "local")
    m_ray, b_ray = _shards(tmp_path / "ray")
    assert b_local == b_ray, "every shard file identical"
    drop = ("seconds",)
    assert {k: v for k, v in m_local.items() if k not in drop} == {k: v for k, v in m_ray.items() if k not in drop}
    pids = {ray.get(a.pid.remote()) for a in runner.actors}
    assert len(pids) == 2 and __import__("os").getpid() not in pids, "two worker processes did the work"


def test_ray_harvest__a_stopped_driver_resumes_from_the_written_shards(tiny_handle, corpus, runner, tmp_path):
    class Stop(Exception):
        pass

    seen = []

    def stop_after_two_shards(done, total):
        seen.append(done)
        if len(seen) == 2:
            raise Stop

    with pytest.raises(Stop):
        harvest(tiny_handle, corpus, _cfg(), tmp_path / "h", progress=stop_after_two_shards, runner=runner)
    assert len(json.loads((tmp_path / "h" / "manifest.json").read_text())["shards"]) == 1
    again = harvest(tiny_handle, corpus, _cfg(), tmp_path / "h", runner=runner)
    assert again.shards_reused == 1 and again.n_shards > 2
    harvest(tiny_handle, corpus, _cfg(), tmp_path / "ref")
    assert _shards(tmp_path / "h")[1] == _shards(tmp_path / "ref")[1]


def test_ray_harvest__a_killed_worker_is_restarted_and_its_shard_retried(tiny_handle, corpus, runner, tmp_path):
    runner.start("float32")
    killed = []

    def kill_one_worker(done, total):
        if not killed:
            ray.kill(runner.actors[1], no_restart=False)  # the actor's in-flight shards are retried
            killed.append(done)

    out = harvest(tiny_handle, corpus, _cfg(), tmp_path / "k", progress=kill_one_worker, runner=runner)
    assert killed and out.tokens_computed == out.n_tokens
    harvest(tiny_handle, corpus, _cfg(), tmp_path / "ref")
    assert _shards(tmp_path / "k")[1] == _shards(tmp_path / "ref")[1]


def test_ray_dashboards__same_top_contexts_histograms_and_statistics_as_one_process(tiny_handle, runner, tmp_path):
    """The activations phase on 2 actors (chunks of batches, merged in batch order): every tensor of the
    dashboards equals the single-process build's, bit for bit, and resuming from a checkpoint still does."""
    from saelab.corpus import texts_to_tokens
    from saelab.features.dashboards import DashboardConfig, build_dashboards
    from saelab.features.store import LATENTS_FILE
    from saelab.sae import load_sae
    from saelab.storage import load_tensors
    from tests.fixtures_ui import build_tiny_sae

    sae_dir = build_tiny_sae(tmp_path / "sae")
    loaded = load_sae(sae_dir, handle=tiny_handle)
    texts = [f"Row {i}: the cat sat on the mat {i % 7} times, then it ran home to eat fish." for i in range(72)]
    tokens = texts_to_tokens(tiny_handle.tokenizer, texts, 24)
    cfg = DashboardConfig(n_top=5, ctx_left=3, ctx_right=2, n_int=3, n_per=2, n_bins=10, batch_size=4,
                          checkpoint_rows=0, projection="pca", n_clusters=3, compute_dtype="float32")  # fmt: skip
    local = build_dashboards(tiny_handle, loaded, tokens, cfg, out_dir=tmp_path / "local")
    before = runner.items_done
    remote = build_dashboards(tiny_handle, loaded, tokens, cfg, out_dir=tmp_path / "ray", pool=runner)
    assert runner.items_done - before == -(-len(tokens) // (4 * 4)), "one task per 4 batches"
    a, b = load_tensors(local / LATENTS_FILE), load_tensors(remote / LATENTS_FILE)
    assert set(a) == set(b) and len(a) > 10
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert int((a["top_acts"] > 0).sum()) > 20, "the SAE fires: the comparison is not of empty dashboards"
    m_a, m_b = (json.loads((p / "meta.json").read_text()) for p in (local, remote))
    for key in ("n_tokens", "n_entries", "tokens_fingerprint", "sae"):
        assert m_a[key] == m_b[key], key

    # a build stopped half-way on one process resumes on the actors from its checkpoint, to the same tensors
    class Stop(Exception):
        pass

    def stop_half_way(phase, done, total):
        if phase == "activations" and total and done > total // 2:
            raise Stop

    half = DashboardConfig(**{**cfg.to_dict(), "checkpoint_rows": 8})
    with pytest.raises(Stop):
        build_dashboards(tiny_handle, loaded, tokens, half, out_dir=tmp_path / "resumed", progress=stop_half_way)
    resumed = build_dashboards(tiny_handle, loaded, tokens, half, out_dir=tmp_path / "resumed", pool=runner)
    c = load_tensors(resumed / LATENTS_FILE)
    assert all(torch.equal(a[name], c[name]) for name in a)


def test_ray_sweep__harvest_shards_and_runs_on_the_actors_give_the_single_process_saes(tiny_handle, runner, tmp_path):
    from saelab.features import sweep as sw
    from saelab.features import train_job as tj
    from saelab.sae import load_sae

    base = tj.TrainRequest(name="rs", hook="blocks.0.hook_resid_post", d_sae=32, k=4, n_tokens=4096,
                           eval_tokens=512, dashboard_tokens=1024, label_tokens=512)  # fmt: skip
    sweep = sw.SweepRequest(base, {"k": [2, 4]})
    phases: list[tuple[str, int, int]] = []
    before = runner.items_done
    outs = sw.run_sweep(tiny_handle, sweep, tmp_path / "ray", lambda p, d, t: phases.append((p, d, t)), pool=runner)
    assert [p.name for p in outs] == ["rs-k2", "rs-k4"]
    assert runner.items_done - before >= 3, "harvest shards and both runs went to the actors"
    assert ("runs on Ray (2 workers)", 2, 2) in phases
    assert not (tmp_path / "ray" / ".runs" / "rs-sweep").exists(), "the shared harvest is deleted at the end"
    assert sw.check_sweep(tmp_path / "ray", sweep) == {"rs-k2": "done", "rs-k4": "done"}
    local = sw.run_sweep(tiny_handle, sweep, tmp_path / "one", lambda p, d, t: None)
    for a, b in zip(outs, local, strict=True):
        assert (a / "eval.json").exists() and (a / "dashboards" / "labels.json").exists()
        w_ray, w_one = load_sae(a).sae.W_dec, load_sae(b).sae.W_dec
        assert torch.allclose(w_ray, w_one, atol=1e-4), f"{a.name}: same seed, same data, same SAE"
    assert sw.run_sweep(tiny_handle, sweep, tmp_path / "ray", lambda p, d, t: None, pool=runner) == outs  # resumes


def test_train_page__ray_choice_trains_on_actors_and_frees_them(tiny_handle, runner, tmp_path, monkeypatch):
    """The Train page's Ray toggle: the run's harvest and dashboards are computed by a pool of its own, shut down
    when the run ends (the local cluster's 2 CPUs are then free again)."""
    from saelab.jobs import default_queue
    from tests.fixtures_ui import build_feature_root, open_page, tiny_app

    runner.shutdown()  # the module's actors hold the local cluster's 2 CPUs
    root = tmp_path / "features"
    build_feature_root(root, tiny_handle.tokenizer)
    at = open_page(tiny_app(monkeypatch, root), "pages/train.py")
    for key, value in (("train_d_sae", 32), ("train_tokens", 4096), ("train_eval", 512), ("train_dash", 1024),
                       ("train_label", 512)):  # fmt: skip
        at.number_input(key=key).set_value(value)
    at.text_input(key="train_name").set_value("onray")
    at.toggle(key="train_ray").set_value(True).run()
    assert not at.exception, at.exception
    assert at.text_input(key="train_ray_address").value == "local"
    at.number_input(key="train_ray_workers").set_value(2)
    at.button(key="train_start").click().run()
    assert not at.exception, at.exception
    job = default_queue().get(at.session_state["train_job_id"])
    assert job is not None and job.wait(300) and job.state == "done", job and job.error_message
    assert (root / "onray" / "eval.json").exists() and (root / "onray" / "dashboards" / "meta.json").exists()
    deadline = time.monotonic() + 30  # ray.kill returns before the actor's CPU is given back
    while ray.available_resources().get("CPU", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ray.available_resources().get("CPU", 0) == 2, "the run's actors were shut down"


def test_without_ray_flag__nothing_imports_ray():
    """The CLI (every command's parser, `harvest --ray` parsed) and the distributed package import no Ray."""
    import subprocess
    import sys

    code = (
        "import sys, saelab.cli, saelab.distributed;"
        "saelab.cli.build_parser().parse_args(['harvest', '--ray']);"
        "print('ray' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "False", out.stderr
