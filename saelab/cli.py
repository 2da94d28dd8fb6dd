"""`saelab` command line: harvest activations, train an SAE, evaluate it.

Each subcommand defaults to the default model and a middle-layer residual hook, shows a progress
bar, resumes after an interruption, and prints user errors (SaelabError) without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from saelab.defaults import DEFAULT_HOOK, DEFAULT_MODEL, default_sae_dir
from saelab.distributed import add_ray_arguments, shard_runner
from saelab.errors import SaelabError

# Modules that add their own subcommands: each has `register(sub)` taking argparse's subparsers and
# keeps heavy imports (torch, models) inside its command functions so `saelab --help` stays fast.
COMMAND_MODULES = (
    "saelab.steering.cli",
    "saelab.steering.eval_cli",
    "saelab.probing.cli",
    "saelab.circuits.cli",
    "saelab.graphs.cli",
    "saelab.hypotheses.cli",
    "saelab.compare.cli",
    "saelab.features.sweep_cli",
)


def _hook_slug(hook: str) -> str:
    from saelab.hooks import hook_slug

    return hook_slug(hook)


def cmd_harvest(args: argparse.Namespace) -> int:
    from saelab.activations import HarvestConfig, harvest
    from saelab.corpus import CorpusConfig, build_corpus
    from saelab.models import load_model

    handle = load_model(args.model)
    hooks = [handle.check_hook(h) for h in args.hooks]
    out = Path(args.out or f"runs/acts-{_hook_slug(hooks[0])}")
    corpus_cfg = CorpusConfig(
        seq_len=args.seq_len,
        n_tokens=args.tokens,
        seed=args.seed,
        split=args.split,
        max_doc_tokens=args.max_doc_tokens or None,
    )
    corpus = build_corpus(handle.tokenizer, corpus_cfg)
    cfg = HarvestConfig(hooks=hooks, batch_size=args.batch_size, compute_dtype=args.dtype, store_dtype=args.store_dtype)
    runner = shard_runner(args, args.model)
    try:
        result = harvest(handle, corpus, cfg, out, runner=runner)
    finally:
        if runner is not None:
            runner.shutdown()
    print(
        f"harvested {result.n_tokens:,} tokens × {len(hooks)} hook(s) into {out} "
        f"({result.shards_reused} shard(s) reused, {result.tokens_per_second:,.0f} tokens/s)"
    )
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from saelab.activations import ActivationStore
    from saelab.sae.train import TrainConfig, auto_dead_window, train_sae

    store = ActivationStore(args.acts)
    hook = args.hook or store.hooks[0]
    if hook not in store.hooks:
        raise SaelabError(f"{args.acts} holds hooks {store.hooks}, not {hook!r}")
    d_in = store.d_in(hook)
    samples = args.samples or int(store.n_tokens * args.epochs)
    window = args.dead_window or auto_dead_window(samples // args.batch_size)
    cfg = TrainConfig(
        architecture=args.arch,
        d_sae=args.d_sae,
        k=args.k,
        sparsity_coefficient=args.coefficient,
        lr=args.lr,
        lr_schedule=args.lr_schedule,
        lr_warmup_steps=args.warmup_steps,
        lr_decay_steps=args.decay_steps,
        batch_size=args.batch_size,
        total_samples=samples,
        seed=args.seed,
        checkpoint_every_steps=args.checkpoint_every,
        autocast_bf16=args.bf16,
        dead_feature_window=window,
        feature_sampling_window=window,
    )
    manifest = store.manifest
    meta = {
        "model": manifest["model"]["name"],
        "hook": hook,
        "corpus": {"harvest": str(Path(args.acts).resolve()), **manifest.get("corpus", {})},
    }
    out = Path(args.out or f"runs/sae-{_hook_slug(hook)}-{args.arch}-{args.d_sae}")

    def data(start: int):
        return store.iter_batches(hook, cfg.batch_size, seed=cfg.seed, start_sample=start)

    result = train_sae(cfg, data, d_in, out, meta, resume=not args.no_resume)
    print(
        f"trained {cfg.architecture} {d_in}→{cfg.d_sae} for {result.steps} steps "
        f"({result.samples:,} samples, {result.samples_per_second:,.0f}/s) into {out}; "
        f"final metrics {json.dumps(result.metrics)}"
        + (f"; resumed from step {result.resumed_from_step}" if result.resumed_from_step else "")
    )
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from saelab.corpus import CorpusConfig, build_corpus
    from saelab.models import load_model
    from saelab.progress import terminal_bar
    from saelab.sae.evaluate import evaluate_sae
    from saelab.sae.files import load_sae as _load
    from saelab.sae.files import read_meta
    from saelab.storage import EVAL_FILE

    meta = read_meta(args.sae)
    handle = load_model(args.model or (meta.model if meta else DEFAULT_MODEL))
    loaded = _load(args.sae, handle=handle, hook=args.hook)
    corpus = build_corpus(
        handle.tokenizer, CorpusConfig(seq_len=args.seq_len, n_tokens=args.tokens, seed=args.seed, split="heldout")
    )
    with terminal_bar("Evaluating SAE", "pass") as progress:
        result = evaluate_sae(
            handle, loaded.sae, loaded.hook, corpus.tokens, batch_size=args.batch_size, progress=progress
        )
    result.notes.append(f"held-out corpus: {json.dumps(corpus.provenance())}")
    out = Path(args.out) if args.out else Path(args.sae) / EVAL_FILE
    result.save(out)
    shown = [
        "l0",
        "explained_variance",
        "ce_loss_score_zero",
        "ce_loss_score_mean",
        "delta_loss",
        "kl_score_zero",
        "dead_fraction",
    ]
    print(json.dumps({k: getattr(result, k) for k in shown}, indent=2))
    print(f"wrote {out}")
    return 0


def cmd_dashboards(args: argparse.Namespace) -> int:
    from saelab.corpus import CorpusConfig, build_corpus
    from saelab.features.autolabel import label_all
    from saelab.features.dashboards import DashboardConfig, build_dashboards
    from saelab.features.labels import read_labels, write_labels
    from saelab.models import load_model
    from saelab.sae.files import load_sae, read_meta

    meta = read_meta(args.sae)
    handle = load_model(args.model or (meta.model if meta else DEFAULT_MODEL))
    loaded = load_sae(args.sae, handle=handle)
    if args.no_labels:
        args.label_tokens = 0
    if args.labels_only and args.label_tokens is None:  # as many held-out tokens as the labels being replaced
        old = read_labels(args.sae)
        det = old.detection if old is not None else {}
        if det.get("n_rows") and det.get("seq_len") == args.seq_len:
            args.label_tokens = int(det["n_rows"]) * args.seq_len
        args.tokens = args.tokens or 0
    if args.tokens is None or args.label_tokens is None:
        from saelab.features.sizing import dashboard_tokens

        sizing = dashboard_tokens(handle, loaded, seq_len=args.seq_len)
        share = 0.7 if not args.no_labels else 1.0  # labels read held-out rows with one more forward each
        if args.tokens is None:
            args.tokens = max(args.seq_len, int(sizing.n_tokens * share) // args.seq_len * args.seq_len)
        if args.label_tokens is None:
            args.label_tokens = max(16 * args.seq_len, sizing.n_tokens - args.tokens)
        print(f"sized to this machine: {sizing.note}; dashboards {args.tokens:,}, labels {args.label_tokens:,} tokens")
    # Text the SAE never saw: the training-split rows after the ones its harvest used, when known;
    # else the held-out split. Labels are scored on held-out rows the dashboards did not use.
    trained = ((meta.corpus or {}).get("config") or {}).get("n_tokens") if meta else None
    n_label_rows = args.label_tokens // args.seq_len
    heldout = build_corpus(
        handle.tokenizer, CorpusConfig(seq_len=args.seq_len, n_tokens=None, seed=args.seed, split="heldout")
    )
    n_label_rows = min(n_label_rows, int(heldout.tokens.shape[0]) // 2)  # leave held-out rows for dashboards
    label_rows = heldout.tokens[-n_label_rows:] if n_label_rows else heldout.tokens[:0]
    if args.labels_only:
        out = write_labels(args.sae, label_all(handle, loaded, args.sae, label_rows))
        det = read_labels(args.sae).detection  # type: ignore[union-attr]
        med_t, med_s, share = (det.get(k) for k in ("median_token_balanced_accuracy",
                                                    "median_sequence_balanced_accuracy", "share_token_ge_0.7"))  # fmt: skip

        def f(v) -> str:
            return "–" if v is None else f"{v:.3f}"

        print(f"labels written to {out}: {det.get('n_token_scored')} of {det.get('n_live')} live latents scored at "
              f"token level; median balanced accuracy {f(med_t)} (token level), {f(med_s)} (sequence level); "
              f"share ≥ 0.7 at token level {f(share)} (PROXY labels; held-out TEST half)")  # fmt: skip
        return 0
    if trained:
        cfg = CorpusConfig(seq_len=args.seq_len, n_tokens=int(trained) + args.tokens, seed=args.seed)
        corpus = build_corpus(handle.tokenizer, cfg)
        first = int(trained) // args.seq_len
        tokens, where = (
            corpus.tokens[first:],
            {"rows": [first, int(corpus.tokens.shape[0])], "note": "after the SAE's training rows"},
        )
    else:
        corpus, last = heldout, max(0, int(heldout.tokens.shape[0]) - n_label_rows)
        tokens = heldout.tokens[: min(last, args.tokens // args.seq_len)]
        where = {"rows": [0, int(tokens.shape[0])], "note": "held-out split; the last rows are kept for label scoring"}
    pool = shard_runner(args, args.model or (meta.model if meta else DEFAULT_MODEL))
    try:
        out = build_dashboards(handle, loaded, tokens, DashboardConfig(),
                               corpus_provenance={**corpus.provenance(), **where}, pool=pool)  # fmt: skip
    finally:
        if pool is not None:
            pool.shutdown()
    if not args.no_labels:
        write_labels(args.sae, label_all(handle, loaded, args.sae, label_rows))
    print(f"dashboards written to {out}")
    return 0


def parse_latents(spec: str) -> list[int]:
    """'0:50' (a range), '3,7,12' (a list) or a mix, e.g. '0:10,42' → sorted unique indices."""
    out: set[int] = set()
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        try:
            if ":" in part:
                lo, hi = (int(x) for x in part.split(":", 1))
                out.update(range(lo, hi))
            else:
                out.add(int(part))
        except ValueError:
            raise SaelabError(f"--latents: {part!r} is not an index or a range like 0:50") from None
    if not out:
        raise SaelabError("--latents names no latent; use e.g. 0:50 or 3,7,12")
    return sorted(out)


def cmd_llm_labels(args: argparse.Namespace) -> int:
    """LLM explanations for chosen latents, scored with the offline labels' detection score and rows."""
    from tqdm import tqdm

    from saelab.corpus import CorpusConfig, build_corpus
    from saelab.features.label_detection import heldout_rows
    from saelab.features.labels import read_labels, write_labels
    from saelab.features.llm import EndpointError, LLMEndpoint, llm_labels
    from saelab.models import load_model
    from saelab.sae.files import load_sae, read_meta

    endpoint = LLMEndpoint(args.base_url, args.llm_model, api_key=args.api_key, timeout=args.timeout)
    latents = parse_latents(args.latents)
    try:  # one cheap call first, so an unreachable endpoint fails before minutes of forward passes
        endpoint.chat([{"role": "user", "content": "Reply with OK."}], max_tokens=2)
    except EndpointError as err:
        raise SaelabError(f"{err} Nothing was written; the offline proxy labels stay as they are.") from err
    offline = read_labels(args.sae)
    if offline is None:
        raise SaelabError(f"{args.sae} has no offline labels yet: run `saelab dashboards --sae {args.sae}` first.")
    meta = read_meta(args.sae)
    handle = load_model(args.model or (meta.model if meta else DEFAULT_MODEL))
    loaded = load_sae(args.sae, handle=handle)
    # The same held-out rows the offline labels were scored on: the last rows of the held-out split.
    n_rows, seq_len = int(offline.detection["n_rows"]), int(offline.detection["seq_len"])
    heldout = build_corpus(
        handle.tokenizer, CorpusConfig(seq_len=seq_len, n_tokens=None, seed=args.seed, split="heldout")
    )
    with tqdm(desc="held-out rows", unit="batch") as bar:
        rows = heldout_rows(
            handle,
            loaded,
            heldout.tokens[-n_rows:],
            progress=lambda d, t: (setattr(bar, "total", t), bar.update(d - bar.n)),
        )
    with tqdm(desc="LLM calls", unit="call") as bar:
        out = llm_labels(
            endpoint,
            args.sae,
            latents,
            offline,
            rows,
            handle.tokenizer,
            n_per_class=args.per_class,
            progress=lambda d, t: (setattr(bar, "total", t), bar.update(d - bar.n)),
        )
    write_labels(args.sae, out)
    note = (out.llm or {}).get("note")
    print(note or f"LLM labels for {len((out.llm or {}).get('latents', {}))} latent(s) written beside {args.sae}")
    return 0


