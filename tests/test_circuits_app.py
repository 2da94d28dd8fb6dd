"""The Circuits page (AppTest through app.py) and the `saelab circuits` command, on the tiny model."""

from __future__ import annotations

import json

import pytest

from saelab.cli import main
from tests.fixtures_ui import open_page, tiny_app


@pytest.fixture
def app(feature_root, monkeypatch):
    return open_page(tiny_app(monkeypatch, feature_root, timeout=180), "pages/circuits.py")


def test_circuits_page__checks_the_task_runs_and_offers_exports(app):
    at = app
    assert any("accuracy" in m.label.lower() for m in at.metric)
    assert at.warning, "a random model fails IOI: the page must warn before running"
    at.number_input(key="circ_n").set_value(4)
    at.number_input(key="circ_repeats").set_value(1)
    at.number_input(key="circ_subset").set_value(2)
    at.number_input(key="circ_epochs").set_value(20)
    at.button(key="circ_run").click()
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert len(at.get("plotly_chart")) >= 4  # heatmaps, agreement scatter, circuit graph, prompt metrics
    assert len(at.dataframe) >= 2  # prompts, summary
    assert len(at.get("download_button")) == 3


def test_circuits_page__bad_upload_shows_a_clear_error(app):
    at = app
    at.radio(key="circ_source").set_value("Upload a CSV")
    at.run()
    assert not at.exception, at.exception
    assert any("CSV columns" in c.value for c in at.caption)


def test_cli__circuits_writes_json_and_html(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["circuits", "--model", "tiny", "--task", "greater-than", "--prompts", "4", "--repeats", "1",
            "--subset", "2", "--epochs", "20", "--force", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    data = json.loads((out / "result.json").read_text())
    assert data["task"]["name"] == "greater-than" and data["task"]["metric"] == "prob_diff"
    assert (out / "report.html").exists() and (out / "heads.csv").exists()
    assert "ROC-AUC" in capsys.readouterr().out


def test_cli__refuses_a_failed_task_without_force(tmp_path, capsys):
    assert main(["circuits", "--model", "tiny", "--prompts", "4", "--out", str(tmp_path / "x")]) == 2
    assert "--force" in capsys.readouterr().err
