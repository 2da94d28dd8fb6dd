"""Steering backend on the tiny model: directions, interventions, generation invariants, threads, bad input."""

from __future__ import annotations

import math
import threading

import pytest
import torch

from saelab.activations.text_batches import text_hook_acts
from saelab.directions import DIRECTION_METHODS, compute_direction
from saelab.errors import BadInputError
from saelab.hooks import active_hook_count
from saelab.steering import (
    Direction,
    GenerationConfig,
    Intervention,
    generate,
    latent_activations,
    neuron_direction,
    sae_latent_direction,
    text_direction,
    validate,
)
from saelab.steering.interventions import Phase, build_hooks
from tests.fixtures_ui import HOOK, build_feature_root, build_tiny_sae

POS = ["I love football, the match was great and the goal was amazing.", "Soccer fans cheered the team."]
NEG = ["The recipe needs flour, sugar and two eggs.", "Bake the cake for forty minutes."]
PROMPTS = ["Tell me about your day.", "Write a short poem about the sea and the sky."]
FAST = GenerationConfig(max_new_tokens=8, temperature=1.0, seed=7)


@pytest.fixture(scope="module")
def sae_dir(tmp_path_factory, tiny_handle):
    return build_feature_root(tmp_path_factory.mktemp("steer_sae"), tiny_handle.tokenizer)


@pytest.fixture(scope="module")
def loaded(sae_dir, tiny_handle):
    from saelab.sae.files import load_sae

    return load_sae(sae_dir, handle=tiny_handle)


@pytest.fixture(scope="module")
def direction(tiny_handle):
    return text_direction(tiny_handle, "diffmean", POS, NEG, hook=HOOK)


# ---------------------------------------------------------------- directions


def _planted(seed: int = 0, d: int = 16):
    g = torch.Generator().manual_seed(seed)
    true = torch.zeros(d)
    true[3] = 1.0
    pos = torch.randn(200, d, generator=g) * 0.5 + true * 4 * torch.rand(200, 1, generator=g)
    neg = torch.randn(200, d, generator=g) * 0.5
    return pos, neg, true


@pytest.mark.parametrize("method", sorted(DIRECTION_METHODS))
def test_directions__unit_norm_oriented_and_recover_a_planted_direction(method):
    pos, neg, true = _planted()
    w = compute_direction(method, pos, neg, seed=0)
    assert w.shape == (16,)
    assert math.isclose(float(w.norm()), 1.0, rel_tol=1e-5)
    assert float((pos @ w).mean()) > float((neg @ w).mean())
    assert float(w @ true) > 0.8, f"{method} missed the planted direction: cos {float(w @ true):.3f}"


def test_directions__diffmean_is_the_normalised_mean_difference():
    pos, neg, _ = _planted(1)
    expect = pos.mean(0) - neg.mean(0)
    assert torch.allclose(compute_direction("diffmean", pos, neg), expect / expect.norm(), atol=1e-6)


def test_directions__bad_inputs_are_clear_errors():
    pos, neg, _ = _planted()
    with pytest.raises(BadInputError, match="Unknown direction method"):
        compute_direction("magic", pos, neg)
    with pytest.raises(BadInputError, match="no positive tokens"):
        compute_direction("diffmean", pos[:0], neg)
    with pytest.raises(BadInputError, match="width"):
        compute_direction("diffmean", pos, neg[:, :8])
    bad = pos.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(BadInputError, match="NaN"):
        compute_direction("pca", bad, neg)
    with pytest.raises(BadInputError, match="same"):
        compute_direction("diffmean", pos, pos)


def test_text_direction__token_acts_skip_position_zero_and_ignore_padding(tiny_handle):
    single = text_hook_acts(tiny_handle, [POS[0]], HOOK)[0]
    batched = text_hook_acts(tiny_handle, [POS[1], POS[0]], HOOK)[1]
    n_tokens = len(tiny_handle.tokenizer(POS[0], add_special_tokens=False)["input_ids"])
    assert single.shape == (n_tokens, 64)
    assert torch.allclose(single, batched, atol=1e-5)


