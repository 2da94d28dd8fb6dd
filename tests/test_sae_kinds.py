"""Bring your own SAE: tiny folders written by SAE-Lens itself (its classes and `save_model` /
`save_inference_model`, never SAE Lab's writer), one per architecture, hook type and normalisation, on the
tiny model. Each one loads through `saelab.sae.files.load_sae`, encodes and decodes exactly as SAE-Lens's own
`SAE.load_from_disk` does on the same activations, and its dashboards build; the steering hooks act correctly
at `attn.hook_z`; Explorer and Steering open on a JumpReLU SAE at `hook_z` and a TopK SAE at `hook_mlp_out`.

Parity tolerance: none (torch.equal) where SAE Lab runs SAE-Lens's object as loaded; ≤ 1e-5 relative where a
normalisation SAE-Lens leaves to the caller ("expected_average_only_in", "covariance_whitening") is folded into
the weights at load, since x·(W·s) and (x·s)·W round differently in float32.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sae_lens as sl
import torch
from sae_lens import SAE
from sae_lens.saes.sae import SAEMetadata
from sae_lens.training.activation_scaler import ActivationScaler, ActivationWhitening

from saelab.errors import BadInputError, IncompatibleSAEError
from saelab.features.dashboards import DashboardConfig, build_dashboards
from saelab.features.store import DashboardStore
from saelab.hooks import active_hook_count, cache_activations
from saelab.sae.evaluate import evaluate_sae
from saelab.sae.files import load_sae
from saelab.steering import Direction, GenerationConfig, Intervention, generate, sae_latent_direction, validate
from saelab.steering.interventions import Phase, build_hooks

RESID = "blocks.0.hook_resid_post"  # 64 wide on the tiny model (d_model 64)
MLP_OUT = "blocks.0.hook_mlp_out"  # 64
MLP_POST = "blocks.1.mlp.hook_post"  # 128 (d_mlp)
HOOK_Z = "blocks.0.attn.hook_z"  # [.., 4 heads, 16]: an SAE there reads 64
LN2 = "blocks.0.ln2.hook_normalized"  # a transcoder's input (64)
D_SAE = 32


def _meta(hook: str, **extra) -> SAEMetadata:
    return SAEMetadata(model_name="tiny", hook_name=hook, **extra)


def _perturbed(sae):
    """SAE-Lens's init moved off its (often symmetric or all-zero) start, so latents fire and differ."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in sae.named_parameters():
            if name == "threshold":
                param.copy_(torch.rand_like(param) * 0.02)
            elif name == "W_skip":
                param.copy_(0.01 * torch.randn_like(param))
            else:
                param.add_(0.05 * torch.randn_like(param))
    return sae


def _inference(cls, cfg_cls, hook: str, d_in: int = 64, **cfg):
    def build(folder: Path) -> None:
        torch.manual_seed(0)
        _perturbed(cls(cfg_cls(d_in=d_in, d_sae=D_SAE, metadata=_meta(hook), **cfg))).save_model(folder)

    return build


def _training(cls, cfg_cls, hook: str, d_in: int = 64, **cfg):
    """A training SAE written by SAE-Lens's `save_inference_model` (BatchTopK and Matryoshka become JumpReLU)."""

    def build(folder: Path) -> None:
        torch.manual_seed(0)
        sae = _perturbed(cls(cfg_cls(d_in=d_in, d_sae=D_SAE, metadata=_meta(hook), **cfg)))
        sae.topk_threshold = torch.tensor(0.02, dtype=torch.double)  # as if trained: the saved JumpReLU threshold
        sae.save_inference_model(folder)

    return build


def _transcoder(cls, cfg_cls):
    def build(folder: Path) -> None:
        torch.manual_seed(0)
        meta = _meta(LN2, hook_name_out=MLP_OUT)
        cfg = cfg_cls(d_in=64, d_sae=D_SAE, d_out=64, apply_b_dec_to_input=False, metadata=meta)
        _perturbed(cls(cfg)).save_model(folder)

    return build


