"""Config dataclasses share one to_dict/from_dict: round trips are identity, unknown keys are refused."""

import pytest

from saelab.activations import HarvestConfig
from saelab.corpus import CorpusConfig
from saelab.errors import BadInputError
from saelab.features.dashboards import DashboardConfig
from saelab.sae.train import TrainConfig

CONFIGS = [
    CorpusConfig(n_tokens=4096, seed=3),
    HarvestConfig(hooks=["blocks.0.hook_resid_post"]),
    DashboardConfig(),
    TrainConfig(d_sae=64, total_samples=4096),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: type(c).__name__)
def test_config__round_trip_is_identity(cfg):
    assert type(cfg).from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: type(c).__name__)
def test_config__unknown_key_is_refused_by_name(cfg):
    with pytest.raises(BadInputError, match="bogus_knob"):
        type(cfg).from_dict({**cfg.to_dict(), "bogus_knob": 1})