def test_text_direction__max_act_is_the_largest_positive_score(tiny_handle, direction):
    pos = torch.cat(text_hook_acts(tiny_handle, POS, HOOK))
    assert direction.width == 64 and direction.hook == HOOK
    assert math.isclose(direction.max_act, float((pos @ direction.vector).max()), rel_tol=1e-5)
    assert direction.meta["method"] == "diffmean" and "formula" in direction.meta


def test_sae_latent_direction__decoder_row_and_max_act_convention(loaded, sae_dir):
    from saelab.features.store import DashboardStore

    d = sae_latent_direction(loaded, 5)
    row = loaded.sae.W_dec.detach()[5]
    assert torch.allclose(d.vector, row / row.norm(), atol=1e-6)
    dash = float(DashboardStore(sae_dir).latent(5).max_act)
    assert math.isclose(d.max_act, dash * float(row.norm()), rel_tol=1e-5)
    assert math.isclose(sae_latent_direction(loaded, 5, max_act=2.0).max_act, 2.0 * float(row.norm()), rel_tol=1e-5)
    with pytest.raises(BadInputError, match="latents 0 to 31"):
        sae_latent_direction(loaded, 32)


def test_sae_latent_direction__computed_when_no_dashboards(tmp_path, tiny_handle):
    from saelab.sae.files import load_sae

    bare = load_sae(build_tiny_sae(tmp_path / "bare"), handle=tiny_handle)
    d = sae_latent_direction(bare, 1, handle=tiny_handle, texts=POS + NEG)
    assert d.meta["max_act_origin"] == "computed over given texts" and d.max_act >= 0
    with pytest.raises(BadInputError, match="max_act"):
        sae_latent_direction(bare, 1)


def test_neuron_direction__one_hot_at_mlp_post(tiny_handle):
    d = neuron_direction(tiny_handle, 1, 7, texts=POS)
    assert d.hook == "blocks.1.mlp.hook_post" and d.width == 128 and float(d.vector[7]) == 1.0
    with pytest.raises(BadInputError, match="neurons are 0 to 127"):
        neuron_direction(tiny_handle, 1, 128, max_act=1.0)
    with pytest.raises(BadInputError, match="layers 0 to 1"):
        neuron_direction(tiny_handle, 5, 0, max_act=1.0)


def test_direction__dict_round_trip_and_zero_vector_refused(direction):
    back = Direction.from_dict(direction.to_dict())
    assert torch.allclose(back.vector, direction.vector) and back.max_act == direction.max_act
    with pytest.raises(BadInputError, match="zero"):
        Direction("z", "text", HOOK, torch.zeros(64), 1.0)


# ---------------------------------------------------------------- interventions as hooks


def test_interventions__ablate_clamp_and_add_do_what_they_say(direction):
    phase = Phase()
    h = torch.randn(2, 5, 64) * 3
    w = direction.vector
    add = build_hooks([Intervention("add", direction, 2.0)], phase)[0][1](h)
    assert torch.allclose(add - h, (2.0 * direction.max_act * w).expand_as(h), atol=1e-5)
    abl = build_hooks([Intervention("ablate", direction)], phase)[0][1](h)
    assert torch.allclose(abl @ w, torch.zeros(2, 5), atol=1e-4)
    clamp = build_hooks([Intervention("clamp", direction, 1.5)], phase)[0][1](h)
    assert torch.allclose(clamp @ w, torch.full((2, 5), 1.5 * direction.max_act), atol=1e-4)


def test_interventions__sae_clamp_sets_the_latent_and_keeps_the_error(loaded):
    d = sae_latent_direction(loaded, 5, max_act=3.0)
    hook = build_hooks([Intervention("clamp", d, 2.0)], Phase(), loaded)[0][1]
    x = torch.randn(3, 4, 64)
    out = hook(x)
    with torch.no_grad():
        z = loaded.sae.encode(x)[..., 5]
    row = loaded.sae.W_dec.detach()[5]
    # linear decoder: decode(z') − decode(z) = (α − z_j)·W_dec[j]; α = factor × max_act (decoder norm included)
    expect = (2.0 * d.max_act - z).unsqueeze(-1) * row
    assert torch.allclose(out - x, expect, atol=1e-4)


