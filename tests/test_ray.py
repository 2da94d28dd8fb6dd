"""Harvest on a local Ray cluster of 2 workers (issue 18): the same folder as one process, retries, resume."""

from __future__ import annotations

import json

import pytest

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
