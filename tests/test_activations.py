"""Harvesting activations to shards and reading them back: values, manifest, resume, batches."""

from __future__ import annotations

import itertools

import pytest
import torch

import saelab.activations.store as acts_mod
from saelab.activations import ActivationStore, HarvestConfig, harvest
from saelab.corpus import CorpusConfig, build_corpus
from saelab.errors import BadInputError, CorruptFileError
from saelab.hooks import active_hook_count, cache_activations
from saelab.storage import HARVEST_MANIFEST, read_json, write_json

HOOKS = ["blocks.0.hook_resid_post", "blocks.1.mlp.hook_post"]
SEQ = 32


@pytest.fixture(scope="module")
def corpus(tiny_handle, tmp_path_factory):
    """128 rows of 32 real tokens (4,096), cached in a private folder."""
    mp = pytest.MonkeyPatch()
    mp.setenv("SAELAB_CACHE", str(tmp_path_factory.mktemp("cache")))
    try:
        return build_corpus(tiny_handle.tokenizer, CorpusConfig(seq_len=SEQ, n_tokens=4096, seed=0))
    finally:
        mp.undo()


def _cfg(**kw) -> HarvestConfig:
    # 8-row batches, 4 batches per shard → 4 shards of 32 rows (≤ 31 stored tokens each).
    base = {"hooks": HOOKS, "batch_size": 8, "shard_tokens": 31 * 32}
    return HarvestConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def harvested(tiny_handle, corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("harvest") / "h"
    result = harvest(tiny_handle, corpus, _cfg(), out)
    return out, result


def _keep(corpus):
    keep = corpus.tokens != corpus.separator_id
    keep[:, 0] = False
    return keep


def _shard_bytes(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.glob("shard_*.safetensors"))}


def test_config__roundtrip_and_validation():
    cfg = _cfg(store_dtype="bfloat16")
    assert HarvestConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(BadInputError):
        HarvestConfig(hooks=[])
    with pytest.raises(BadInputError):
        HarvestConfig(hooks=HOOKS, compute_dtype="float16")


def test_harvest__fp32_values_equal_direct_cache_activations(tiny_handle, corpus, tmp_path):
    out = tmp_path / "fp32"
    harvest(tiny_handle, corpus, _cfg(compute_dtype="float32", store_dtype="float32"), out)
    store = ActivationStore(out)
    direct = cache_activations(tiny_handle, corpus.tokens, HOOKS)
    keep = _keep(corpus)
    for hook in HOOKS:
        torch.testing.assert_close(store.load(hook), direct[hook][keep], rtol=1e-5, atol=1e-5)
    index = store.load_index()
    assert torch.equal(index["token_ids"], corpus.tokens[keep])
    assert (index["token_ids"] != corpus.separator_id).all() and (index["pos_index"] > 0).all()
    assert torch.equal(corpus.tokens[index["seq_index"], index["pos_index"]], index["token_ids"])


def test_harvest__no_skipping_stores_every_position(tiny_handle, corpus, tmp_path):
    cfg = _cfg(compute_dtype="float32", store_dtype="float32", skip_first_position=False, skip_separator=False)
    harvest(tiny_handle, corpus, cfg, tmp_path / "all")
    store = ActivationStore(tmp_path / "all")
    assert store.n_tokens == corpus.n_tokens
    want = cache_activations(tiny_handle, corpus.tokens, HOOKS[:1])[HOOKS[0]]
    torch.testing.assert_close(store.load(HOOKS[0]), want.reshape(-1, 64), rtol=1e-5, atol=1e-5)


def test_harvest__bf16_fp16_values_close_to_fp32_and_shared_model_untouched(tiny_handle, corpus, harvested):
    out, result = harvested
    store = ActivationStore(out)
    direct = cache_activations(tiny_handle, corpus.tokens, HOOKS)
    for hook in HOOKS:
        want = direct[hook][_keep(corpus)]
        got = store.load(hook)
        assert got.dtype == torch.float32 and got.shape == want.shape
        rel = (got - want).norm(dim=-1) / want.norm(dim=-1).clamp_min(1e-6)
        assert rel.median() < 0.02, hook
    assert next(tiny_handle.model.parameters()).dtype == torch.float32
    assert tiny_handle.model.cfg.dtype == torch.float32
    assert active_hook_count(tiny_handle) == 0
    assert result.tokens_computed == result.n_tokens == int(_keep(corpus).sum())


