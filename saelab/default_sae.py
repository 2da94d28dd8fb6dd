"""Rebuild the embedded default SAE (`cached_features/default/`) from scratch, reproducibly.

    saelab build-default            # or: make default-sae

Steps (each is skipped or resumed when its output already exists in the work folder):
  1. harvest `blocks.12.hook_resid_post` of SmolLM2-135M-Instruct over the first 5,242,880 tokens of
     the training corpus (seed 0, documents capped at 512 tokens, eval sets excluded);
  2. train a TopK SAE with SAE-Lens on them;
  3. copy it into `cached_features/default/` with fp16 weights (SAE-Lens casts them back on load);
  4. evaluate the shipped (fp16) copy on 65,536 held-out tokens → `eval.json`;
  5. build feature dashboards over the next 1,048,576 training-split tokens, which the SAE never saw;
  6. label every latent offline (proxy labels) and score the labels on held-out rows.

Why layer 12: it is 40 % of the way through the 30-layer model — past the early layers that mostly
encode token identity, before the late layers that mostly prepare the next-token prediction — and it is
where ../shared/FACTS.md calibrated speed and SAE quality. Why TopK: it fixes L0 exactly (≤ 64 is the
quality bar) and trains without a sparsity-coefficient sweep.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import torch

from saelab.defaults import DEFAULT_HOOK, default_sae_dir
from saelab.storage import SAE_CFG_FILE, SAE_WEIGHTS_FILE, SAELAB_META_FILE, atomic_dir, load_tensors, save_tensors

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
HOOK = DEFAULT_HOOK
SEQ_LEN = 128
TRAIN_TOKENS = 5_242_880  # 40,960 rows of 128
DASHBOARD_TOKENS = 1_048_576  # the next 8,192 rows of the same seeded corpus: never seen in training
EVAL_TOKENS = 65_536  # held-out split (documents hashed out of the training split)
LABEL_TOKENS = 229_376  # held-out rows for the labels' detection score (the split holds ~304k tokens)
SEED = 0


def train_config(total_samples: int):
    from saelab.sae.train import TrainConfig

    steps = total_samples // 1024
    return TrainConfig(
        architecture="topk",
        d_sae=4608,
        k=64,
        lr=4e-4,
        lr_warmup_steps=200,
        lr_decay_steps=int(steps * 0.3),
        batch_size=1024,
        total_samples=total_samples,
        seed=SEED,
        checkpoint_every_steps=250,
        autocast_bf16=True,
    )


def to_fp16_copy(src: Path, dest: Path) -> None:
    """Copy an SAE folder with its weights stored in fp16 (cfg keeps float32: SAE-Lens casts on load)."""
    weights = load_tensors(src / SAE_WEIGHTS_FILE)
    with atomic_dir(dest) as tmp:
        save_tensors(
            tmp / SAE_WEIGHTS_FILE, {k: v.to(torch.float16) if v.is_floating_point() else v for k, v in weights.items()}
        )
        for name in (SAE_CFG_FILE, SAELAB_META_FILE):
            shutil.copy2(src / name, tmp / name)


def build_default(work: Path, dest: Path | None = None, epochs: float = 1.0) -> Path:
    """Run every step (see the module docstring); returns the shipped folder (default: `default_sae_dir()`)."""
    dest = dest or default_sae_dir()
    from saelab.activations import ActivationStore, HarvestConfig, harvest
    from saelab.corpus import CorpusConfig, build_corpus
    from saelab.features.autolabel import label_all
    from saelab.features.dashboards import DashboardConfig, build_dashboards
    from saelab.features.labels import write_labels
    from saelab.models import load_model
    from saelab.sae.evaluate import evaluate_sae
    from saelab.sae.files import load_sae
    from saelab.sae.train import train_sae
    from saelab.storage import EVAL_FILE

    torch.manual_seed(SEED)
    handle = load_model()
    tok = handle.tokenizer
    acts_dir, sae_dir = work / "acts", work / "sae"

    train_corpus = build_corpus(tok, CorpusConfig(seq_len=SEQ_LEN, n_tokens=TRAIN_TOKENS, seed=SEED))
    harvest(handle, train_corpus, HarvestConfig(hooks=[HOOK], batch_size=64), acts_dir)
    store = ActivationStore(acts_dir)

    if not (sae_dir / SAE_WEIGHTS_FILE).exists():
        cfg = train_config(int(store.n_tokens * epochs))
        meta = {"model": handle.name, "hook": HOOK, "corpus": store.manifest.get("corpus", {})}
        train_sae(
            cfg,
            lambda start: store.iter_batches(HOOK, cfg.batch_size, seed=SEED, start_sample=start),
            store.d_in(HOOK),
            sae_dir,
            meta,
        )

    to_fp16_copy(sae_dir, dest)
    loaded = load_sae(dest, handle=handle)

    heldout = build_corpus(
        tok, CorpusConfig(seq_len=SEQ_LEN, n_tokens=EVAL_TOKENS + LABEL_TOKENS, seed=SEED, split="heldout")
    )
    eval_rows = EVAL_TOKENS // SEQ_LEN
    result = evaluate_sae(handle, loaded.sae, HOOK, heldout.tokens[:eval_rows])
    result.notes.append(f"held-out rows 0..{eval_rows} of {heldout.provenance()}")
    result.save(dest / EVAL_FILE)

    full = build_corpus(tok, CorpusConfig(seq_len=SEQ_LEN, n_tokens=TRAIN_TOKENS + DASHBOARD_TOKENS, seed=SEED))
    first = TRAIN_TOKENS // SEQ_LEN
    dash_tokens = full.tokens[first:]
    provenance = {
        **full.provenance(),
        "rows": [first, int(full.tokens.shape[0])],
        "note": "rows after the SAE's training rows",
    }
    build_dashboards(handle, loaded, dash_tokens, DashboardConfig(), corpus_provenance=provenance)
    labels = label_all(handle, loaded, dest, heldout.tokens[eval_rows:])
    write_labels(dest, labels)
    log.info("default SAE rebuilt in %s", dest)
    return dest


__all__ = ["build_default", "train_config", "to_fp16_copy"]
