"""Steering evaluation: judges' invariants, the AxBench split and factor choice, bad input, CLI and detox on the
tiny model, and one end-to-end run on the real default model (slow)."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from saelab.errors import BadInputError
from saelab.steering.concepts import CONCEPTS, concept_data, get_instructions, split_instructions
from saelab.steering.evaluate import EvalConfig, paired_tests, summarise
from saelab.steering.judges import (
    EndpointJudge,
    ProxyJudge,
    ProxyThresholds,
    Rating,
    distinct_trigram_ratio,
    harmonic_score,
    parse_rating,
    three_level,
)

SPORTS = [
    "The striker scored twice as United beat City 3-1 in the league on Saturday.",
    "Federer reached the final after a straight-sets win over Nadal.",
    "The Yankees clinched the series with a walk-off home run in the ninth inning.",
]


@pytest.fixture(scope="module")
def tiny_sae(tmp_path_factory, tiny_handle):
    from tests.fixtures_ui import build_feature_root

    return build_feature_root(tmp_path_factory.mktemp("steer_eval_sae"), tiny_handle.tokenizer)


def test_rating__score_is_harmonic_mean_and_zero_if_any_rating_is_zero():
    for c, r, f in itertools.product(range(3), repeat=3):
        score = Rating(c, r, f).score
        if 0 in (c, r, f):
            assert score == 0.0
        else:
            assert math.isclose(score, 3 / (1 / c + 1 / r + 1 / f))
            assert min(c, r, f) <= score <= max(c, r, f)
    assert harmonic_score(2, 2, 2) == 2.0


def test_three_level__maps_every_value_to_0_1_2_monotonically():
    values = np.linspace(-1, 1, 101)
    levels = [three_level(v, -0.2, 0.3) for v in values]
    assert set(levels) == {0, 1, 2}
    assert all(a <= b for a, b in zip(levels, levels[1:]))
    assert three_level(float("nan"), 0, 1) == 0
    assert distinct_trigram_ratio("the the the the the the") < 0.5 < distinct_trigram_ratio("a b c d e f")


def test_thresholds__inconsistent_cut_points_are_refused():
    with pytest.raises(BadInputError, match="lo ≤ hi"):
        ProxyThresholds(concept_lo=0.5, concept_hi=0.1)
    with pytest.raises(BadInputError, match="ppl_hi"):
        ProxyThresholds(ppl_hi=500, ppl_lo=100)


def test_proxy_judge__ratings_in_0_1_2_and_concept_follows_the_examples(tiny_handle):
    judge = ProxyJudge(tiny_handle, SPORTS)
    outs = [
        "The goalkeeper saved a penalty and the team won the cup final.",
        "Stir the flour into the melted butter and bake for twenty minutes.",
        "",
    ]
    ratings = judge.rate_many(["Describe your weekend."] * 3, outs)
    for r in ratings:
        assert {r.concept, r.relevance, r.fluency} <= {0, 1, 2}
    assert ratings[0].raw["concept_margin"] > ratings[1].raw["concept_margin"]
    assert ratings[2].score == 0.0 and ratings[2].concept == 0  # empty output
    assert judge.describe()["proxy"] is True
    with pytest.raises(BadInputError, match="example"):
        ProxyJudge(tiny_handle, ["", "  "])


def test_endpoint_judge__unreachable_endpoint_falls_back_to_proxy_and_says_so(tiny_handle):
    from saelab.features.llm import LLMEndpoint

    proxy = ProxyJudge(tiny_handle, SPORTS)
    judge = EndpointJudge(LLMEndpoint("http://127.0.0.1:9/v1", "judge", timeout=2), "sports", proxy)
    ratings = judge.rate_many(["Describe your weekend."], ["We watched the football match."])
    assert judge.proxy is True and "fell back to the offline PROXY judge" in judge.note
    assert (
        ratings[0].raw["concept_margin"]
        == proxy.rate_many(["Describe your weekend."], ["We watched the football match."])[0].raw["concept_margin"]
    )
    assert judge.describe()["proxy"] is True and "fell back" in judge.describe()["note"]
    assert parse_rating("blah Rating: [[1]] then Rating: [[2]]") == 2 and parse_rating("no rating") is None


def test_concept_suite__ten_concepts_with_disjoint_train_and_judge_texts():
    assert len(CONCEPTS) >= 10
    data = concept_data("spam")
    keys = lambda xs: {" ".join(x.split()).casefold() for x in xs}  # noqa: E731
    assert not keys(data.train_pos) & keys(data.judge_examples)
    assert not keys(data.train_pos) & keys(data.train_neg)
    assert len(data.train_pos) == 72 and len(data.judge_examples) == 50


def test_split_instructions__halves_are_disjoint_and_cover_all_ids():
    ids = [i for i, _ in get_instructions(10)]
    select, report = split_instructions(ids, seed=3)
    assert not set(select) & set(report) and set(select) | set(report) == set(ids)
    assert len(select) == len(report) == 5
    with pytest.raises(BadInputError):
        get_instructions(1)


def _item(concept, method, factor, i, half, score):
    return {
        "concept": concept,
        "method": method,
        "factor": factor,
        "instruction_id": i,
        "half": half,
        "concept_rating": 2,
        "relevance": 2,
        "fluency": 2,
        "score": score,
    }


def test_summarise__factor_is_chosen_on_select_half_and_reported_on_the_other():
    cfg = EvalConfig(concepts=["spam"], methods=["diffmean"], factors=[1.0, 2.0], n_instructions=4, n_boot=200)
    select, report = [0, 1], [2, 3]
    items = []
    for f in (1.0, 2.0):
        for i in select:  # factor 1 wins on the select half ...
            items.append(_item("spam", "diffmean", f, i, "select", 1.5 if f == 1.0 else 0.5))
        for i in report:  # ... factor 2 would win on the report half: it must not be picked
            items.append(_item("spam", "diffmean", f, i, "report", 0.2 if f == 1.0 else 1.8))
    for i in select + report:
        items.append(_item("spam", "unsteered", None, i, "select" if i in select else "report", 0.0))
    out = summarise(items, cfg, select, report)
    assert out["chosen"]["spam"]["diffmean"] == 1.0
    row = next(r for r in out["summary"] if r["method"] == "diffmean")
    assert math.isclose(row["score"], 0.2) and row["n_items"] == len(report)
    assert row["ci_low"] <= row["score"] <= row["ci_high"]


def test_paired_tests__detect_a_consistent_difference():
    rng = np.random.default_rng(0)
    a = rng.uniform(1, 2, 40)
    res = paired_tests(a, a - 0.5)
    assert res["mean_diff"] == pytest.approx(0.5) and res["wilcoxon_p"] < 0.001 and res["ttest_p"] < 0.001
    assert paired_tests(a, a)["wilcoxon_p"] == 1.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"concepts": []}, "at least one concept"),
        ({"concepts": ["nope"]}, "Unknown concept"),
        ({"methods": []}, "at least one method"),
        ({"methods": ["magic"]}, "Unknown method"),
        ({"factors": [float("nan")]}, "finite"),
        ({"factors": [1e6]}, "100"),
        ({"max_new_tokens": 5000}, "max_new_tokens"),
        ({"n_instructions": 500}, "instructions"),
        (
            {
                "concepts": list(CONCEPTS),
                "max_new_tokens": 256,
                "n_instructions": 12,
                "methods": ["sae", "pca", "lat", "probe", "diffmean"],
                "factors": [float(x) for x in range(1, 80)],
            },
            "would generate",
        ),
    ],
)
def test_eval_config__bad_sizes_get_clear_messages(kwargs, match):
    with pytest.raises(BadInputError, match=match):
        EvalConfig(**kwargs)


def test_steer_eval_cli__runs_on_the_tiny_model_and_keeps_halves_apart(tmp_path, tiny_sae, capsys):
    from saelab.cli import main

    out = tmp_path / "eval.json"
    args = ["steer-eval", "--model", "tiny", "--sae", str(tiny_sae), "--concepts", "spam", "--methods",
            "sae,diffmean,prompting", "--factors", "0.5,2", "--instructions", "4", "--max-new-tokens", "3",
            "--n-train", "4", "--n-judge", "3", "--n-boot", "100", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    res = json.loads(out.read_text())
    assert not set(res["select_ids"]) & set(res["report_ids"])
    assert {r["method"] for r in res["summary"]} == {"unsteered", "sae", "diffmean", "prompting"}
    calib = [it for it in res["items"] if it["method"] == "calibration"]
    assert len(calib) == 24 and all(it["half"] == "calibration" and it["instruction_id"] >= 1000 for it in calib)
    for it in res["items"]:
        if it["method"] != "calibration":
            assert it["half"] == ("select" if it["instruction_id"] in res["select_ids"] else "report")
        assert {it["concept_rating"], it["relevance"], it["fluency"]} <= {0, 1, 2}
    cal = res["judge"]["calibration"]
    assert cal["fpr_calibration_set"]["rate"] <= 0.05 and cal["thresholds"]["spam"]["n"] == 24
    assert all(r["ci_low"] <= r["score"] <= r["ci_high"] and "ci_items_low" in r for r in res["summary"])
    assert all("cluster_t_p" in p and "cluster_ci" in p for p in res["paired"])
    assert res["judge"]["proxy"] is True and "PROXY" in capsys.readouterr().out
    assert main(["steer-eval", "--model", "tiny", "--concepts", "", "--out", str(out)]) == 2
    assert "at least one concept" in capsys.readouterr().err


def test_detox_cli__tiers_on_the_tiny_model(tmp_path, tiny_sae, capsys):
    from saelab.cli import main

    out = tmp_path / "detox.json"
    args = ["detox", "--model", "tiny", "--sae", str(tiny_sae), "--k", "2", "--n-rank", "20", "--prompts", "3",
            "--max-new-tokens", "3", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    res = json.loads(out.read_text())
    assert [r["condition"] for r in res["rows"]] == ["unsteered", "mild", "medium", "strong"]
    assert all(0 <= r["toxicity"] <= 1 for r in res["rows"]) and len(res["latents"]) == 2
    assert res["classifier"]["heldout_auroc"] > 0.7  # the classifier works on its own held-out split
    assert main(["detox", "--model", "tiny", "--sae", str(tiny_sae), "--tiers", "1,2", "--out", str(out)]) == 2
    assert "three tier" in capsys.readouterr().err


@pytest.mark.slow
def test_steer_eval__default_model_end_to_end(default_handle):
    from saelab.defaults import default_sae_dir
    from saelab.sae.files import load_sae
    from saelab.steering.evaluate import run_eval

    loaded = load_sae(default_sae_dir(), handle=default_handle)
    cfg = EvalConfig(
        concepts=["spam"], methods=["sae", "diffmean", "prompting"], factors=[2.0], n_instructions=2,
        max_new_tokens=8, n_train=8, n_judge=8, n_boot=100,
    )  # fmt: skip
    res = run_eval(default_handle, loaded, cfg)
    assert res.directions["spam"]["sae"]["train_auroc"] > 0.8  # a real spam latent exists
    assert res.directions["spam"]["diffmean"]["train_auroc"] > 0.8
    assert len(res.items) == 2 * 4 + 24 and all(0 <= it["score"] <= 2 for it in res.items)  # + 24 calibration
    assert all(math.isfinite(it["raw"]["perplexity"] or 1.0) for it in res.items)


def test_generate_rows__matches_core_generate_for_steered_and_unsteered_rows(tiny_handle):
    from saelab.steering.direction_sources import Direction
    from saelab.steering.evaluate import generate_rows
    from saelab.steering.generate import GenerationConfig, generate, prompt_ids
    from saelab.steering.interventions import Intervention

    hook = "blocks.1.hook_resid_post"
    d = Direction("test", "text", hook, np.random.default_rng(0).normal(size=tiny_handle.d_model), max_act=3.0)
    cfg = EvalConfig(concepts=["spam"], methods=["diffmean"], factors=[2.0], n_instructions=2, max_new_tokens=5)
    prompt = "Describe your ideal weekend."
    core = generate(tiny_handle, [prompt], [Intervention("add", d, 2.0)], GenerationConfig(max_new_tokens=5))
    ids = prompt_ids(tiny_handle, prompt, GenerationConfig(max_new_tokens=5))
    import torch

    deltas = torch.stack([torch.zeros(tiny_handle.d_model), d.vector * (2.0 * d.max_act)])
    rows = generate_rows(tiny_handle, [ids, ids], deltas, hook, cfg, [0, 0])
    assert rows == [core.unsteered[0], core.steered[0]]
    assert rows[0] != rows[1]  # the steering changed the text


def _rated(concept, method, i, margin, rel=2, flu=2, half="report"):
    from saelab.steering.judges import three_level
    from saelab.steering.ratings import harmonic_score

    c = three_level(margin, 0.03, 0.09)
    return {"concept": concept, "method": method, "factor": None, "instruction_id": i, "half": half,
            "concept_rating": c, "relevance": rel, "fluency": flu, "score": harmonic_score(c, rel, flu),
            "raw": {"concept_margin": margin}}  # fmt: skip


def test_calibrate__per_concept_thresholds_bring_unsteered_false_positives_to_the_target():
    """A concept whose null margins sit high (a cheerful answer near "happiness") gets a higher threshold, so
    unsteered text stops counting as on-concept; a concept with a low null keeps the fixed threshold."""
    from saelab.steering.eval_power import calibrate

    rng = np.random.default_rng(0)
    items = []
    for concept, null in (("happiness", 0.06), ("python_code", -0.12)):
        items += [_rated(concept, "calibration", 1000 + j, float(null + 0.03 * rng.standard_normal()), half="calibration")
                  for j in range(40)]  # fmt: skip
        items += [_rated(concept, "unsteered", i, float(null + 0.03 * rng.standard_normal())) for i in range(40)]
        items += [_rated(concept, "prompting", i, float(null + 0.25)) for i in range(40)]
    before = np.mean([r["concept_rating"] >= 1 for r in items if r["method"] == "unsteered"])
    out, rep = calibrate(items, 0.05, {"concept_lo": 0.03, "concept_hi": 0.09})
    assert before > 0.3, "the fixed thresholds call most cheerful unsteered text 'happiness'"
    assert rep["fpr_before"]["rate"] == pytest.approx(before)
    assert rep["fpr_calibration_set"]["rate"] <= 0.05
    assert rep["fpr_after"]["rate"] <= 0.15 and rep["fpr_after"]["ci"][0] <= rep["fpr_after"]["rate"]
    th = rep["thresholds"]
    assert th["happiness"]["lo"] > 0.08 and th["python_code"]["lo"] == 0.03
    assert th["happiness"]["hi"] == pytest.approx(th["happiness"]["lo"] + 0.06)
    prompting = [r for r in out if r["method"] == "prompting"]
    assert all(r["concept_rating"] >= 1 for r in prompting if r["concept"] == "happiness"), "a real signal stays"
    assert all(r["score"] == 0 for r in out if r["method"] == "unsteered" and r["concept_rating"] == 0)


def test_power_table__grows_with_size_and_is_low_without_an_effect():
    from saelab.steering.eval_power import power_table

    rng = np.random.default_rng(1)
    effect = {f"c{k}": rng.normal(0.3, 0.6, 12) for k in range(10)}
    none = {f"c{k}": rng.normal(0.0, 0.6, 12) for k in range(10)}
    sizes = [(4, 3), (10, 6), (12, 12)]
    p = [r["power"] for r in power_table(effect, sizes, n_sim=400)]
    assert p[0] < p[1] < p[2] and p[2] > 0.8
    assert all(r["power"] < 0.15 for r in power_table(none, sizes, n_sim=400)), "about alpha/2 without an effect"
