"""Shared data plumbing: labelled text sets (CSV/built-in), HTML/JSON exports, sentence embeddings."""

from __future__ import annotations

import json
import re

import numpy as np
import plotly.graph_objects as go
import pytest

from saelab.errors import BadInputError
from saelab.reports import HtmlReport, write_export
from saelab.storage import jsonable, load_tensors
from saelab.textsets import csv_columns, from_builtin, from_csv, split


def _csv(rows: list[tuple[str, str]], header: str = "text,label") -> bytes:
    return (header + "\n" + "\n".join(f'"{t}",{y}' for t, y in rows) + "\n").encode()


def test_from_csv__binary_labels_become_ids_and_notes_say_what_was_dropped():
    data = _csv([("good film", "pos"), ("bad film", "neg"), ("", "pos"), ("good film", "pos"), ("fine", "pos")])
    ts = from_csv(data, text_col="text", target_col="label")
    assert ts.kind == "binary" and ts.classes == ["neg", "pos"]
    assert ts.texts == ["good film", "bad film", "fine"] and ts.target.tolist() == [1, 0, 1]
    assert any("empty" in n for n in ts.notes) and any("duplicate" in n for n in ts.notes)


@pytest.mark.parametrize(
    ("data", "kwargs", "message"),
    [
        (_csv([("a", "x"), ("b", "y")]), {"text_col": "txt", "target_col": "label"}, "No column 'txt'"),
        (_csv([("a", "x"), ("b", "x")]), {"text_col": "text", "target_col": "label"}, "Only one class"),
        (b"", {"text_col": "text", "target_col": "label"}, "empty"),
        (
            _csv([(f"t{i}", f"free text {i}") for i in range(80)]),
            {"text_col": "text", "target_col": "label"},
            "distinct values",
        ),
        (_csv([("a", "1"), ("b", "1")]), {"text_col": "text", "target_col": "label", "kind": "numeric"}, "constant"),
    ],
)
def test_from_csv__bad_input_gets_a_clear_message(data, kwargs, message):
    with pytest.raises(BadInputError, match=message):
        from_csv(data, **kwargs)


def test_from_csv__non_utf8_bytes_are_replaced_and_said():
    data = b'text,label\n"caf\xe9 ok",a\n"plain",b\n'
    ts = from_csv(data, text_col="text", target_col="label")
    assert "\ufffd" in ts.texts[0] and any("UTF-8" in n for n in ts.notes)
    assert csv_columns(data) == ["text", "label"]


def test_from_csv__numeric_target_and_sampling_note():
    rows = [(f"text {i}", str(i * 0.5)) for i in range(50)]
    ts = from_csv(_csv(rows), text_col="text", target_col="label", max_rows=20, seed=3)
    assert ts.kind == "numeric" and ts.target.dtype == np.float64 and len(ts) == 20
    assert any("Sampled 20 of 50" in n for n in ts.notes)
    again = from_csv(_csv(rows), text_col="text", target_col="label", max_rows=20, seed=3)
    assert again.texts == ts.texts  # the sample is reproducible from its seed


def test_split__disjoint_cover_and_stratified():
    ts = from_csv(_csv([(f"t{i}", "a" if i % 4 else "b") for i in range(100)]), text_col="text", target_col="label")
    parts = split(ts, seed=1)
    allidx = np.concatenate(list(parts.values()))
    assert sorted(allidx.tolist()) == list(range(len(ts)))
    for idx in parts.values():  # each split keeps the 3:1 class ratio
        assert abs(ts.target[idx].mean() - ts.target.mean()) < 0.06
    assert {k: v.tolist() for k, v in split(ts, seed=1).items()} == {k: v.tolist() for k, v in parts.items()}


def test_from_builtin__reads_a_real_sae_probes_set():
    ts = from_builtin("92_glue_sst2", max_rows=300, seed=0)
    assert ts.kind == "binary" and len(ts) == 300 and ts.provenance["dataset"] == "92_glue_sst2"


def test_html_report__escapes_user_text_and_embeds_plotly_once(tmp_path):
    rep = HtmlReport("Probe <b>report</b>")
    rep.text("<script>alert(1)</script>").table([{"text": "<img src=x onerror=alert(1)>", "score": 0.5}])
    rep.figure(go.Figure(go.Bar(x=[1], y=[2]))).figure(go.Figure(go.Bar(x=[2], y=[3])))
    out = write_export(
        tmp_path / "r",
        report=rep,
        data={"a": 1},
        tensors={"w": np.ones(3, dtype=np.float32)},
        csv={"rows": [{"x": 1, "y": "<b>"}]},
    )
    page = out["html"].read_text()
    assert "<script>alert" not in page and "&lt;script&gt;" in page and "<img src" not in page
    assert page.count("plotly.js v") == 1  # the library inline, once: opens offline
    assert not re.search(r"<script[^>]+src=", page)  # nothing fetched from a CDN
    assert json.loads(out["json"].read_text()) == {"a": 1}
    assert load_tensors(out["weights"])["w"].tolist() == [1.0, 1.0, 1.0]
    assert out["csv:rows"].read_text().splitlines() == ["x,y", "1,<b>"]
    assert not list((tmp_path / "r").glob(".*tmp"))  # no half-written files left


def test_embed_texts__unit_norm_and_meaningful():
    from saelab.embeddings import embed_texts

    e = embed_texts(["I love pizza", "Pizza is my favourite food", "The bond market fell sharply"])
    assert e.shape == (3, 384) and np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)
    assert e[0] @ e[1] > e[0] @ e[2] + 0.3
    with pytest.raises(BadInputError, match="empty"):
        embed_texts(["fine", "  "])


def test_jsonable__numpy_nan_and_arrays_become_strict_json():
    data = {1: (np.float32(0.5), float("nan"), np.int64(3)), "a": np.arange(3), "big": np.zeros((200, 100))}
    out = jsonable({**data, "obj": object, "ok": [None, True, "x", -float("inf")]}, max_array=1_000)
    assert out["1"] == [0.5, None, 3] and out["a"] == [0, 1, 2] and out["big"] == "array[200, 100]"
    assert out["obj"] == repr(object) and out["ok"] == [None, True, "x", None]
    json.dumps(out, allow_nan=False)  # strict JSON: no NaN, no numpy types