def test_harvest__manifest_records_model_hooks_dtypes_and_shards(tiny_handle, corpus, harvested):
    out, result = harvested
    m = read_json(out / HARVEST_MANIFEST)
    assert m["complete"] and m["model"]["name"] == "tiny"
    assert m["hooks"] == HOOKS and m["d"] == {HOOKS[0]: 64, HOOKS[1]: 128}
    assert (m["compute_dtype"], m["store_dtype"]) == ("bfloat16", "float16")
    assert m["first_position_skipped"] is True
    assert m["corpus"]["fingerprint"] == corpus.fingerprint()
    assert m["corpus"]["config"] == corpus.config.to_dict()
    keep = _keep(corpus)
    assert [s["n_tokens"] for s in m["shards"]] == [int(keep[i : i + 32].sum()) for i in range(0, 128, 32)]
    assert m["total_tokens"] == int(keep.sum()) and (m["separator_skipped"], m["separator_id"]) == (True, 0)
    assert all(s["stats"][HOOKS[0]]["mean_norm"] > 0 for s in m["shards"])
    store = ActivationStore(out)
    assert store.n_tokens == int(keep.sum()) and store.hooks == HOOKS and store.d_in(HOOKS[1]) == 128


def test_harvest__resume_after_interrupt_matches_uninterrupted(tiny_handle, corpus, harvested, tmp_path):
    ref_dir, _ = harvested
    out = tmp_path / "resumed"
    batches = []

    def stop_after_six(done, total):
        batches.append(done)
        if len(batches) == 6:  # mid-way through the second shard
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        harvest(tiny_handle, corpus, _cfg(), out, progress=stop_after_six)
    partial = read_json(out / HARVEST_MANIFEST)
    assert not partial["complete"] and len(partial["shards"]) == 1
    with pytest.raises(BadInputError, match="unfinished"):
        ActivationStore(out)
    keep = _keep(corpus)
    assert ActivationStore(out, allow_partial=True).n_tokens == int(keep[:32].sum())

    seen = []
    result = harvest(tiny_handle, corpus, _cfg(), out, progress=lambda d, t: seen.append(d))
    assert result.shards_reused == 1 and result.tokens_computed == int(keep[32:].sum())
    assert seen[0] == int(keep[:40].sum()) and seen[-1] == int(keep.sum())
    assert _shard_bytes(out) == _shard_bytes(ref_dir)
    assert read_json(out / HARVEST_MANIFEST)["shards"] == read_json(ref_dir / HARVEST_MANIFEST)["shards"]


def test_harvest__finished_folder_is_reused_without_work(tiny_handle, corpus, harvested):
    out, _ = harvested
    again = harvest(tiny_handle, corpus, _cfg(), out, progress=lambda d, t: pytest.fail("recomputed"))
    assert again.tokens_computed == 0 and again.shards_reused == 4


def test_harvest__refuses_folder_of_a_different_config(tiny_handle, corpus, harvested, tmp_path):
    out, _ = harvested
    with pytest.raises(BadInputError, match="harvest_config"):
        harvest(tiny_handle, corpus, _cfg(batch_size=4), out)
    other = build_corpus(tiny_handle.tokenizer, CorpusConfig(seq_len=SEQ, n_tokens=4096, seed=1))
    with pytest.raises(BadInputError, match="corpus_fingerprint"):
        harvest(tiny_handle, other, _cfg(), out)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(BadInputError, match="not empty"):
        harvest(tiny_handle, corpus, _cfg(), tmp_path / "busy")


def test_store__corrupt_or_missing_files_raise_clear_errors(harvested, tmp_path):
    src, _ = harvested
    out = tmp_path / "copy"
    out.mkdir()
    for p in src.iterdir():
        (out / p.name).write_bytes(p.read_bytes())
    shard = out / "shard_00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:-100])  # truncated
    store = ActivationStore(out)
    with pytest.raises(CorruptFileError, match="shard_00002"):
        store.load(HOOKS[0])
    shard.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CorruptFileError, match="shard_00002"):
        store.load(HOOKS[0])
    shard.unlink()
    with pytest.raises(CorruptFileError, match="missing"):
        ActivationStore(out)
    (out / HARVEST_MANIFEST).write_text("{not json")
    with pytest.raises(CorruptFileError):
        ActivationStore(out)
    with pytest.raises(BadInputError, match="No harvest"):
        ActivationStore(tmp_path / "nowhere")
    write_json(out / HARVEST_MANIFEST, {"format": "saelab.harvest"})
    with pytest.raises(CorruptFileError, match="not a valid harvest manifest"):
        ActivationStore(out)


