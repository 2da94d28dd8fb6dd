"""Hardening found by the input-surface review (issue 14): each test fails without its fix."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from saelab.errors import BadInputError

# ---------------------------------------------------------------- trust model: paths and hosts


def test_user_path__expands_home_and_refuses_overlong_parts(monkeypatch, tmp_path):
    from saelab import trust

    monkeypatch.delenv(trust.ROOTS_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert trust.user_path("~/saes") == (tmp_path / "saes").resolve()
    with pytest.raises(BadInputError, match="longer than 255"):
        trust.user_path("/tmp/" + "x" * 300)
    with pytest.raises(BadInputError, match="empty"):
        trust.user_path("   ")
    with pytest.raises(BadInputError, match="NUL"):
        trust.user_path("/tmp/a\x00b")


def test_user_path__bounded_by_allowed_roots_and_by_network_mode(monkeypatch, tmp_path):
    from saelab import trust

    inside, outside = tmp_path / "saes" / "mine", tmp_path / "elsewhere"
    monkeypatch.setenv(trust.ROOTS_ENV, str(tmp_path / "saes"))
    assert trust.user_path(str(inside)) == inside.resolve()
    with pytest.raises(BadInputError, match="outside the folders"):
        trust.user_path(str(outside))
    with pytest.raises(BadInputError, match="outside the folders"):
        trust.user_path(str(tmp_path / "saes" / ".." / "elsewhere"))  # no escape by ..
    monkeypatch.delenv(trust.ROOTS_ENV)
    assert trust.user_path("/") == Path("/")  # local use: anything
    monkeypatch.setenv("SAELAB_FEATURES", str(tmp_path / "features"))
    trust.set_network_mode(True)
    try:
        with pytest.raises(BadInputError, match="outside the folders"):
            trust.user_path("/")
        assert trust.user_path(str(tmp_path / "features" / "default")).name == "default"
    finally:
        trust.set_network_mode(False)


# ---------------------------------------------------------------- circuits uploads cannot take the server down


def test_circuits_csv__long_prompts_are_refused_before_any_forward(tiny_handle):
    from saelab.circuits.tasks import MAX_PROMPT_TOKENS, pairs_from_csv, tokenize_task

    long = " ".join(["word"] * (MAX_PROMPT_TOKENS + 10))
    task = pairs_from_csv(f"clean,corrupted,correct,wrong\n{long} Mary,{long} John, Mary, John\na b,a c, x, y\n")
    with pytest.raises(BadInputError, match=f"limited to {MAX_PROMPT_TOKENS} tokens"):
        tokenize_task(task, tiny_handle.tokenizer, tiny_handle.cfg.d_vocab)
    huge = "w " * 20_000
    with pytest.raises(BadInputError, match="characters"):
        pairs_from_csv(f"clean,corrupted,correct,wrong\n{huge},{huge}, a, b\nx,y, a, b\n")
    with pytest.raises(BadInputError, match="MiB"):
        pairs_from_csv(b"clean,corrupted,correct,wrong\n" + b"a,b,c,d\n" * 1_000_000)


# ---------------------------------------------------------------- the shared MiniLM tokenizer


def test_embed_texts__tokenizer_runs_under_the_model_lock(monkeypatch):
    import numpy as np
    import torch

    from saelab import embeddings

    calls: list[bool] = []

    class Tok:
        def __call__(self, texts, **kw):
            calls.append(embeddings._LOCK.locked())
            n = len(texts)
            return {"input_ids": torch.ones(n, 3, dtype=torch.long), "attention_mask": torch.ones(n, 3)}

    class Model:
        def __call__(self, **enc):
            return type(
                "Out", (), {"last_hidden_state": torch.ones(enc["input_ids"].shape[0], 3, embeddings.EMBED_DIM)}
            )

    monkeypatch.setattr(embeddings, "_load", lambda: (Tok(), Model()))
    threads = [threading.Thread(target=embeddings.embed_texts, args=(["a", "bb", "ccc"] * 5,)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls and all(calls)
    assert np.allclose(np.linalg.norm(embeddings.embed_texts(["x"]), axis=1), 1.0)


# ---------------------------------------------------------------- make app binds loopback only


def test_make_app__binds_loopback_unless_told_otherwise():
    from saelab.trust import is_loopback_address

    text = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    default = next(line.split("?=")[1].strip() for line in text.splitlines() if line.startswith("ADDRESS ?="))
    assert is_loopback_address(default)
    assert "--server.address $(ADDRESS)" in text
    assert not is_loopback_address("0.0.0.0") and is_loopback_address("[::1]")


# ---------------------------------------------------------------- an SAE-folder hint never walks a whole disk


def test_missing_sae_hint__walk_is_bounded(tmp_path):
    from saelab.sae.catalog import list_saes
    from saelab.sae.files import load_sae
    from tests.fixtures_ui import build_tiny_sae

    deep = tmp_path / "a" / "b" / "c" / "d"
    build_tiny_sae(deep / "sae")
    assert list_saes(tmp_path) == [deep / "sae"]
    assert list_saes(tmp_path, max_depth=2) == []
    with pytest.raises(BadInputError) as err:
        load_sae(tmp_path)
    assert "inside it" not in str(err.value)  # the hint looked two levels down only
    assert list_saes(tmp_path, max_dirs=3) == []


# ---------------------------------------------------------------- one line for unexpected errors


def test_error_line__unexpected_errors_are_one_line_with_their_type():
    from saelab.errors import CorruptFileError
    from saelab.ui.errors import MAX_MESSAGE_CHARS, error_line

    assert error_line(ValueError("first\nsecond")) == "Unexpected ValueError: first"
    assert error_line(CorruptFileError("x.json is not valid JSON")) == "x.json is not valid JSON"
    assert len(error_line(RuntimeError("y" * 5000))) == MAX_MESSAGE_CHARS


# ---------------------------------------------------------------- uploaded prompts in circuit figures are escaped


def test_circuit_prompt_figure__hover_text_is_escaped():
    from types import SimpleNamespace

    from saelab.reports.circuits_figures import prompt_metrics

    rows = [{"clean": '<a href="javascript:alert(1)">x</a>', "clean_metric": 1.0, "corrupted_metric": 0.0}]
    fig = prompt_metrics(SimpleNamespace(check=SimpleNamespace(rows=lambda: rows)))
    text = fig.data[0].text[0]
    assert "<a" not in text and "&lt;a" in text


# ---------------------------------------------------------------- exports: whole folders, neutral CSV cells


def test_export__replaces_its_folder_whole_or_not_at_all(tmp_path):
    from saelab.reports import HtmlReport, csv_cell, write_export

    folder = tmp_path / "run"
    write_export(folder, data={"v": 1}, csv={"data": [{"text": '=HYPERLINK("http://x")', "n": -1}]})
    assert (folder / "data.csv").read_text().splitlines()[1].startswith("\"'=HYPERLINK")
    assert csv_cell("-2+3") == "'-2+3" and csv_cell(-2) == -2 and csv_cell("plain") == "plain"

    class Boom(HtmlReport):
        def write(self, path):
            raise OSError("disk full")

    with pytest.raises(OSError):
        write_export(folder, report=Boom("r"), data={"v": 2}, csv={"other": [{"a": 1}]})
    assert sorted(p.name for p in folder.iterdir()) == ["data.csv", "result.json"]  # the old export, untouched
    assert '"v": 1' in (folder / "result.json").read_text()
    assert not list(tmp_path.glob(".*.tmp"))

    mixed = tmp_path / "mine"
    mixed.mkdir()
    (mixed / "notes.txt").write_text("keep me")
    with pytest.raises(BadInputError, match="other files"):
        write_export(mixed, data={"v": 1})
    assert (mixed / "notes.txt").read_text() == "keep me"
