"""Every result saved as JSON reads back into its own type: to_dict → JSON text → from_dict → to_dict is the
identity, nested results come back as their dataclasses, and a wrong file is a clear SaelabError (never a
KeyError or TypeError). Results are built small and synthetic (no model), or by the real code on tiny data."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from saelab.circuits.evaluate import evaluate_scores, reference_mask
from saelab.circuits.run import CircuitConfig, CircuitResult, TaskCheck
from saelab.circuits.tasks import CircuitTask, PromptPair
from saelab.errors import BadInputError, CorruptFileError, SaelabError
from saelab.hypotheses.results import Hypothesis, MethodResult
from saelab.hypotheses.run import HypothesisResult
from saelab.probing.classify import CTuning, CVResult, cross_validate, tune_C
from saelab.probing.concept_detection import DetectionResult, TokenData, run_detection
from saelab.probing.report import ProbeReport
from saelab.probing.run import ProbeConfig, run_probe
from saelab.steering import Direction
from saelab.steering.detox import DetoxResult
from saelab.steering.eval_result import EvalResult
from saelab.steering.eval_stats import summarise
from saelab.steering.evaluate import EvalConfig
from saelab.steering.generate import GenerationConfig
from saelab.steering.interventions import Intervention
from saelab.steering.presets import Preset
from saelab.steering.ratings import Rating
from saelab.steering.steering_result import SteeringResult
from saelab.storage import jsonable


def _json(obj) -> dict:
    """The object as its JSON file would hold it (NaN as null, tuples as lists)."""
    return json.loads(json.dumps(jsonable(obj.to_dict()), allow_nan=False))


def _round_trip(obj):
    saved = _json(obj)
    back = type(obj).from_dict(saved)
    assert type(back) is type(obj)
    assert _json(back) == saved
    return back


def _xy(n=40, f=6, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    return rng.normal(size=(n, f)) + y[:, None], y


# ---------------------------------------------------------------- builders


def _cv() -> CVResult:
    X, y = _xy()
    return cross_validate("logistic-l2", X, y, folds=3)


def _tuning() -> CTuning:
    X, y = _xy()
    return tune_C("logistic-l2", X, y, grid=[0.1, 1.0], folds=3)


def _detection() -> DetectionResult:
    rng = np.random.default_rng(0)
    words = ["good film", "bad film", "fine plot", "awful plot"]
    texts = [f"{words[i % 4]} {i}" for i in range(24)]
    y = np.array([1 - (i % 4) % 2 for i in range(24)])  # good/fine = 1
    lat = rng.normal(size=(24, 5)) + y[:, None]
    train = TokenData(texts[:16], y[:16], latent_max=lat[:16])
    test = TokenData(texts[16:], y[16:], latent_max=lat[16:])
    return run_detection(["bow", "sae-a", "diffmean"], train, test, n_boot=50)  # diffmean fails: no tokens


def _probe_report(tmp_path) -> ProbeReport:
    rows = ["text,label"] + [f'"the film was {("great" if i % 2 else "awful")} {i}",{i % 2}' for i in range(48)]
    (tmp_path / "data.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    cfg = ProbeConfig(dataset=None, csv_path=str(tmp_path / "data.csv"), source="tfidf", tune_C=True,
                      C_grid=[0.1, 1.0], detection=["bow"], n_boot=50, sparse_ks=[1, 2], cv_folds=3,
                      learning_curve=False)  # fmt: skip
    return run_probe(cfg)


def _rating() -> Rating:
    return Rating(2, 1, 0, {"perplexity": 12.5, "concept_margin": float("nan")})


def _steering() -> SteeringResult:
    return SteeringResult(["Hi"], ["hello"], ["HELLO"], [[5, 6]], {"temperature": 0.0, "interventions": ["add x"]},
                          notes=["n"], unsteered_token_ids=[[5, 7]], prompt_token_ids=[[1, 2, 3]],
                          elapsed_s={"batched": 0.5})  # fmt: skip


def _preset() -> Preset:
    direction = Direction("d", "text", "blocks.1.hook_resid_post", torch.tensor([3.0, 4.0]), 2.0, {"latent": 1})
    return Preset("Hi", GenerationConfig(max_new_tokens=9, seed=3), [Intervention("clamp", direction, 1.5)],
                  model="tiny", notes=["a note"])  # fmt: skip


def _eval_result() -> EvalResult:
    cfg = EvalConfig(concepts=["spam"], methods=["diffmean"], factors=[1.0, 2.0], n_instructions=4, n_boot=200)
    items = [
        {"concept": "spam", "method": m, "factor": f, "instruction_id": i, "half": "select" if i < 2 else "report",
         "output": "out", "concept_rating": 2, "relevance": 1, "fluency": 2, "score": s, "raw": {}}
        for m, f, s in (("diffmean", 1.0, 1.5), ("diffmean", 2.0, 0.5), ("unsteered", None, 0.0)) for i in range(4)
    ]  # fmt: skip
    return EvalResult(config=cfg.to_dict(), judge={"proxy": True, "judge": "proxy"}, select_ids=[0, 1],
                      report_ids=[2, 3], items=items, directions={"spam": {"diffmean": {"max_act": 3.0}}},
                      notes=["PROXY"], formulas={"score": "h"}, elapsed_s=1.5,
                      **summarise(items, cfg, [0, 1], [2, 3]))  # fmt: skip


def _detox() -> DetoxResult:
    row = {"condition": "unsteered", "factor": 0.0, "toxicity": 0.4, "toxicity_ci_low": 0.3, "toxicity_ci_high": 0.5,
           "toxic_fraction": 0.25, "perplexity_median": 20.0, "mean_log_perplexity": 3.0, "empty_outputs": 0, "n": 4}  # fmt: skip
    return DetoxResult(config={"tiers": [0.5, 1.0, 2.0]}, latents=[{"latent": 3, "auroc": 0.7}], rows=[row],
                       classifier={"kind": "tfidf", "heldout_auroc": 0.9}, examples=[{"prompt": "p"}],
                       splits={"rank": 8}, notes=["proxy"], formulas={"toxicity": "p"}, elapsed_s=2.0)  # fmt: skip


def _hypothesis(rank: int, coef: float) -> Hypothesis:
    return Hypothesis(rank=rank, label=f"mentions any of: w{rank}", source="keywords", proxy=True, feature=rank,
                      feature_name=f"latent {rank}", selection_coef=0.5, terms=[f"w{rank}"], fidelity_f1=None,
                      coefficient=coef, std_err=0.1, p_value=0.01, significant=True, prevalence=0.3, separation=0.2,
                      ci_low=0.1, ci_high=0.3, n_true=12, examples=[{"text": "t", "evidence": ["w"], "target": 1}])  # fmt: skip


def _hypotheses() -> HypothesisResult:
    method = MethodResult(method="sae", hypotheses=[_hypothesis(1, 0.4), _hypothesis(2, float("nan"))],
                          regression="logit", r2=None, auc=0.8, threshold=0.05, n_significant=1, n_test=40,
                          selection={"method": "lasso"}, redundancy=0.1, n_distinct=2, notes=["n"])  # fmt: skip
    data = {"kind": "binary", "provenance": {"source": "test"}, "target": "y", "n_texts": 40, "split_sizes": [24, 8, 8],
            "split_seed": 0}  # fmt: skip
    sae = {"m": 8, "k": 2, "val_nmse": 0.1, "dead_fraction": 0.0}
    return HypothesisResult(config={"seed": 0}, data=data, embedding="minilm", sae=sae,
                            sae_method=method, baseline=None, interpretation="keywords (PROXY)", notes=[],
                            formulas={"separation": "E[y|h=1] − E[y|h=0]"}, seconds={"embed": 1.0})  # fmt: skip


def _circuits() -> CircuitResult:
    n_layers, n_heads = 2, 3
    task = CircuitTask("ioi", "names", "logit_diff", [PromptPair("a b", "a c", [" x", " y"], [" z"]),
                                                     PromptPair("d e", "d f", [" x"], [" y"])], {"source": "test"})  # fmt: skip
    rng = np.random.default_rng(0)
    ref, other = rng.normal(size=(n_layers, n_heads)), rng.normal(size=(n_layers, n_heads))
    mask = reference_mask(ref, 0.3)
    return CircuitResult(
        config=CircuitConfig(methods=["attribution-patching"]), model="tiny", task=task,
        check=TaskCheck(task, np.array([1.0, -0.5]), np.array([-1.0, float("nan")])), n_layers=n_layers,
        n_heads=n_heads, scores={"activation-patching": ref, "attribution-patching": other},
        seconds={"activation-patching": 1.0, "attribution-patching": 0.1}, reference_mask=mask,
        evaluation={"activation-patching": evaluate_scores(ref, mask), "attribution-patching": evaluate_scores(other, mask, natural=True)},
        repeats={"attribution-patching": [{"repeat": 0.0, "seconds": 0.1, "roc_auc": float("nan")}]},
        edges=rng.normal(size=(6, 6)), extra={"attribution-patching": {"note": "x"}}, notes=["few pairs"],
    )  # fmt: skip


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize(
    "build",
    [_cv, _tuning, _detection, _rating, _steering, _preset, _eval_result, _detox, _hypotheses, _circuits],
    ids=lambda b: b.__name__.strip("_"),
)
def test_from_dict__json_round_trip_is_the_identity(build):
    _round_trip(build())


def test_probe_report__round_trip_rebuilds_nested_results(tmp_path):
    report = _probe_report(tmp_path)
    back = _round_trip(report)
    assert isinstance(back.cv, CVResult) and back.cv == report.cv
    assert isinstance(back.tuning, CTuning) and back.tuning == report.tuning
    assert isinstance(back.detection, DetectionResult) and back.detection.auroc == report.detection.auroc
    assert back.headline == report.headline and back.weights == {}


def test_nested_types__come_back_as_dataclasses_with_nan_for_null():
    hyp = _round_trip(_hypotheses())
    assert isinstance(hyp.sae_method, MethodResult) and isinstance(hyp.sae_method.hypotheses[1], Hypothesis)
    assert math.isnan(hyp.sae_method.hypotheses[1].coefficient) and hyp.sae_method.r2 is None
    preset = _round_trip(_preset())
    assert isinstance(preset.generation, GenerationConfig) and isinstance(preset.interventions[0], Intervention)
    assert torch.allclose(preset.interventions[0].direction.vector, torch.tensor([0.6, 0.8]))
    circ = _round_trip(_circuits())
    assert circ.reference_mask.dtype == bool and circ.reference_mask.sum() == _circuits().reference_mask.sum()
    assert circ.task.pairs[0].correct == [" x", " y"] and math.isnan(circ.check.corrupted_metric[1])
    assert isinstance(circ.config, CircuitConfig) and circ.check.accuracy == 0.5
    det = _round_trip(_detection())
    assert isinstance(det.ci["bow"], tuple) and "diffmean" in det.errors


def test_saved_files__load_into_their_types_and_name_a_foreign_file(tmp_path):
    result = _eval_result()
    result.save(tmp_path / "eval.json")
    assert EvalResult.load(tmp_path / "eval.json") == result
    _detox().save(tmp_path / "detox.json")
    with pytest.raises(CorruptFileError, match=r"detox\.json.*EvalResult is missing"):
        EvalResult.load(tmp_path / "detox.json")
    assert DetoxResult.load(tmp_path / "detox.json") == _detox()


def test_exports__read_back_into_their_types(tmp_path):
    from saelab.reports import read_export
    from saelab.reports.circuits import export_result as export_circuits
    from saelab.reports.hypotheses import export_result as export_hypotheses

    circuits, hypotheses = _circuits(), _hypotheses()
    export_circuits(circuits, tmp_path / "circuits")
    export_hypotheses(hypotheses, tmp_path / "hypotheses")
    assert _json(read_export(tmp_path / "circuits", CircuitResult)) == _json(circuits)
    assert _json(read_export(tmp_path / "hypotheses" / "result.json", HypothesisResult)) == _json(hypotheses)
    with pytest.raises(CorruptFileError, match=r"result\.json.*not a circuit result"):
        read_export(tmp_path / "hypotheses", CircuitResult)
    with pytest.raises(BadInputError, match="No result.json"):
        read_export(tmp_path, CircuitResult)


# ---------------------------------------------------------------- bad input


def _without(d: dict, key: str) -> dict:
    return {k: v for k, v in d.items() if k != key}


BAD = [
    (CVResult, lambda: {**_json(_cv()), "folds": "3"}, CorruptFileError, r"CVResult\.folds must be an int"),
    (CTuning, lambda: _without(_json(_tuning()), "best_C"), CorruptFileError, r"missing \['best_C'\]"),
    (DetectionResult, lambda: {**_json(_detection()), "ci": {"bow": [0.1]}}, CorruptFileError, "must hold 2 values"),
    (ProbeReport, lambda: [1, 2], CorruptFileError, "must be a JSON object"),
    (Rating, lambda: {"concept": 3, "relevance": 1, "fluency": 1}, CorruptFileError, "0, 1 or 2"),
    (SteeringResult, lambda: {**_json(_steering()), "steered": "HELLO"}, CorruptFileError, r"steered must be a list"),
    (Preset, lambda: {**_json(_preset()), "version": 99}, BadInputError, "version 99 is not supported"),
    (EvalResult, lambda: {**_json(_eval_result()), "items": [1]}, CorruptFileError, r"items\[0\] must be a JSON"),
    (DetoxResult, lambda: _without(_json(_detox()), "rows"), CorruptFileError, r"missing \['rows'\]"),
    (HypothesisResult, lambda: {**_json(_hypotheses()), "sae_method": {"method": "sae"}}, CorruptFileError,
     r"sae_method: MethodResult is missing"),
    (CircuitResult, lambda: {**_json(_circuits()), "kind": "saelab.probe"}, CorruptFileError, "not a circuit result"),
    (CircuitResult, lambda: {**_json(_circuits()), "scores": {"x": [[1.0]]}}, CorruptFileError, "n_layers, n_heads"),
]  # fmt: skip


@pytest.mark.parametrize("cls, data, error, match", BAD, ids=lambda x: getattr(x, "__name__", None))
def test_from_dict__bad_input_is_a_clear_error(cls, data, error, match):
    with pytest.raises(error, match=match) as info:
        cls.from_dict(data())
    assert isinstance(info.value, SaelabError)