def _scaled(norm: str, with_file: bool = True):
    """A standard SAE trained on transformed activations, with SAE-Lens's `activation_scaler.json` beside it."""

    def build(folder: Path) -> None:
        torch.manual_seed(0)
        sae = _perturbed(sl.StandardSAE(sl.StandardSAEConfig(d_in=64, d_sae=D_SAE, normalize_activations=norm,
                                                             metadata=_meta(RESID))))  # fmt: skip
        sae.save_model(folder)
        if not with_file:
            return
        if norm == "expected_average_only_in":
            ActivationScaler(scaling_factor=0.37).save(str(folder / "activation_scaler.json"))
        else:
            g = torch.Generator().manual_seed(2)
            m = torch.eye(64, dtype=torch.float64) + 0.05 * torch.randn(64, 64, generator=g, dtype=torch.float64)
            whitening = ActivationWhitening(mean=0.1 * torch.randn(64, generator=g, dtype=torch.float64),
                                            matrix=m, inverse_matrix=torch.linalg.inv(m))  # fmt: skip
            ActivationScaler(whitening=whitening).save(str(folder / "activation_scaler.json"))

    return build


KINDS = {
    # architectures, at the residual stream
    "standard": _inference(sl.StandardSAE, sl.StandardSAEConfig, RESID),
    "topk": _inference(sl.TopKSAE, sl.TopKSAEConfig, RESID, k=4, rescale_acts_by_decoder_norm=True),
    "batchtopk": _training(sl.BatchTopKTrainingSAE, sl.BatchTopKTrainingSAEConfig, RESID, k=4),
    "jumprelu": _inference(sl.JumpReLUSAE, sl.JumpReLUSAEConfig, RESID),
    "gated": _inference(sl.GatedSAE, sl.GatedSAEConfig, RESID),
    "matryoshka": _training(
        sl.MatryoshkaBatchTopKTrainingSAE,
        sl.MatryoshkaBatchTopKTrainingSAEConfig,
        RESID,
        k=4,
        matryoshka_widths=[8, 16, D_SAE],
    ),  # fmt: skip
    "abstopk": _inference(sl.AbsTopKSAE, sl.AbsTopKSAEConfig, RESID, k=4),
    "matching_pursuit": _inference(sl.MatchingPursuitSAE, sl.MatchingPursuitSAEConfig, RESID, max_iterations=4),
    # hook types
    "topk@mlp_out": _inference(sl.TopKSAE, sl.TopKSAEConfig, MLP_OUT, k=4),
    "standard@mlp_post": _inference(sl.StandardSAE, sl.StandardSAEConfig, MLP_POST, d_in=128),
    "jumprelu@hook_z": _inference(sl.JumpReLUSAE, sl.JumpReLUSAEConfig, HOOK_Z, reshape_activations="hook_z"),
    "standard@hook_z_flat": _inference(sl.StandardSAE, sl.StandardSAEConfig, HOOK_Z),  # saved without reshaping
    # transcoders: read ln2's output, predict the MLP's
    "transcoder": _transcoder(sl.Transcoder, sl.TranscoderConfig),
    "skip_transcoder": _transcoder(sl.SkipTranscoder, sl.SkipTranscoderConfig),
    "jumprelu_transcoder": _transcoder(sl.JumpReLUTranscoder, sl.JumpReLUTranscoderConfig),
    "jumprelu_skip_transcoder": _transcoder(sl.JumpReLUSkipTranscoder, sl.JumpReLUSkipTranscoderConfig),
    # normalisations: applied by SAE-Lens inside encode/decode, or folded at load from activation_scaler.json
    "constant_norm_rescale": _inference(
        sl.StandardSAE, sl.StandardSAEConfig, RESID, normalize_activations="constant_norm_rescale"
    ),  # fmt: skip
    "layer_norm": _inference(sl.StandardSAE, sl.StandardSAEConfig, RESID, normalize_activations="layer_norm"),
    "expected_average_only_in": _scaled("expected_average_only_in"),
    "covariance_whitening": _scaled("covariance_whitening"),
}
FOLDED = {"expected_average_only_in", "covariance_whitening"}


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("foreign_saes")
    out = {}
    for name, build in KINDS.items():
        build(root / name)
        out[name] = root / name
    return out


@pytest.fixture(scope="module")
def tokens() -> torch.Tensor:
    return torch.randint(100, 20000, (6, 24), generator=torch.Generator().manual_seed(0))