def test_interventions__positions_follow_the_phase(direction):
    phase = Phase()
    h = torch.zeros(1, 2, 64)
    prompt_only = build_hooks([Intervention("add", direction, 1.0, positions="prompt")], phase)[0][1]
    gen_only = build_hooks([Intervention("add", direction, 1.0, positions="generated")], phase)[0][1]
    assert prompt_only(h) is not None and gen_only(h) is None
    phase.generating = True
    assert prompt_only(h) is None and gen_only(h) is not None


@pytest.mark.parametrize(
    "factor, match",
    [(float("nan"), "not a finite"), (float("inf"), "not a finite"), (101.0, "absurd"), (-1e6, "absurd")],
)
def test_validate__bad_strengths_are_refused(tiny_handle, direction, factor, match):
    with pytest.raises(BadInputError, match=match):
        validate([Intervention("add", direction, factor)], tiny_handle)


def test_validate__wrong_width_unknown_hook_and_bad_latent(tiny_handle, direction, loaded):
    wide = Direction("wide", "text", HOOK, torch.ones(576), 1.0)
    with pytest.raises(BadInputError, match="width 576"):
        validate([Intervention("add", wide)], tiny_handle)
    nowhere = Direction("x", "text", "blocks.9.hook_resid_post", torch.ones(64), 1.0)
    with pytest.raises(BadInputError, match="Unknown hook point"):
        validate([Intervention("add", nowhere)], tiny_handle)
    sae_dir = sae_latent_direction(loaded, 2)
    with pytest.raises(BadInputError, match="latents 0 to 31"):
        validate([Intervention("clamp", sae_dir, 1.0, latent=99)], tiny_handle, loaded)
    with pytest.raises(BadInputError, match="needs the SAE"):
        validate([Intervention("clamp", sae_dir, 1.0)], tiny_handle)
    with pytest.raises(BadInputError, match="unknown kind"):
        validate([Intervention("push", direction)], tiny_handle)  # type: ignore[arg-type]


# ---------------------------------------------------------------- generation


def test_generate__factor_zero_reproduces_unsteered_and_strong_factor_changes_it(tiny_handle, direction):
    zero = generate(tiny_handle, PROMPTS, [Intervention("add", direction, 0.0)], FAST)
    assert zero.steered == zero.unsteered and zero.steered_token_ids == zero.unsteered_token_ids
    assert all(zero.steered_token_ids), "each prompt got tokens"
    strong = generate(tiny_handle, PROMPTS, [Intervention("add", direction, 50.0)], FAST, with_unsteered=False)
    assert strong.unsteered == ["", ""] and strong.steered != zero.unsteered
    assert active_hook_count(tiny_handle) == 0


def test_generate__seed_controls_sampling_and_empty_interventions_are_unsteered(tiny_handle):
    a = generate(tiny_handle, PROMPTS[0], [], FAST)
    b = generate(tiny_handle, PROMPTS[0], [], GenerationConfig(max_new_tokens=8, seed=8))
    assert a.steered == a.unsteered and "No intervention" in a.notes[0]
    assert a.unsteered != b.unsteered
    assert generate(tiny_handle, PROMPTS[0], [], FAST).unsteered == a.unsteered


def test_generate__generated_positions_leave_the_first_new_token(tiny_handle, direction):
    cfg = GenerationConfig(max_new_tokens=6, temperature=0.0)
    gen_only = generate(tiny_handle, PROMPTS, [Intervention("add", direction, 80.0, positions="generated")], cfg)
    every = generate(tiny_handle, PROMPTS, [Intervention("add", direction, 80.0)], cfg, with_unsteered=False)
    firsts = list(zip(gen_only.unsteered_token_ids, gen_only.steered_token_ids, every.steered_token_ids))
    assert all(g[0] == un[0] for un, g, _ in firsts), "the first new token is predicted from prompt positions only"
    assert any(e[0] != un[0] for un, _, e in firsts), "steering every position does change it"
    assert gen_only.steered != gen_only.unsteered and every.steered != gen_only.unsteered


