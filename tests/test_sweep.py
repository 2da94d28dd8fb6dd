"""Sweeps (issue 16): a grid of training runs from one harvest, on the job queue, the Train page and the CLI."""

from __future__ import annotations

import json

import pytest

from saelab.errors import BadInputError
from saelab.features import sweep as sw
from saelab.features import train_job as tj
from saelab.jobs import JobQueue, default_queue
from tests.fixtures_ui import build_feature_root, open_page, tiny_app

TINY = {"d_sae": 32, "k": 4, "n_tokens": 4096, "eval_tokens": 512, "dashboard_tokens": 1024, "label_tokens": 512}
WAIT_S = 300


def _base(name: str = "sw", **kw) -> tj.TrainRequest:
    return tj.TrainRequest(name=name, hook="blocks.0.hook_resid_post", **{**TINY, **kw})


def test_sweep_request__grid_order_names_and_checks():
    sweep = sw.SweepRequest(_base(), {"d_sae": [64, 32], "k": [8, 4, 4]})
    runs = sweep.runs()
    assert [r.name for r in runs] == ["sw-k4-w32", "sw-k4-w64", "sw-k8-w32", "sw-k8-w64"]
    assert [(r.k, r.d_sae) for r in runs] == [(4, 32), (4, 64), (8, 32), (8, 64)]
    assert all(r.n_tokens == 4096 and r.hook == "blocks.0.hook_resid_post" for r in runs)  # one harvest feeds all
    again = sw.SweepRequest.from_dict(json.loads(json.dumps(sweep.to_dict())))
    assert again.key == sweep.key and [r.name for r in again.runs()] == [r.name for r in runs]
    with pytest.raises(BadInputError, match="at least one setting"):
        sw.SweepRequest(_base(), {})
    with pytest.raises(BadInputError, match="Cannot sweep"):
        sw.SweepRequest(_base(), {"seed": [0, 1]})
    with pytest.raises(BadInputError, match="sparsity coefficient, not k"):
        sw.SweepRequest(_base(architecture="jumprelu"), {"k": [4, 8]})
    with pytest.raises(BadInputError, match="cannot exceed the width"):
        sw.SweepRequest(_base(), {"k": [4, 64]})  # k 64 > d_sae 32: TrainRequest's own check
    with pytest.raises(BadInputError, match="at most 16"):
        sw.SweepRequest(_base(d_sae=512), {"k": list(range(1, 18))})
    with pytest.raises(BadInputError, match="whole numbers"):
        sw.SweepRequest(_base(), {"k": [4.5]})
    assert sw.parse_values("16, 32,64", "k") == [16, 32, 64] and sw.parse_values("1e-4,3e-4", "lr") == [1e-4, 3e-4]
    with pytest.raises(BadInputError, match="comma-separated"):
        sw.parse_values("16;32", "k")


def test_run_sweep__trains_each_run_from_one_harvest_and_resumes(tiny_handle, tmp_path, monkeypatch):
    import saelab.activations as acts

    shards: list[int] = []
    harvest = acts.harvest

    def counting(*args, **kwargs):
        result = harvest(*args, **kwargs)
        shards.append(result.tokens_computed)
        return result

    monkeypatch.setattr(acts, "harvest", counting)
    sweep = sw.SweepRequest(_base(), {"k": [2, 4]})
    phases: list[str] = []
    started: list[tuple[int, str]] = []
    outs = sw.run_sweep(tiny_handle, sweep, tmp_path, lambda p, d, t: phases.append(p),
                        lambda i, r, c: started.append((i, r.name)))  # fmt: skip
    assert [p.name for p in outs] == ["sw-k2", "sw-k4"] and started == [(0, "sw-k2"), (1, "sw-k4")]
    assert len(shards) == 1 and shards[0] > 0, f"the second run harvested again: {shards}"
    for out in outs:
        assert (out / "eval.json").exists() and (out / "dashboards" / "labels.json").exists()
        assert json.loads((out / "cfg.json").read_text())["k"] == int(out.name[-1])
    assert "run 1/2 (sw-k2) · harvest" in phases and "run 2/2 (sw-k4) · train" in phases
    assert not (tmp_path / ".runs" / "sw-sweep").exists(), "the shared harvest is deleted at the end"
    assert sw.check_sweep(tmp_path, sweep) == {"sw-k2": "done", "sw-k4": "done"}
    phases.clear()
    assert sw.run_sweep(tiny_handle, sweep, tmp_path, lambda p, d, t: phases.append(p)) == outs
    assert phases == [], "finished runs are skipped"
    bigger = sw.SweepRequest(_base(), {"k": [2, 4, 8]})
    assert sw.check_sweep(tmp_path, bigger) == {"sw-k2": "done", "sw-k4": "done", "sw-k8": "new"}
    (tmp_path / "sw-k16").mkdir()
    with pytest.raises(BadInputError, match="choose another output name"):
        sw.check_sweep(tmp_path, sw.SweepRequest(_base(), {"k": [16]}))