def _take(it, n_rows: int) -> torch.Tensor:
    rows, got = [], 0
    for batch in it:
        rows.append(batch)
        got += len(batch)
        if got >= n_rows:
            break
    return torch.cat(rows)[:n_rows]


def test_iter_batches__deterministic_and_each_epoch_is_a_permutation(harvested):
    store = ActivationStore(harvested[0])
    hook, n = HOOKS[0], store.n_tokens
    a = _take(store.iter_batches(hook, 37, seed=0, mix_shards=2), 2 * n)
    b = _take(store.iter_batches(hook, 37, seed=0, mix_shards=2), 2 * n)
    c = _take(store.iter_batches(hook, 37, seed=1, mix_shards=2), n)
    assert torch.equal(a, b) and not torch.equal(a[:n], c)
    assert a.dtype == torch.float32 and a.shape[1] == 64

    def sorted_rows(x):
        return sorted(map(tuple, x.tolist()))

    rows = sorted_rows(store.load(hook))
    for epoch in (a[:n], a[n:], c):
        assert sorted_rows(epoch) == rows
    assert not torch.equal(a[:n], a[n:])  # reshuffled each epoch


@pytest.mark.parametrize("where", [0, 1, 0.3, 0.5, 0.97, 1.0, 1.4, 2.5])
def test_iter_batches__start_sample_equals_skipping_that_many(harvested, where, monkeypatch):
    store = ActivationStore(harvested[0])
    hook, bs, n = HOOKS[1], 50, store.n_tokens
    start = where if isinstance(where, int) else int(where * n)
    fresh = _take(store.iter_batches(hook, bs, seed=3, mix_shards=2), start + 4 * bs)
    reads: list[str] = []
    real = acts_mod._read_tensor
    monkeypatch.setattr(acts_mod, "_read_tensor", lambda path, key: reads.append(path.name) or real(path, key))
    resumed = store.iter_batches(hook, bs, seed=3, start_sample=start, mix_shards=2)
    first = next(resumed)
    # Only the group of 2 shards holding `start` is read (and the next one if the batch runs over).
    epoch, offset = divmod(start, n)
    ends = torch.tensor([int(store._sizes[g].sum()) for g in store._groups(3, epoch, 2)]).cumsum(0)
    group = int((ends <= offset).sum())
    assert len(reads) == (2 if offset + bs <= ends[group] else 4)
    got = torch.cat([first, *itertools.islice(resumed, 3)])
    assert got.shape == (4 * bs, 128)
    assert torch.equal(got, fresh[start : start + 4 * bs])


@pytest.mark.slow
def test_harvest__real_model_bf16_close_to_fp32_and_skips_the_sinks(default_handle, tmp_path, monkeypatch):
    monkeypatch.setenv("SAELAB_CACHE", str(tmp_path / "cache"))
    corpus = build_corpus(default_handle.tokenizer, CorpusConfig(seq_len=128, n_tokens=16 * 128, seed=0))
    hook = "blocks.12.hook_resid_post"
    harvest(default_handle, corpus, HarvestConfig(hooks=[hook], batch_size=16), tmp_path / "h")
    got = ActivationStore(tmp_path / "h").load(hook)
    full = cache_activations(default_handle, corpus.tokens, [hook])[hook]
    keep = _keep(corpus)
    want = full[keep]
    assert torch.isfinite(got).all()
    rel = (got - want).norm(dim=-1) / want.norm(dim=-1)
    assert rel.median() < 0.03
    # Why the skipped positions are skipped: position 0 and separators are attention sinks.
    norms, median = full.norm(dim=-1), want.norm(dim=-1).median()
    assert (norms[:, 0] > 50 * median).all() and (norms[~keep] > 20 * median).all()
    assert norms.max() < 65504  # float16 holds them anyway
