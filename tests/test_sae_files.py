"""SAE folders: SAE-Lens format on disk, folded normalisation, checks against a model, corruption."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from sae_lens import SAE, TopKSAE, TopKSAEConfig
from sae_lens.saes.sae import SAEMetadata

from saelab.errors import BadInputError, CorruptFileError, IncompatibleSAEError
from saelab.sae import SaeKnobs, SaeMeta, get_architecture, list_saes, load_sae, save_sae
from saelab.storage import SAE_CFG_FILE, SAE_WEIGHTS_FILE, SAELAB_META_FILE, TRAIN_STATE_DIR, load_tensors

HOOK = "blocks.0.hook_resid_post"


def training_sae(arch: str = "topk", d_in: int = 32, d_sae: int = 64, seed: int = 0):
    """A training SAE with every parameter perturbed away from its (often symmetric) init."""
    torch.manual_seed(seed)
    sae = get_architecture(arch).build(SaeKnobs(d_in=d_in, d_sae=d_sae, k=6, metadata={"hook_name": HOOK}))
    with torch.no_grad():
        for name, param in sae.named_parameters():
            if name == "threshold":
                param.copy_(torch.rand_like(param) * 0.5)
            else:
                param.add_(0.1 * torch.randn_like(param))
    return sae


def raw_activations(d_in: int = 32, n: int = 256, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d_in, generator=g) + 2.0
    return 100 * x / x.norm(dim=-1, keepdim=True).mean()  # mean norm 100, like a residual stream


def contributions(sae, acts: torch.Tensor) -> torch.Tensor:
    """Each latent's share of the reconstruction's size: activation times its decoder row norm.

    The invariant of a fold: raw activation units can move between an activation and its decoder
    row (TopK's saved SAE has unit decoder rows), but the product cannot.
    """
    if getattr(sae.cfg, "rescale_acts_by_decoder_norm", False):
        return acts  # the SAE treats its decoder rows as unit vectors
    return acts * sae.W_dec.norm(dim=-1)


def meta_for(sae, **overrides) -> SaeMeta:
    fields = dict(model="tiny", hook=HOOK, d_in=sae.cfg.d_in, d_sae=sae.cfg.d_sae, architecture="topk")
    fields.update(overrides)
    return SaeMeta(**fields)


def saved(tmp_path, arch: str = "topk", d_in: int = 32, name: str = "sae"):
    sae = training_sae(arch, d_in=d_in)
    sae.fold_activation_norm_scaling_factor(0.05)
    return save_sae(sae, tmp_path / name, meta_for(sae, architecture=arch, norm_scaling_factor=0.05))


def test_sae_meta__round_trips_and_keeps_unknown_keys():
    meta = SaeMeta(model="m", hook=HOOK, d_in=4, d_sae=8, architecture="topk", corpus={"sets": ["a"]})
    assert SaeMeta.from_dict(meta.to_dict()) == meta
    newer = {**meta.to_dict(), "future_field": 3}
    assert SaeMeta.from_dict(newer).extra == {"future_field": 3}


def test_save_load__identity(tmp_path):
    folder = saved(tmp_path)
    loaded = load_sae(folder)
    on_disk = load_tensors(folder / SAE_WEIGHTS_FILE)
    state = loaded.sae.state_dict()
    assert state.keys() == on_disk.keys()
    for name, tensor in on_disk.items():
        assert torch.equal(state[name], tensor), name
    # saving the loaded (inference) SAE again writes the same weights, config and metadata
    again = save_sae(loaded.sae, tmp_path / "again", loaded.meta)
    for name, tensor in load_tensors(again / SAE_WEIGHTS_FILE).items():
        assert torch.equal(on_disk[name], tensor), name
    first, second = (json.loads((f / SAE_CFG_FILE).read_text()) for f in (folder, again))
    assert first == second
    assert load_sae(again).meta == loaded.meta
    assert {p.name for p in folder.iterdir()} == {SAE_CFG_FILE, SAE_WEIGHTS_FILE, SAELAB_META_FILE}


@pytest.mark.parametrize("arch", ["topk", "standard", "jumprelu", "gated"])
def test_save__folded_normalisation_reads_raw_activations(arch, tmp_path):
    train = training_sae(arch)
    x = raw_activations()
    factor = train.cfg.d_in**0.5 / x.norm(dim=-1).mean().item()  # SAE-Lens's estimate, on this batch
    with torch.no_grad():
        expected_out = train(x * factor) / factor
        expected_acts = train.encode(x * factor)
        expected_share = contributions(train, expected_acts) / factor
    folded = copy.deepcopy(train)
    folded.fold_activation_norm_scaling_factor(factor)
    sae = load_sae(save_sae(folded, tmp_path / arch, meta_for(folded, architecture=arch))).sae
    plain = SAE.load_from_disk(tmp_path / arch)  # what an SAE-Lens user gets
    with torch.no_grad():
        for loaded in (sae, plain):
            torch.testing.assert_close(loaded(x), expected_out, rtol=1e-4, atol=1e-3)
            acts = loaded.encode(x)
            assert torch.equal(acts > 0, expected_acts > 0)  # the same latents fire
            torch.testing.assert_close(contributions(loaded, acts), expected_share, rtol=1e-4, atol=1e-4)
    assert expected_acts.count_nonzero() > 0


def test_save__refuses_an_unfolded_sae(tmp_path):
    sae = training_sae()
    sae.cfg.normalize_activations = "expected_average_only_in"
    with pytest.raises(BadInputError, match="fold"):
        save_sae(sae, tmp_path / "sae", meta_for(sae))


def test_save__refuses_a_folder_with_other_files(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    sae = training_sae()
    sae.fold_activation_norm_scaling_factor(1.0)
    with pytest.raises(BadInputError, match="notes.txt"):
        save_sae(sae, tmp_path, meta_for(sae))
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_save__replaces_an_old_sae_and_its_checkpoint(tmp_path):
    folder = saved(tmp_path)
    (folder / TRAIN_STATE_DIR).mkdir()
    (folder / TRAIN_STATE_DIR / "state.json").write_text("{}")
    sae = training_sae(seed=3)
    sae.fold_activation_norm_scaling_factor(1.0)
    save_sae(sae, folder, meta_for(sae, seed=3))
    assert not (folder / TRAIN_STATE_DIR).exists()
    assert load_sae(folder).meta.seed == 3


def test_load__plain_sae_lens_folder_takes_hook_from_its_metadata(tiny_handle, tmp_path):
    cfg = TopKSAEConfig(d_in=64, d_sae=128, k=4, metadata=SAEMetadata(hook_name="blocks.1.hook_resid_post"))
    TopKSAE(cfg).save_model(tmp_path / "plain")
    loaded = load_sae(tmp_path / "plain", handle=tiny_handle)
    assert loaded.meta is None and loaded.hook == "blocks.1.hook_resid_post"


def test_load__matching_model_and_hook(tiny_handle, tmp_path):
    loaded = load_sae(saved(tmp_path, d_in=64), handle=tiny_handle)
    assert loaded.hook == HOOK and loaded.sae.cfg.d_in == 64


def test_load__width_mismatch_names_both_widths(tiny_handle, tmp_path):
    folder = saved(tmp_path, d_in=32)
    with pytest.raises(IncompatibleSAEError) as err:
        load_sae(folder, handle=tiny_handle)
    message = str(err.value)
    assert "32" in message and "64" in message and HOOK in message and tiny_handle.name in message


def test_load__unknown_hook_lists_valid_hooks(tiny_handle, tmp_path):
    with pytest.raises(BadInputError) as err:
        load_sae(saved(tmp_path, d_in=64), handle=tiny_handle, hook="blocks.7.hook_resid_post")
    assert "blocks.1.hook_resid_post" in str(err.value)


def test_load__corrupt_weights_raise_and_are_left_as_they_were(tmp_path):
    folder = saved(tmp_path)
    weights = folder / SAE_WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:300])
    before = weights.read_bytes()
    with pytest.raises(CorruptFileError, match=SAE_WEIGHTS_FILE):
        load_sae(folder)
    assert weights.read_bytes() == before


def test_load__corrupt_config_raises_and_is_left_as_it_was(tmp_path):
    folder = saved(tmp_path)
    (folder / SAE_CFG_FILE).write_text('{"d_in": 32, "d_sa')
    with pytest.raises(CorruptFileError, match=SAE_CFG_FILE):
        load_sae(folder)
    assert (folder / SAE_CFG_FILE).read_text() == '{"d_in": 32, "d_sa'


def test_load__weights_that_do_not_fit_the_config_raise(tmp_path):
    folder = saved(tmp_path)
    cfg = json.loads((folder / SAE_CFG_FILE).read_text())
    (folder / SAE_CFG_FILE).write_text(json.dumps({**cfg, "d_sae": 99}))
    with pytest.raises(CorruptFileError, match="do not fit"):
        load_sae(folder)


def test_load__missing_folder_or_files_say_what_is_missing(tmp_path):
    with pytest.raises(BadInputError, match="No SAE folder"):
        load_sae(tmp_path / "nowhere")
    folder = saved(tmp_path, name="parent/sae")
    with pytest.raises(BadInputError, match="parent/sae"):  # points to the SAE inside
        load_sae(tmp_path / "parent")
    (folder / SAE_WEIGHTS_FILE).unlink()
    with pytest.raises(BadInputError, match=SAE_WEIGHTS_FILE):
        load_sae(folder)


def test_load__training_only_architecture_is_explained(tmp_path):
    sae = training_sae("batchtopk")
    sae.save_model(tmp_path / "ckpt")  # a raw training checkpoint, not an inference SAE
    with pytest.raises(IncompatibleSAEError, match="training-only"):
        load_sae(tmp_path / "ckpt")


def test_list_saes__finds_sae_folders_only(tmp_path):
    a = saved(tmp_path, name="a")
    c = saved(tmp_path, name="b/c")
    (a / TRAIN_STATE_DIR).mkdir()
    for name in (SAE_CFG_FILE, SAE_WEIGHTS_FILE):
        (a / TRAIN_STATE_DIR / name).write_text("x")
    (tmp_path / ".a.tmp").mkdir()
    (tmp_path / ".a.tmp" / SAE_CFG_FILE).write_text("x")
    (tmp_path / "junk").mkdir()
    assert list_saes(tmp_path) == [a, c]
    assert list_saes(tmp_path / "missing") == []