def test_generate__several_interventions_and_system_prompt(tiny_handle, direction, loaded):
    ivs = [
        Intervention("add", direction, 3.0),
        Intervention("clamp", sae_latent_direction(loaded, 4), 2.0, positions="prompt"),
        Intervention("ablate", direction, positions="generated"),
    ]
    cfg = GenerationConfig(max_new_tokens=5, seed=1, system_prompt="Talk about football.")
    r = generate(tiny_handle, PROMPTS[0], ivs, cfg, loaded_sae=loaded, with_unsteered=False)
    assert len(r.config["interventions"]) == 3 and set(r.config["formulas"]) == {"add", "clamp", "ablate"}
    assert "Talk about football." in tiny_handle.tokenizer.decode(r.prompt_token_ids[0])


def test_generate__streams_tokens_that_end_as_the_result(tiny_handle, direction):
    seen: dict[tuple[int, str], str] = {}
    r = generate(
        tiny_handle,
        PROMPTS,
        [Intervention("add", direction, 5.0)],
        FAST,
        on_token=lambda i, which, text: seen.__setitem__((i, which), text),
    )
    for i in range(len(PROMPTS)):
        assert seen[(i, "unsteered")] == r.unsteered[i] and seen[(i, "steered")] == r.steered[i]


def test_generate__bad_input_is_a_clear_error(tiny_handle, direction):
    with pytest.raises(BadInputError, match="empty"):
        generate(tiny_handle, "   ", [], FAST)
    with pytest.raises(BadInputError, match="cap is 256"):
        GenerationConfig(max_new_tokens=5000)
    with pytest.raises(BadInputError, match="temperature"):
        GenerationConfig(temperature=float("nan"))
    with pytest.raises(BadInputError, match="Shorten"):
        generate(tiny_handle, "word " * 400, [], FAST)
    with pytest.raises(BadInputError, match="absurd"):
        generate(tiny_handle, "Hi", [Intervention("add", direction, 1e9)], FAST)
    assert active_hook_count(tiny_handle) == 0


def test_generate__two_threads_get_their_single_thread_outputs(tiny_handle, direction):
    jobs = {
        # greedy: the threads may share one batch, and only cross-talk (not last-bit batch effects) may move a token
        "up": ([Intervention("add", direction, 20.0)], GenerationConfig(max_new_tokens=10, temperature=0.0)),
        "down": ([Intervention("add", direction, -20.0)], GenerationConfig(max_new_tokens=10, temperature=0.0)),
    }
    alone = {
        k: generate(tiny_handle, PROMPTS, ivs, cfg, with_unsteered=False).steered for k, (ivs, cfg) in jobs.items()
    }
    assert alone["up"] != alone["down"]
    together: dict[str, list[str]] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def work(key: str) -> None:
        try:
            start.wait()
            ivs, cfg = jobs[key]
            together[key] = generate(tiny_handle, PROMPTS, ivs, cfg, with_unsteered=False).steered
        except BaseException as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(k,)) for k in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert together == alone
    assert active_hook_count(tiny_handle) == 0


def test_latent_activations__one_value_per_output_token_read_in_context(tiny_handle, loaded):
    r = generate(tiny_handle, PROMPTS[0], [], FAST)
    ids = r.steered_token_ids[0]
    vals = latent_activations(tiny_handle, loaded, ids, 3, prefix_ids=r.prompt_token_ids[0])
    assert len(vals) == len(ids) and all(v >= 0 for v in vals)
    from saelab.hooks import cache_activations

    full = torch.tensor([r.prompt_token_ids[0] + ids])
    act = cache_activations(tiny_handle, full, [HOOK])[HOOK][0, -len(ids) :]
    with torch.no_grad():
        expect = loaded.sae.encode(act)[:, 3]
    assert torch.allclose(torch.tensor(vals), expect, atol=1e-5)
    with pytest.raises(BadInputError, match="latents 0 to 31"):
        latent_activations(tiny_handle, loaded, ids, 40)


