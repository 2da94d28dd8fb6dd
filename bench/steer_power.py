"""A steering evaluation sized by a power analysis, with a calibrated PROXY concept judge (issue 17 item 2).

1. Pilot: prompting and unsteered outputs for every concept of the suite on instructions 0-11 (seed 0), with the
   concept judge calibrated on 24 unsteered outputs of separate instructions.
2. Power: from the pilot's paired differences prompting − unsteered per concept, the simulated power of the
   clustered test (t-test over per-concept mean differences, alpha 0.05) for each (concepts, report instructions)
   size (`saelab.steering.eval_power.power_table`); the smallest size with power ≥ 0.8 is chosen.
3. Main run at that size (fresh samples: seed 1), with SAE, DiffMean and prompting, factors chosen on the select
   half, reported on the report half, concept-clustered bootstrap CIs (`saelab steer-eval` protocol).

Writes bench/results/steer_power.json (pilot, power table, choice, main summary; `figures` and `ratios`) and the
main run's full result bench/results/steer_eval_powered.json (`EvalResult`, readable by the Steering page).

    python bench/steer_power.py [--quick]      # --quick: tiny sizes, to check the script (not committed)
"""

from __future__ import annotations

import argparse
import time

from common import RESULTS, write_results

SIZES = [(c, i) for c in (6, 8, 10, 12) for i in (3, 6, 9, 12, 18)]
TARGET_POWER = 0.8


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--methods", default="sae,diffmean,prompting")
    ap.add_argument("--factors", default="0.4,1,2,4")
    args = ap.parse_args()

    from saelab.defaults import default_sae_dir
    from saelab.models import load_model
    from saelab.sae.files import load_sae
    from saelab.steering.concepts import CONCEPTS, INSTRUCTIONS
    from saelab.steering.eval_power import paired_by_concept, pilot_effect, power_table
    from saelab.steering.evaluate import EvalConfig, run_eval

    handle = load_model()
    loaded = load_sae(default_sae_dir(), handle=handle)
    concepts = list(CONCEPTS)[: 3 if args.quick else len(CONCEPTS)]
    tokens = 4 if args.quick else args.max_new_tokens
    t0 = time.perf_counter()
    pilot_cfg = EvalConfig(concepts=concepts, methods=["prompting"], factors=[], n_instructions=4 if args.quick else 12,
                           max_new_tokens=tokens, seed=0, n_calibration=24, n_boot=2000)  # fmt: skip
    pilot = run_eval(handle, loaded, pilot_cfg, progress=lambda d, t: print(f"pilot {d}/{t}", flush=True))
    pilot_s = time.perf_counter() - t0
    diffs = paired_by_concept(pilot.items, "prompting", "unsteered")
    effect = pilot_effect(diffs)
    sizes = [(c, i) for c, i in SIZES if c <= len(concepts) and 2 * i <= len(INSTRUCTIONS)]
    sizes = sizes if not args.quick else [(len(concepts), 2), (len(concepts), 3)]
    table = power_table(diffs, sizes, n_sim=400 if args.quick else 4000, seed=0)
    ok = [r for r in table if r["power"] >= TARGET_POWER]
    choice = min(ok, key=lambda r: (r["items"], r["concepts"])) if ok else max(table, key=lambda r: r["power"])
    print(f"pilot effect {effect}; chosen {choice}", flush=True)

    n_c, n_i = (len(concepts), 2) if args.quick else (choice["concepts"], choice["report_instructions"])
    main_cfg = EvalConfig(concepts=concepts[:n_c], methods=args.methods.split(","),
                          factors=[float(f) for f in args.factors.split(",")], n_instructions=2 * n_i,
                          max_new_tokens=tokens, seed=1, n_calibration=24, n_boot=2000)  # fmt: skip
    t1 = time.perf_counter()
    result = run_eval(handle, loaded, main_cfg, progress=lambda d, t: print(f"main {d}/{t}", flush=True))
    main_s = time.perf_counter() - t1
    result.notes.append(f"Sized by bench/steer_power.py: {n_c} concepts × {n_i} report instructions "
                        f"(simulated power {choice['power']:.2f} for prompting > unsteered); wall {main_s:.0f} s.")  # fmt: skip
    suffix = "_quick" if args.quick else ""
    result.save(RESULTS / f"steer_eval_powered{suffix}.json")

    summary = {r["method"]: r for r in result.summary}
    figures: dict = {
        "pilot_mean_diff_prompting_minus_unsteered": effect["mean_diff"],
        "pilot_sd_items": effect["sd_items"],
        "pilot_sd_concept_means": effect["sd_concept_means"],
        "chosen_concepts": n_c,
        "chosen_report_instructions": n_i,
        "chosen_power": choice["power"],
        "pilot_s": pilot_s,
        "main_s": main_s,
    }
    for m, r in summary.items():
        figures[f"{m}_score"], figures[f"{m}_ci_low"], figures[f"{m}_ci_high"] = r["score"], r["ci_low"], r["ci_high"]
    for p in result.paired:
        figures[f"p_cluster_{p['a']}_vs_{p['b']}"] = p.get("cluster_t_p")
    cal = result.judge.get("calibration") or {}
    if cal:
        figures["fpr_fixed_thresholds"] = cal["fpr_before"]["rate"]
        figures["fpr_calibrated"] = cal["fpr_after"]["rate"]
        figures["fpr_calibrated_ci_high"] = cal["fpr_after"]["ci"][1]
    ratios = {}
    if "prompting" in summary and "sae" in summary and summary["prompting"]["score"] > 0:
        ratios["sae_over_prompting_score"] = summary["sae"]["score"] / summary["prompting"]["score"]
    if "prompting" in summary and "diffmean" in summary and summary["prompting"]["score"] > 0:
        ratios["diffmean_over_prompting_score"] = summary["diffmean"]["score"] / summary["prompting"]["score"]
    write_results(
        "steer_power" + suffix,
        figures,
        ratios,
        notes=[
            "PROXY judges throughout (sentence-embedding concept and relevance, perplexity under the unsteered model);"
            " scores are not comparable with AxBench's LLM-judged ones.",
            "Power: simulated clustered t-test (per-concept mean differences, alpha 0.05, two-sided, effect in the "
            "pilot's direction), concepts and instructions resampled from the pilot; 4,000 simulations per size.",
            "The main run uses seed 1 (fresh samples), instructions 0..2I-1 split 50/50 by seed, calibration "
            "instructions disjoint from both halves.",
        ],
        config={
            "pilot": pilot_cfg.to_dict(),
            "main": main_cfg.to_dict(),
            "power_table": table,
            "pilot_calibration": pilot.judge.get("calibration"),
            "main_calibration": cal,
            "main_summary": result.summary,
            "main_paired": result.paired,
        },  # fmt: skip
    )


if __name__ == "__main__":
    main()
