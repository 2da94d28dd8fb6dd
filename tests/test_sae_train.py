"""SAE training through SAE-Lens: every architecture, checkpoints, resume, config checks."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from sae_lens import SAE

from saelab.errors import BadInputError, CorruptFileError
from saelab.sae import TrainConfig, architecture_names, get_architecture, load_sae, train_sae
from saelab.storage import SAE_WEIGHTS_FILE, TRAIN_STATE_DIR, load_tensors, read_json

D_IN, D_SAE, BATCH = 32, 64, 64
META = {"model": "tiny", "hook": "blocks.0.hook_resid_post", "corpus": {"name": "synthetic"}}


def synthetic_data(d_in: int = D_IN, batch: int = BATCH, n_dirs: int = 96, seed: int = 0, calls: list | None = None):
    """A data factory: sparse non-negative mixes of fixed random directions, norms around 100.

    Batch i depends only on (seed, i), so `factory(start)` is exactly the stream minus `start` samples.
    """
    g = torch.Generator().manual_seed(seed)
    dirs = torch.nn.functional.normalize(torch.randn(n_dirs, d_in, generator=g), dim=-1)
    offset = 20 * torch.nn.functional.normalize(torch.randn(d_in, generator=g), dim=0)

    def factory(start_sample: int) -> Iterator[torch.Tensor]:
        assert start_sample % batch == 0
        if calls is not None:
            calls.append(start_sample)
        i = start_sample // batch
        while True:
            gb = torch.Generator().manual_seed(seed * 1_000_003 + i)
            mask = (torch.rand(batch, n_dirs, generator=gb) < 0.06).float()
            yield (torch.rand(batch, n_dirs, generator=gb) * mask) @ dirs * 150 + offset
            i += 1

    return factory


def small_config(**overrides) -> TrainConfig:
    settings = dict(
        d_sae=D_SAE, k=4, batch_size=BATCH, total_samples=BATCH * 12, checkpoint_every_steps=5,
        n_batches_for_norm_estimate=4, lr=1e-3,
    )  # fmt: skip
    settings.update(overrides)
    return TrainConfig(**settings)


def test_train_config__round_trips_through_dict():
    cfg = small_config(architecture="matryoshka_batchtopk", matryoshka_widths=[8, 16, 64])
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    "overrides, needle",
    [
        ({"k": 65}, "k (65)"),
        ({"total_samples": 10}, "less than one batch"),
        ({"lr": 0.0}, "lr"),
        ({"batch_size": 0}, "batch_size"),
        ({"normalize_activations": "layer_norm"}, "normalize_activations"),
        ({"matryoshka_widths": [16, 8]}, "matryoshka_widths"),
        ({"lr_warmup_steps": 10, "lr_decay_steps": 10}, "leave no room"),
    ],
)
def test_train_config__rejects_bad_values(overrides, needle):
    with pytest.raises(BadInputError, match=None) as err:
        small_config(**overrides)
    assert needle in str(err.value)


def test_train_config__unknown_architecture_lists_names():
    with pytest.raises(BadInputError) as err:
        small_config(architecture="sparsemax")
    for name in architecture_names():
        assert name in str(err.value)
    with pytest.raises(BadInputError):
        get_architecture("sparsemax")


def test_train_config__unknown_key_in_dict_is_refused():
    with pytest.raises(BadInputError, match="learning_rate"):
        TrainConfig.from_dict({"learning_rate": 1e-3})


@pytest.mark.parametrize("arch", architecture_names())
def test_train__every_architecture_trains_saves_and_loads(arch, tmp_path):
    cfg = small_config(architecture=arch, total_samples=BATCH * 6, sparsity_coefficient=0.1)
    seen = []
    result = train_sae(cfg, synthetic_data(), D_IN, tmp_path / arch, META, progress=lambda d, t, m: seen.append((d, t)))

    assert seen[0] == (0, 6) and seen[-1] == (6, 6)
    assert (result.steps, result.samples) == (6, 6 * BATCH)
    assert 0 < result.norm_scaling_factor < 1  # norms ~100 are scaled down to ~sqrt(32)
    assert {"l0", "dead_fraction", "loss", "explained_variance"} <= result.metrics.keys()
    assert not (tmp_path / arch / TRAIN_STATE_DIR).exists()

    loaded = load_sae(tmp_path / arch)
    assert loaded.hook == META["hook"] and loaded.meta is not None
    assert loaded.meta.architecture == arch and loaded.meta.tokens_seen == 6 * BATCH
    assert loaded.meta.corpus == {"name": "synthetic"}
    assert loaded.sae.cfg.metadata.hook_name == META["hook"]
    assert loaded.sae.cfg.normalize_activations == "none"
    plain = SAE.load_from_disk(tmp_path / arch)  # SAE-Lens alone reads it too
    x = next(synthetic_data(seed=5)(0))
    out = loaded.sae(x)
    assert out.shape == x.shape and torch.isfinite(out).all()
    torch.testing.assert_close(plain(x), out)


@pytest.mark.parametrize("arch", ["topk", "standard"])
def test_train__loss_falls_on_repeated_steps(arch, tmp_path):
    batch = next(synthetic_data()(0))

    def same_batch(start_sample):
        while True:
            yield batch.clone()

    losses = []
    cfg = small_config(architecture=arch, total_samples=BATCH * 30, k=8, lr=3e-3, sparsity_coefficient=0.5)
    train_sae(cfg, same_batch, D_IN, tmp_path / "sae", META, progress=lambda d, t, m: m and losses.append(m["loss"]))
    assert len(losses) == 30
    assert losses[-1] < 0.7 * losses[0]


def _final_weights(folder) -> dict[str, torch.Tensor]:
    return load_tensors(folder / SAE_WEIGHTS_FILE)


@pytest.mark.parametrize("arch", architecture_names())
def test_train__resume_after_interrupt_matches_uninterrupted(arch, tmp_path):
    # Small windows and schedules so that every piece of trainer state matters after the resume:
    # dead-latent counters (aux loss), sparsity-window resets, LR warm-up + cosine, L0 warm-up.
    cfg = small_config(
        architecture=arch, total_samples=BATCH * 17, checkpoint_every_steps=5, dead_feature_window=3,
        feature_sampling_window=4, lr_schedule="cosineannealing", lr_warmup_steps=3, coefficient_warmup_steps=6,
        sparsity_coefficient=0.05,
    )  # fmt: skip
    straight = train_sae(cfg, synthetic_data(), D_IN, tmp_path / "straight", META, progress=lambda *a: None)

    def stop_at_12(done, total, metrics):
        if done == 12:
            raise KeyboardInterrupt

    out = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        train_sae(cfg, synthetic_data(), D_IN, out, META, progress=stop_at_12)
    state = read_json(out / TRAIN_STATE_DIR / "state.json")
    assert state["n_training_steps"] == 10 and state["n_training_samples"] == 10 * BATCH
    assert not (out / SAE_WEIGHTS_FILE).exists()

    calls: list[int] = []
    resumed = train_sae(cfg, synthetic_data(calls=calls), D_IN, out, META, progress=lambda *a: None)
    assert calls == [10 * BATCH]  # no second norm estimate, data resumed where the checkpoint was
    assert resumed.resumed_from_step == 10 and resumed.steps == straight.steps == 17
    assert resumed.norm_scaling_factor == straight.norm_scaling_factor
    a, b = _final_weights(tmp_path / "straight"), _final_weights(out)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-6, atol=1e-7, msg=name)
    assert resumed.metrics["l0"] == pytest.approx(straight.metrics["l0"], rel=1e-6)


def test_train__resume_with_other_settings_is_refused(tmp_path):
    cfg = small_config()

    def stop_at_6(done, total, metrics):
        if done == 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_sae(cfg, synthetic_data(), D_IN, tmp_path / "sae", META, progress=stop_at_6)
    with pytest.raises(BadInputError, match="lr"):
        train_sae(small_config(lr=5e-4), synthetic_data(), D_IN, tmp_path / "sae", META, progress=lambda *a: None)
    # resume=False starts over instead
    calls: list[int] = []
    result = train_sae(
        small_config(lr=5e-4),
        synthetic_data(calls=calls),
        D_IN,
        tmp_path / "sae",
        META,
        progress=lambda *a: None,
        resume=False,
    )
    assert result.resumed_from_step == 0 and calls == [0, 0]


def test_train__corrupt_checkpoint_is_reported_and_kept(tmp_path):
    def stop_at_6(done, total, metrics):
        if done == 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_sae(small_config(), synthetic_data(), D_IN, tmp_path / "sae", META, progress=stop_at_6)
    weights = tmp_path / "sae" / TRAIN_STATE_DIR / "sae.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CorruptFileError, match="resume=False"):
        train_sae(small_config(), synthetic_data(), D_IN, tmp_path / "sae", META, progress=lambda *a: None)
    assert len(weights.read_bytes()) == 100
    result = train_sae(small_config(), synthetic_data(), D_IN, tmp_path / "sae", META, progress=None, resume=False)
    assert result.steps == 12 and result.resumed_from_step == 0


def test_train__wrong_batch_shape_is_reported(tmp_path):
    with pytest.raises(BadInputError, match=r"\(64, 32\)"):
        train_sae(small_config(), synthetic_data(d_in=16), D_IN, tmp_path / "sae", META, progress=lambda *a: None)


def test_train__finite_data_is_reported(tmp_path):
    def short(start_sample):
        yield from [torch.randn(BATCH, D_IN)] * 5

    with pytest.raises(BadInputError, match="ran out"):
        train_sae(small_config(), short, D_IN, tmp_path / "sae", META, progress=lambda *a: None)


def test_train__meta_needs_model_and_hook(tmp_path):
    with pytest.raises(BadInputError, match="hook"):
        train_sae(small_config(), synthetic_data(), D_IN, tmp_path / "sae", {"model": "tiny"}, progress=lambda *a: None)


def test_train__leaves_the_callers_rng_alone(tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train_sae(small_config(total_samples=BATCH * 2), synthetic_data(), D_IN, tmp_path / "sae", META)  # tqdm bar
    torch.testing.assert_close(torch.rand(3), expected)


def test_train__saved_sae_reconstructs_raw_activations(tmp_path):
    cfg = small_config(total_samples=BATCH * 150, k=8, lr=1e-2, checkpoint_every_steps=1000)
    result = train_sae(cfg, synthetic_data(), D_IN, tmp_path / "sae", META, progress=lambda *a: None)
    sae = load_sae(tmp_path / "sae").sae
    x = next(synthetic_data()(BATCH * 10_000))  # held-out batch of the same distribution
    with torch.no_grad():
        err = (sae(x) - x).pow(2).sum(-1).mean()
    variance = (x - x.mean(0)).pow(2).sum(-1).mean()
    explained = float(1 - err / variance)
    # On RAW inputs of norm ~100 it does as well as during training on scaled ones: the scaling is folded in.
    assert explained > 0.6
    assert explained == pytest.approx(result.metrics["explained_variance"], abs=0.1)