def test_cli__steer_prints_both_texts_and_refuses_bad_input(sae_dir, tmp_path, capsys):
    from saelab.cli import main

    preset = tmp_path / "preset.json"
    base = ["steer", "--model", "tiny", "--sae", str(sae_dir), "--prompt", "Hi there", "--max-new-tokens", "4"]
    assert main([*base, "--latent", "3", "--factor", "2", "--save-preset", str(preset)]) == 0
    out = capsys.readouterr().out
    assert "--- unsteered" in out and "--- steered" in out and "add SAE latent 3 × 2" in out
    assert main(["steer", "--model", "tiny", "--sae", str(sae_dir), "--preset", str(preset)]) == 0
    assert "add SAE latent 3 × 2" in capsys.readouterr().out
    assert main([*base, "--latent", "99"]) == 2
    assert "latents 0 to 31" in capsys.readouterr().err
    assert main([*base, "--latent", "3", "--factor", "nan"]) == 2
    assert "not a finite" in capsys.readouterr().err
    assert main([*base, "--latent", "3", "--factor", "1e6"]) == 2
    assert "|factor| ≤ 100" in capsys.readouterr().err
    assert main([*base[:-1], "5000", "--latent", "3"]) == 2
    assert "cap is 256" in capsys.readouterr().err


def test_presets__round_trip_and_refuse_bad_files(direction, tmp_path):
    from saelab.steering.presets import Preset, dumps_preset, load_preset, loads_preset, save_preset

    preset = Preset("Hi", GenerationConfig(max_new_tokens=9, seed=3), [Intervention("clamp", direction, 1.5)])
    back = load_preset(save_preset(preset, tmp_path / "p.json"))
    assert back.prompt == "Hi" and back.generation == preset.generation
    assert back.interventions[0].kind == "clamp" and back.interventions[0].factor == 1.5
    assert torch.allclose(back.interventions[0].direction.vector, direction.vector)
    assert loads_preset(dumps_preset(preset)).to_dict() == preset.to_dict()
    with pytest.raises(BadInputError, match="not valid JSON"):
        loads_preset(b"{not json")
    with pytest.raises(BadInputError, match="not a valid number"):
        loads_preset(dumps_preset(preset).replace('"factor": 1.5', '"factor": NaN'))
    with pytest.raises(BadInputError, match="not a steering preset"):
        loads_preset('{"format": "pickle"}')
    with pytest.raises(BadInputError, match="cap is 256"):
        loads_preset(dumps_preset(preset).replace('"max_new_tokens": 9', '"max_new_tokens": 9000'))
    with pytest.raises(BadInputError, match="UTF-8"):
        loads_preset(b"\xff\xfe")


def test_sweep__one_text_per_factor_and_prompt_with_mean_ratings(tiny_handle, direction):
    from saelab.steering.generate import sweep
    from saelab.steering.judges import Rating

    class LengthJudge:  # rates by output length, so the means are checkable
        def rate_many(self, instructions, outputs):
            return [Rating(2, 1 + (len(o) % 2), 2) for o in outputs]

        def describe(self):
            return {"judge": "length test judge"}

    cfg = GenerationConfig(max_new_tokens=4, seed=2)
    res = sweep(tiny_handle, PROMPTS, [Intervention("add", direction, 1.0)], [0.0, 30.0], cfg, judge=LengthJudge())
    assert len(res.texts) == 2 and all(len(row) == 2 for row in res.texts)
    assert res.texts[0] == res.unsteered, "factor 0 is the unsteered text"
    expect = [sum(1 + (len(t) % 2) for t in row) / 2 for row in res.texts]
    assert res.means["relevance"] == expect and res.judge["judge"] == "length test judge"
    with pytest.raises(BadInputError, match="ablate has no strength"):
        sweep(tiny_handle, PROMPTS, [Intervention("ablate", direction)], [1.0], cfg)
