"""The packed corpus: determinism, split disjointness, eval sets kept out, packing, cache."""

from __future__ import annotations

import pytest
import torch

from saelab.corpus import (
    DROPPED_DATASETS,
    EVAL_DATASETS,
    CorpusConfig,
    build_corpus,
    corpus_documents,
    list_datasets,
    load_dataset,
    separator_id,
    texts_to_tokens,
)
from saelab.errors import BadInputError

N = 4096


@pytest.fixture
def tok(tiny_handle, tmp_path, monkeypatch):
    """The default tokenizer, with the corpus cache in a fresh folder (loaded before the env changes)."""
    tokenizer = tiny_handle.tokenizer
    monkeypatch.setenv("SAELAB_CACHE", str(tmp_path))
    return tokenizer


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


def test_datasets__eval_and_dropped_names_exist():
    names = set(list_datasets())
    assert len(names) == 155
    assert set(EVAL_DATASETS) <= names
    assert set(DROPPED_DATASETS) <= names


def test_load_dataset__has_columns_and_unknown_name_suggests_close_ones():
    df = load_dataset("92_glue_sst2")
    assert {"prompt", "target"} <= set(df.columns) and len(df) > 1000
    assert len(load_dataset("glue_sst2")) == len(df)  # unique suffix resolves
    with pytest.raises(BadInputError, match="92_glue_sst2"):
        load_dataset("92_glue_sst")


def test_config__roundtrip_and_validation():
    cfg = CorpusConfig(seq_len=64, n_tokens=1000, seed=3, split="heldout")
    assert CorpusConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(BadInputError):
        CorpusConfig(split="test")
    with pytest.raises(BadInputError):
        CorpusConfig(seq_len=1)
    with pytest.raises(BadInputError):
        CorpusConfig.from_dict({"seq_len": 64, "nonsense": 1})


def test_build__same_seed_same_tokens_and_packing_shape(tok):
    cfg = CorpusConfig(seq_len=64, n_tokens=N, seed=0)
    a = build_corpus(tok, cfg)
    assert a.tokens.shape == (N // 64, 64) and a.tokens.dtype == torch.int64
    assert not a.from_cache
    b = build_corpus(tok, cfg)
    assert b.from_cache and torch.equal(a.tokens, b.tokens)
    assert b.n_documents == a.n_documents and b.datasets == a.datasets
    assert sum(a.datasets.values()) == a.n_documents
    # The separator closes each document, so there are as many separators as whole documents.
    sep = separator_id(tok)
    assert sep == 0
    assert int((a.tokens == sep).sum()) in (a.n_documents - 1, a.n_documents)


def test_build__different_seed_changes_order_and_rebuild_is_identical(tok, tmp_path, monkeypatch):
    a = build_corpus(tok, CorpusConfig(seq_len=64, n_tokens=N, seed=0))
    c = build_corpus(tok, CorpusConfig(seq_len=64, n_tokens=N, seed=1))
    assert not torch.equal(a.tokens, c.tokens)
    monkeypatch.setenv("SAELAB_CACHE", str(tmp_path / "other"))
    again = build_corpus(tok, CorpusConfig(seq_len=64, n_tokens=N, seed=0))
    assert not again.from_cache and torch.equal(a.tokens, again.tokens)


def test_build__smaller_corpus_is_prefix_of_larger(tok):
    small = build_corpus(tok, CorpusConfig(seq_len=64, n_tokens=N, seed=0))
    big = build_corpus(tok, CorpusConfig(seq_len=64, n_tokens=2 * N, seed=0))
    assert torch.equal(big.tokens.reshape(-1)[:N], small.tokens.reshape(-1))


def test_build__tokens_decode_to_documents_in_order(tok):
    cfg = CorpusConfig(seq_len=64, n_tokens=1024, seed=5)
    corpus = build_corpus(tok, cfg)
    first_doc = corpus_documents(cfg)[0][1]
    ids = corpus.tokens.reshape(-1).tolist()
    end = ids.index(separator_id(tok)) if separator_id(tok) in ids else len(ids)
    assert _norm(tok.decode(ids[:end])) == _norm(first_doc)[: len(_norm(tok.decode(ids[:end])))]


def test_split__heldout_texts_never_in_train_whatever_the_seed():
    train = {_norm(t) for _, t in corpus_documents(CorpusConfig(seed=0))}
    heldout = corpus_documents(CorpusConfig(seed=7, split="heldout"))
    assert heldout and not ({_norm(t) for _, t in heldout} & train)
    share = len(heldout) / (len(heldout) + len(train))
    assert 0.01 < share < 0.03  # the 2 % default


def test_split__eval_and_dropped_datasets_and_their_texts_are_excluded():
    docs = corpus_documents(CorpusConfig())
    used = {name for name, _ in docs}
    assert not used & set(EVAL_DATASETS) and not used & set(DROPPED_DATASETS)
    texts = {_norm(t) for _, t in docs}
    for name in EVAL_DATASETS:
        assert not texts & {_norm(t) for t in load_dataset(name)["prompt"].dropna().astype(str)}, name
    assert len(texts) == len(docs)  # deduplicated


def test_build__max_doc_tokens_truncates_documents(tok):
    corpus = build_corpus(tok, CorpusConfig(seq_len=64, n_tokens=N, seed=0, max_doc_tokens=20))
    flat = corpus.tokens.reshape(-1)
    seps = (flat == separator_id(tok)).nonzero().flatten()
    assert len(seps) >= N // 21 and (seps.diff() <= 21).all()


def test_build__too_many_tokens_asked_raises(tok):
    with pytest.raises(BadInputError, match="holds only"):
        build_corpus(tok, CorpusConfig(split="heldout", heldout_fraction=0.0001, n_tokens=10**9))


def test_build__progress_reaches_total(tok):
    calls: list[tuple[int, int]] = []
    build_corpus(tok, CorpusConfig(seq_len=32, n_tokens=512, seed=2), progress=lambda d, t: calls.append((d, t)))
    assert calls and calls[-1] == (512, 512)


def test_texts_to_tokens__packs_with_separator_and_pads_last_row(tok):
    rows = texts_to_tokens(tok, ["Hello world.", "A second text."], seq_len=5)
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in ["Hello world.", "A second text."]]
    flat = ids[0] + [0] + ids[1] + [0]
    assert rows.shape[1] == 5 and rows.reshape(-1)[: len(flat)].tolist() == flat
    assert (rows.reshape(-1)[len(flat) :] == 0).all()


def test_sink_mask__drops_position_zero_and_separators_only_when_asked():
    import torch

    from saelab.corpus import sink_mask

    tokens = torch.tensor([[0, 5, 6, 0, 7], [0, 0, 8, 9, 1]])
    assert sink_mask(tokens, 0).tolist() == [[False, True, True, False, True], [False, False, True, True, True]]
    assert sink_mask(tokens, None).tolist() == [[False, True, True, True, True], [False, True, True, True, True]]
    assert sink_mask(tokens, 0, first=False)[1].tolist() == [False, False, True, True, True]
