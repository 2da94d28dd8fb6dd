"""One path from text to SAE latents: the prompt view, probing, highlights, steering scales and raw hook reads agree.

Each analysis used to tokenise and mask on its own; now they all go through `saelab.activations.text_batches`
and `saelab.sae.text_latents`, so the same text must give the same numbers everywhere.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from saelab.activations.text_batches import CHARS_PER_TOKEN_CAP, encode_texts, text_hook_acts
from saelab.corpus import separator_id
from saelab.errors import BadInputError
from saelab.features.prompt import analyse_text
from saelab.probing.feature_sources import SourceParams, extract_features, latent_token_activations
from saelab.sae.text_latents import check_latent, ids_latents, latent_max, text_latents
from saelab.steering.direction_sources import latent_activations, latent_max_activation
from tests.fixtures_ui import HOOK, build_tiny_sae

TEXTS = ["The cat sat on the mat.", "Numbers: 1, 2, 3, 4.", "def f(x): return x + 1", "A much longer sentence here."]


@pytest.fixture(scope="module")
def sae(tmp_path_factory, tiny_handle):
    from saelab.sae.files import load_sae

    return load_sae(build_tiny_sae(tmp_path_factory.mktemp("text-latents") / "sae"), handle=tiny_handle)


def test_every_analysis_sees_the_same_latents_on_the_same_text(tiny_handle, sae):
    d_sae = int(sae.sae.cfg.d_sae)
    for text in TEXTS:
        prompt = analyse_text(tiny_handle, sae, text, max_tokens=64)
        per_token = np.array([prompt.latent_acts(j) for j in range(d_sae)]).T  # [positions, d_sae]
        assert per_token.shape[0] == len(prompt.token_ids) and per_token.max() > 0
        assert not per_token[prompt.sink_positions].any()  # sinks carry nothing

        _, highlight = latent_token_activations(tiny_handle, sae, text, list(range(d_sae)), max_tokens=64)
        np.testing.assert_allclose(highlight, per_token[1:], atol=1e-5)

        probe = extract_features(SourceParams(source="sae", pooling="max", max_tokens=64), [text], handle=tiny_handle,
                                 loaded_sae=sae)  # fmt: skip
        np.testing.assert_allclose(probe.X[0], per_token.max(0), atol=1e-5)

        j = int(per_token.max(0).argmax())
        assert latent_max(tiny_handle, sae, j, [text], max_tokens=64) == pytest.approx(per_token[:, j].max(), abs=1e-5)
        assert latent_max_activation(tiny_handle, sae, j, [text]) == pytest.approx(per_token[:, j].max(), abs=1e-5)
        steer = latent_activations(tiny_handle, sae, prompt.token_ids[1:], j)
        np.testing.assert_allclose(steer, per_token[1:, j], atol=1e-5)


def test_batching_does_not_change_latents(tiny_handle, sae):
    enc_one, f_one = text_latents(tiny_handle, sae, TEXTS[2], 64)
    probe = extract_features(SourceParams(source="sae", pooling="mean", max_tokens=64, batch_size=3), TEXTS,
                             handle=tiny_handle, loaded_sae=sae)  # fmt: skip
    keep = torch.ones(len(enc_one.ids[0]), dtype=torch.bool)
    keep[0] = False
    np.testing.assert_allclose(probe.X[2], f_one[keep].mean(0).numpy(), atol=1e-5)


def test_separator_tokens_inside_a_text_are_sinks_everywhere(tiny_handle, sae):
    sep = separator_id(tiny_handle.tokenizer)
    sep_text = tiny_handle.tokenizer.decode([sep])
    text = f"first part {sep_text} second part"
    enc = encode_texts(tiny_handle.tokenizer, [text], 64)
    inner = [i for i, t in enumerate(enc.ids[0]) if t == sep and i > 0]
    assert inner, "the separator should survive tokenisation as one token"
    n_kept = len(enc.ids[0]) - 1 - len(inner)
    assert text_hook_acts(tiny_handle, [text], HOOK)[0].shape[0] == n_kept
    prompt = analyse_text(tiny_handle, sae, text)
    assert set(inner) <= set(prompt.sink_positions)
    f = ids_latents(tiny_handle, sae, enc.ids[0])
    assert not f[inner].any() and not f[0].any()


def test_long_text_is_cut_before_tokenising_and_counted(tiny_handle):
    text = "word " * (10 * CHARS_PER_TOKEN_CAP)
    enc = encode_texts(tiny_handle.tokenizer, [text, "short"], 8)
    assert enc.char_cut == [True, False] and enc.n_truncated == 1
    assert len(enc.ids[0]) == 9 and enc.truncated(0) and not enc.truncated(1)


def test_bad_inputs_get_clear_errors(tiny_handle, sae):
    with pytest.raises(BadInputError, match="strings"):
        encode_texts(tiny_handle.tokenizer, ["ok", None], 8)  # type: ignore[list-item]
    with pytest.raises(BadInputError, match="max_tokens"):
        encode_texts(tiny_handle.tokenizer, ["ok"], 0)
    with pytest.raises(BadInputError, match="no latent"):
        check_latent(sae, int(sae.sae.cfg.d_sae))
    with pytest.raises(BadInputError, match="not an integer"):
        check_latent(sae, True)