def _reference_encode_decode(ref, name: str, folder: Path, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """What SAE-Lens itself computes for activations `x` read at the SAE's hook."""
    if name == "standard@hook_z_flat":  # SAE-Lens hands such an SAE the heads flattened (as its evals do)
        f = ref.encode(x.flatten(-2))
        return f, ref.decode(f).reshape(x.shape)
    if name in FOLDED:  # SAE-Lens's evals: scale → encode → decode → unscale with the saved ActivationScaler
        scaler = ActivationScaler()
        scaler.load(folder / "activation_scaler.json")
        f = ref.encode(scaler.scale(x))
        return f, scaler.unscale(ref.decode(f))
    f = ref.encode(x)
    return f, ref.decode(f)


@pytest.mark.parametrize("name", list(KINDS))
def test_foreign_sae__loads_encodes_like_sae_lens_and_builds_dashboards(name, folders, tiny_handle, tokens):
    folder = folders[name]
    loaded = load_sae(folder, handle=tiny_handle)
    ref = SAE.load_from_disk(folder)  # SAE-Lens on its own
    assert loaded.meta is None and loaded.hook == ref.cfg.metadata.hook_name
    assert type(loaded.sae) is type(ref)
    x = cache_activations(tiny_handle, tokens, [loaded.hook])[loaded.hook][:, 1:]
    with torch.no_grad():
        f = loaded.sae.encode(x)
        x_hat = loaded.sae.decode(f)
        f_ref, x_hat_ref = _reference_encode_decode(ref, name, folder, x)
    assert f.shape == (*x.shape[:2], D_SAE)
    assert (f != 0).any(), "no latent fires: the parity below would say nothing"
    if name in FOLDED:
        # folding moves the factor into the weights: the same latents, to float32 rounding
        torch.testing.assert_close(f, f_ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(x_hat, x_hat_ref, rtol=1e-5, atol=1e-5)
        assert loaded.sae.cfg.normalize_activations == "none" and loaded.notes
    else:
        assert torch.equal(f, f_ref)
        assert torch.equal(x_hat, x_hat_ref)
    if name.endswith("transcoder"):
        assert loaded.is_transcoder and loaded.decoder_hook == MLP_OUT and x_hat.shape[-1] == 64
    else:
        assert x_hat.shape == x.shape  # hook_z: [.., heads, d_head] in and out

    cfg = DashboardConfig(n_top=4, ctx_left=3, ctx_right=2, n_int=2, n_per=2, n_bins=8, n_logits=5, n_neighbours=4,
                          projection="pca", n_clusters=3, batch_size=3, compute_dtype="float32")  # fmt: skip
    out = build_dashboards(tiny_handle, loaded, tokens, cfg)
    summary = DashboardStore(folder).summary()
    assert out == folder / "dashboards" and len(summary["density"]) == D_SAE
    assert float(summary["density"].sum()) > 0  # entries were collected (AbsTopK: its positive side only)
    assert active_hook_count(tiny_handle) == 0


def test_hook_z_saved_flat_is_read_with_its_heads(folders, tiny_handle):
    loaded = load_sae(folders["standard@hook_z_flat"], handle=tiny_handle)
    assert loaded.sae.cfg.reshape_activations == "hook_z"
    assert any("hook_z" in n for n in loaded.notes)


@pytest.mark.parametrize("name", ["jumprelu@hook_z", "topk@mlp_out", "constant_norm_rescale"])
def test_evaluate__non_residual_and_normalising_saes(name, folders, tiny_handle, tokens):
    loaded = load_sae(folders[name], handle=tiny_handle)
    r = evaluate_sae(tiny_handle, loaded.sae, loaded.hook, tokens, batch_size=4)
    assert r.d_in == 64 and r.n_tokens == 6 * 23
    assert r.l0 > 0 and r.mse is not None and r.ce_sae is not None
    assert active_hook_count(tiny_handle) == 0


def test_evaluate__transcoder_is_refused_with_a_reason(folders, tiny_handle, tokens):
    loaded = load_sae(folders["transcoder"], handle=tiny_handle)
    with pytest.raises(IncompatibleSAEError, match=r"decoder predicts blocks\.0\.hook_mlp_out"):
        evaluate_sae(tiny_handle, loaded.sae, loaded.hook, tokens)


# ---------------------------------------------------------------- refusals


def test_load__scaling_factor_missing_is_refused(tmp_path, tiny_handle):
    _scaled("expected_average_only_in", with_file=False)(tmp_path / "sae")
    with pytest.raises(IncompatibleSAEError, match="activation_scaler.json"):
        load_sae(tmp_path / "sae", handle=tiny_handle)


def test_load__single_head_sae_is_refused(tmp_path):
    cfg = sl.StandardSAEConfig(d_in=16, d_sae=8, metadata=_meta(HOOK_Z, hook_head_index=2))
    sl.StandardSAE(cfg).save_model(tmp_path / "head")
    with pytest.raises(IncompatibleSAEError, match="hook_head_index"):
        load_sae(tmp_path / "head")


def test_load__temporal_sae_is_refused(tmp_path):
    cfg = sl.TemporalSAEConfig(d_in=64, d_sae=64, n_heads=2, bottleneck_factor=4, metadata=_meta(RESID))
    sl.TemporalSAE(cfg).save_model(tmp_path / "temporal")
    with pytest.raises(IncompatibleSAEError, match="whole"):
        load_sae(tmp_path / "temporal")


def test_load__transcoder_output_hook_must_fit(tmp_path, tiny_handle):
    meta = _meta(LN2, hook_name_out=MLP_POST)  # 128 wide, the transcoder writes 64
    cfg = sl.TranscoderConfig(d_in=64, d_sae=8, d_out=64, apply_b_dec_to_input=False, metadata=meta)
    sl.Transcoder(cfg).save_model(tmp_path / "tc")
    with pytest.raises(IncompatibleSAEError, match="128"):
        load_sae(tmp_path / "tc", handle=tiny_handle)


# ---------------------------------------------------------------- steering at hook_z and with runtime norms


def _live_latent(loaded, tiny_handle, tokens) -> tuple[int, float]:
    x = cache_activations(tiny_handle, tokens, [loaded.hook])[loaded.hook][:, 1:]
    with torch.no_grad():
        f = loaded.sae.encode(x).flatten(0, -2)
    j = int(f.amax(0).argmax())
    return j, float(f[:, j].max())


def test_steering_hooks__hook_z_directions_span_all_heads(folders, tiny_handle, tokens):
    loaded = load_sae(folders["jumprelu@hook_z"], handle=tiny_handle)
    j, top = _live_latent(loaded, tiny_handle, tokens)
    d = sae_latent_direction(loaded, j, max_act=top)
    assert d.hook == HOOK_Z and d.width == 64
    act = cache_activations(tiny_handle, tokens[:2], [HOOK_Z])[HOOK_Z]  # [2, 24, 4, 16]
    flat = act.flatten(-2)
    w = d.vector
    phase = Phase()

    def run(iv: Intervention) -> torch.Tensor:
        validate([iv], tiny_handle, loaded)
        out = build_hooks([iv], phase, loaded)[0][1](act.clone())
        assert out.shape == act.shape
        return out.flatten(-2)

    add = run(Intervention("add", d, 2.0))
    torch.testing.assert_close(add, flat + 2.0 * d.max_act * w)
    ablated = run(Intervention("ablate", d))
    torch.testing.assert_close(ablated @ w, torch.zeros(ablated.shape[:-1]), atol=1e-5, rtol=0)
    clamp = run(Intervention("clamp", d, 1.5))
    ref = SAE.load_from_disk(folders["jumprelu@hook_z"])  # SAE-Lens, flat in and out
    with torch.no_grad():
        z = ref.encode(act)
        z_set = z.clone()
        z_set[..., j] = 1.5 * d.max_act
        expected = flat + (ref.decode(z_set) - ref.decode(z)).flatten(-2)
    torch.testing.assert_close(clamp, expected)
    per_head = Direction("one head", "text", HOOK_Z, torch.ones(16), 1.0)  # d_head wide: every head alike
    out = build_hooks([Intervention("add", per_head, 1.0)], phase)[0][1](act.clone())
    torch.testing.assert_close(out, act + per_head.vector)


def test_steering_hooks__clamp_with_runtime_normalisation(folders, tiny_handle, tokens):
    """constant_norm_rescale keeps encode's norm on the SAE and drops it in decode: two decodes need two encodes."""
    loaded = load_sae(folders["constant_norm_rescale"], handle=tiny_handle)
    j, top = _live_latent(loaded, tiny_handle, tokens)
    d = sae_latent_direction(loaded, j, max_act=top)
    act = cache_activations(tiny_handle, tokens[:2], [RESID])[RESID]
    out = build_hooks([Intervention("clamp", d, 2.0)], Phase(), loaded)[0][1](act.clone())
    sae = loaded.sae
    with torch.no_grad():
        z = sae.encode(act)
        coeff = (64**0.5) / act.norm(dim=-1, keepdim=True)  # SAE-Lens's constant_norm_rescale factor
        delta = (2.0 * d.max_act - z[..., j : j + 1]) * sae.W_dec[j] / coeff
    torch.testing.assert_close(out, act + delta, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["jumprelu@hook_z", "constant_norm_rescale"])
def test_generate__steers_with_every_kind_at_hook_z_and_with_norms(name, folders, tiny_handle, tokens):
    loaded = load_sae(folders[name], handle=tiny_handle)
    j, top = _live_latent(loaded, tiny_handle, tokens)
    d = sae_latent_direction(loaded, j, max_act=top)
    cfg = GenerationConfig(max_new_tokens=4, temperature=0.0, seed=0)
    for iv in (Intervention("add", d, 8.0), Intervention("clamp", d, 8.0), Intervention("ablate", d)):
        result = generate(tiny_handle, ["Tell me about the sea."], [iv], cfg, loaded_sae=loaded)
        assert len(result.steered) == 1
    assert active_hook_count(tiny_handle) == 0


def test_steering__transcoder_latents_steer_where_they_are_written_not_where_they_are_read(folders, tiny_handle):
    from saelab.steering.direction_sources import Direction

    loaded = load_sae(folders["transcoder"], handle=tiny_handle)
    d = sae_latent_direction(loaded, 0, max_act=1.0)
    assert d.hook == MLP_OUT == loaded.decoder_hook  # the decoder row lives at the output hook
    validate([Intervention("add", d, 1.0)], tiny_handle, loaded)
    with pytest.raises(BadInputError, match="transcoder|reads"):  # a clamp needs the encoder at the same hook
        validate([Intervention("clamp", d, 1.0)], tiny_handle, loaded)
    at_input = Direction(**{**d.__dict__, "hook": loaded.hook})
    with pytest.raises(BadInputError, match="transcoder"):
        validate([Intervention("add", at_input, 1.0)], tiny_handle, loaded)


# ---------------------------------------------------------------- the pages, on foreign SAEs


@pytest.mark.parametrize("name", ["jumprelu@hook_z", "topk@mlp_out"])
def test_pages__explorer_and_steering_open_on_a_foreign_sae(name, tmp_path, tiny_handle, tokens, monkeypatch):
    from tests.fixtures_ui import build_real_dashboards, open_page, page_html, tiny_app

    folder = tmp_path / "features" / "default"
    KINDS[name](folder)
    build_real_dashboards(folder, tiny_handle)
    latent = str(int(DashboardStore(folder).summary()["max_act"].argmax()))  # a latent that fired
    app = tiny_app(monkeypatch, tmp_path / "features")
    at = open_page(app, "pages/explorer.py", latent=latent)
    assert not at.error, [e.value for e in at.error]
    assert f"Latent {latent}" in page_html(at)
    at = open_page(tiny_app(monkeypatch, tmp_path / "features"), "pages/steering.py", latent=latent)
    assert not at.error, [e.value for e in at.error]
    generate_button = next(w for w in at.button if w.key == "steer_generate")
    next(w for w in at.number_input if w.key == "steer_max_new_tokens").set_value(4)
    generate_button.click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert any(f"add SAE latent {latent}" in c.value for c in at.caption)


def test_steering_eval__runs_on_a_hook_z_sae(folders, tiny_handle):
    """The AxBench protocol at attn.hook_z: directions and deltas are n_heads · d_head wide (heads concatenated)."""
    from saelab.steering.evaluate import EvalConfig, run_eval

    loaded = load_sae(folders["jumprelu@hook_z"], handle=tiny_handle)
    cfg = EvalConfig(concepts=["spam"], methods=["sae", "diffmean"], factors=[1.0], n_instructions=2,
                     max_new_tokens=4, n_train=4, n_judge=4, n_boot=100)  # fmt: skip
    res = run_eval(tiny_handle, loaded, cfg)
    assert set(res.directions["spam"]) >= {"sae", "diffmean"}
    rated = [it for it in res.items if it["method"] != "calibration"]  # + 24 calibration outputs of the judge
    assert len(rated) == 2 * 3 and all(0 <= it["score"] <= 2 for it in res.items)