def test_sweep_job__publishes_status_and_each_runs_curves(tiny_handle, tmp_path):
    sweep = sw.SweepRequest(_base("job"), {"d_sae": [16, 32]})
    queue = JobQueue()
    try:
        job = queue.submit("train", sweep.key, "Sweep", sw.sweep_job(tiny_handle, sweep, tmp_path))
        assert job.wait(WAIT_S) and job.state == "done", job.error_message
    finally:
        queue.close()
    status = job.published["sweep"]
    assert status.runs == ["job-w16", "job-w32"] and status.finished == status.runs and status.current == 1
    curves = job.published["curves"]
    assert curves.d_sae == 32 and curves.snapshot()["step"][-1] == sweep.runs()[1].train_config().total_steps


def test_train_page__sweep_mode_runs_the_grid_and_shows_the_pareto_plot(tiny_handle, tmp_path, monkeypatch):
    root = tmp_path / "features"
    build_feature_root(root, tiny_handle.tokenizer)
    at = open_page(tiny_app(monkeypatch, root), "pages/train.py")
    at.number_input(key="train_d_sae").set_value(32)
    at.number_input(key="train_tokens").set_value(4096)
    at.number_input(key="train_eval").set_value(512)
    at.number_input(key="train_dash").set_value(1024)
    at.number_input(key="train_label").set_value(512)
    at.text_input(key="train_name").set_value("pg")
    at.toggle(key="train_sweep").set_value(True).run()
    assert not at.exception, at.exception
    at.multiselect(key="train_sweep_k").set_value([8, 16]).run()
    assert any("2 runs" in c.value and "`pg-k8-w32`" in c.value for c in at.caption), [c.value for c in at.caption]
    at.button(key="train_sweep_start").click().run()
    assert not at.exception, at.exception
    job = default_queue().get(at.session_state["train_job_id"])
    assert job is not None and job.wait(WAIT_S) and job.state == "done", job and job.error_message
    at.run()
    assert not at.exception, at.exception
    assert any("Sweep done: 2 SAEs" in s.value for s in at.success)
    assert len(at.dataframe) == 1 and list(at.dataframe[0].value["SAE"]) == ["pg-k8-w32", "pg-k16-w32"]
    assert (root / "pg-k16-w32" / "dashboards" / "meta.json").exists()


def test_cli__saelab_sweep_trains_and_prints_each_runs_metrics(tiny_handle, tmp_path, monkeypatch, capsys):
    from saelab import cli

    monkeypatch.setattr("saelab.models.load_model", lambda spec: tiny_handle)
    argv = ["sweep", "--model", "tiny", "--hook", "blocks.0.hook_resid_post", "--d-sae", "32", "--k", "2,4",
            "--tokens", "4096", "--eval-tokens", "512", "--dashboard-tokens", "1024", "--name", "c",
            "--root", str(tmp_path)]  # fmt: skip
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "Sweep of 2 runs" in out and "c-k2: new" in out
    assert "SAE: c-k2" in out and "SAE: c-k4" in out and "l0:" in out
    assert cli.main(argv) == 0
    assert "c-k2: done" in capsys.readouterr().out


def test_run_sweep__several_hooks_from_one_harvest_pass(tiny_handle, tmp_path, monkeypatch):
    import saelab.activations as acts

    passes: list[tuple[list[str], int]] = []
    harvest = acts.harvest

    def counting(handle, corpus, cfg, out, **kw):
        result = harvest(handle, corpus, cfg, out, **kw)
        passes.append((list(cfg.hooks), result.tokens_computed))
        return result

    monkeypatch.setattr(acts, "harvest", counting)
    hooks = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    sweep = sw.SweepRequest(_base("hk"), {"hook": hooks, "k": [2]})
    assert [r.name for r in sweep.runs()] == ["hk-l0-resid_post-k2", "hk-l1-resid_post-k2"]
    phases: list[str] = []
    outs = sw.run_sweep(tiny_handle, sweep, tmp_path, lambda p, d, t: phases.append(p))
    computed = [(h, n) for h, n in passes if n > 0]
    assert computed == [(hooks, computed[0][1])], f"one pass over both hooks, nothing harvested again: {passes}"
    assert "harvest (2 hooks, one pass)" in phases and not any(p.endswith("· harvest") for p in phases)
    assert [json.loads((o / "cfg.json").read_text())["metadata"]["hook_name"] for o in outs] == hooks
    assert sw.parse_values("blocks.0.hook_resid_post, blocks.1.hook_mlp_out", "hook")[1] == "blocks.1.hook_mlp_out"