def cmd_build_default(args: argparse.Namespace) -> int:
    from saelab.default_sae import build_default

    out = build_default(Path(args.work), Path(args.dest) if args.dest else default_sae_dir(), epochs=args.epochs)
    print(f"default SAE rebuilt in {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="saelab", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    h = sub.add_parser("harvest", help="harvest activations of hook points over the sae-probes corpus")
    h.add_argument("--model", default=DEFAULT_MODEL, help="model spec: default name, .gguf, HF folder, TL name")
    h.add_argument(
        "--hooks", nargs="+", default=[DEFAULT_HOOK], help="hook points, all in one pass (default: %(default)s)"
    )
    h.add_argument("--tokens", type=int, default=1_000_000, help="corpus tokens to harvest (default: %(default)s)")
    h.add_argument("--seq-len", type=int, default=128)
    h.add_argument("--seed", type=int, default=0)
    h.add_argument("--split", choices=["train", "heldout"], default="train")
    h.add_argument(
        "--max-doc-tokens",
        type=int,
        default=512,
        help="truncate long documents (0: no cap); keeps code from dominating",
    )
    h.add_argument("--batch-size", type=int, default=32)
    h.add_argument("--dtype", choices=["float32", "bfloat16"], default="bfloat16", help="compute dtype")
    h.add_argument("--store-dtype", choices=["float32", "float16", "bfloat16"], default="float16")
    h.add_argument("--out", help="output folder (default: runs/acts-<hook>)")
    add_ray_arguments(h, "shards")
    h.set_defaults(func=cmd_harvest)

    t = sub.add_parser("train", help="train an SAE with SAE-Lens on a harvest folder")
    t.add_argument("--acts", required=True, help="harvest folder written by `saelab harvest`")
    t.add_argument("--hook", help="which harvested hook (default: the first)")
    t.add_argument(
        "--arch", default="topk", help="standard | topk | batchtopk | jumprelu | gated | matryoshka_batchtopk"
    )
    t.add_argument("--d-sae", type=int, default=4608)
    t.add_argument("--k", type=int, default=32, help="active latents for topk-style SAEs")
    t.add_argument("--coefficient", type=float, default=None, help="sparsity coefficient for standard/gated/jumprelu")
    t.add_argument("--lr", type=float, default=3e-4)
    t.add_argument("--lr-schedule", choices=["constant", "cosineannealing"], default="constant")
    t.add_argument("--warmup-steps", type=int, default=0)
    t.add_argument("--decay-steps", type=int, default=0)
    t.add_argument("--batch-size", type=int, default=1024)
    t.add_argument("--samples", type=int, default=None, help="training samples (default: --epochs passes)")
    t.add_argument("--epochs", type=float, default=1.0)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--checkpoint-every", type=int, default=500, help="steps between checkpoints")
    t.add_argument("--dead-window", type=int, default=None,
                   help="steps a latent must stay silent to count as dead (and be revived by AuxK); "
                   "default: min(1000, max(10, steps // 8))")  # fmt: skip
    t.add_argument("--bf16", action="store_true", help="bf16 autocast (faster on CPUs with AVX-512 bf16)")
    t.add_argument("--no-resume", action="store_true", help="discard a checkpoint instead of resuming")
    t.add_argument("--out", help="output folder (default: runs/sae-<hook>-<arch>-<d_sae>)")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="evaluate an SAE on held-out text (L0, EV, CE-loss score, KL, density)")
    e.add_argument("--sae", required=True, help="an SAE-Lens folder")
    e.add_argument("--model", default=None, help="model spec (default: the one in the SAE's metadata)")
    e.add_argument("--hook", default=None, help="hook (default: the one in the SAE's metadata)")
    e.add_argument("--tokens", type=int, default=65_536, help="held-out tokens (default: %(default)s)")
    e.add_argument("--seq-len", type=int, default=128)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--batch-size", type=int, default=16)
    e.add_argument("--out", help="JSON path (default: <sae>/eval.json)")
    e.set_defaults(func=cmd_eval)

    m = sub.add_parser(
        "llm-labels",
        help="explain latents with an OpenAI-compatible endpoint; scored like the offline labels (labels.json)",
    )
    m.add_argument("--sae", required=True, help="an SAE folder with dashboards and offline labels")
    m.add_argument("--base-url", required=True, help="e.g. http://127.0.0.1:8080/v1 (a local server)")
    m.add_argument("--llm-model", required=True, help="the model name the endpoint expects")
    m.add_argument("--api-key", default=None, help="sent as a Bearer token when given")
    m.add_argument("--latents", default="0:20", help="indices: a range 0:20, a list 3,7,12, or both")
    m.add_argument("--per-class", type=int, default=5, help="held-out rows per class scored per latent")
    m.add_argument("--timeout", type=float, default=30.0, help="seconds per call")
    m.add_argument("--model", default=None, help="model spec (default: the one in the SAE's metadata)")
    m.add_argument("--seed", type=int, default=0)
    m.set_defaults(func=cmd_llm_labels)

    b = sub.add_parser(
        "build-default",
        help="rebuild the default SAE ($SAELAB_FEATURES/default, else cached_features/default) from scratch",
    )
    b.add_argument("--work", default="runs/default", help="work folder for activations and checkpoints (resumable)")
    b.add_argument(
        "--dest",
        default=None,
        help="where to write the shipped folder (default: $SAELAB_FEATURES/default or cached_features/default)",
    )
    b.add_argument("--epochs", type=float, default=1.0, help="passes over the harvested tokens")
    b.set_defaults(func=cmd_build_default)

    d = sub.add_parser(
        "dashboards",
        help="feature dashboards (top contexts, histograms, promoted tokens, map) and offline proxy labels for an SAE",
    )
    d.add_argument("--sae", required=True, help="an SAE-Lens folder (dashboards/ and labels.json are written into it)")
    d.add_argument("--model", default=None, help="model spec (default: the one in the SAE's metadata)")
    d.add_argument("--tokens", type=int, default=None,
                   help="tokens the SAE never saw (default: sized to this machine so dashboards and labels take "
                        "≤ 10 min; measured and printed)")  # fmt: skip
    d.add_argument("--label-tokens", type=int, default=None, help="held-out tokens for label scoring (default: sized)")
    d.add_argument("--seq-len", type=int, default=128)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--no-labels", action="store_true", help="skip the offline proxy labels")
    d.add_argument("--labels-only", action="store_true",
                   help="keep the dashboards; remake and rescore the offline proxy labels only")  # fmt: skip
    add_ray_arguments(d, "the activations phase (labels stay on this machine)")
    d.set_defaults(func=cmd_dashboards)

    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name is not None and name.startswith(err.name):
                continue  # that area is not installed in this tree
            raise
        module.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except SaelabError as err:
        print(f"saelab {args.command}: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"saelab {args.command}: interrupted; run the same command again to resume.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
