"""Train a skip-transcoder for every layer from one streamed forward pass per batch (issue 19 item 1).

SAE-Lens trains SAEs that reconstruct their own input, not transcoders, so the loop is here. Per batch of corpus
rows: ONE forward (`saelab.hooks.cache_activations`, stopped after the last layer) caches every layer's
`ln2.hook_normalized` (input n) and `hook_mlp_out` (target y); nothing is written to disk. Then each layer's
transcoder takes one Adam step on
    loss = ‖ŷ − y‖² / ‖y − mean(y)‖²   (normalised MSE over the batch),  ŷ = BatchTopK_k(n·W_enc + b_enc)·W_dec
                                                                               + b_dec + n·W_skipᵀ
Each layer trains on n/√d_in → y / y_scale (y_scale: the RMS norm of the centred target on the first batch; both
scales are folded back into the weights on export), so Adam's step sizes suit every layer; the skip path starts as the
least-squares affine map on the first `init_tokens` corpus tokens. BatchTopK keeps the k × batch largest
pre-activations of the batch (Bussmann et al.); inference uses a JumpReLU
with one threshold per layer: the running mean of the smallest kept pre-activation, so the file is an SAE-Lens
`jumprelu_skip_transcoder`. Position 0, separators (attention sinks) and massive MLP outputs (`ordinary`) are
left out of training.
A checkpoint (all layers' weights and Adam state, the rows done) is written every `checkpoint_steps`; a rerun
with the same config resumes from it. `evaluate_layers` reports per layer: normalised MSE, L0, dead fraction and
the CE-loss score with that layer's MLP replaced by its transcoder (1 = as good as the MLP, 0 = as bad as
zero-ablating it).
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from saelab.configs import DictConfig
from saelab.errors import BadInputError
from saelab.graphs.transcoders import SET_FILE, Transcoder, TranscoderSet, hook_in, hook_out, save_transcoder
from saelab.models.handle import ModelHandle

CKPT_DIR = ".transcoders.partial"


@dataclass(kw_only=True)
class TranscoderTrainConfig(DictConfig):
    d_sae: int = 1152
    k: int = 16
    n_tokens: int = 2_000_000
    rows_per_step: int = 32  # corpus rows per forward (× seq_len tokens)
    seq_len: int = 128
    lr: float = 1e-3
    seed: int = 0
    threshold_momentum: float = 0.99
    checkpoint_steps: int = 50
    massive_factor: float = 10.0  # positions whose MLP output norm exceeds this × the median are left out (0: none)
    init_tokens: int = 65_536  # corpus tokens the skip path's least-squares start is fitted on

    def __post_init__(self) -> None:
        if not 1 <= self.k <= self.d_sae:
            raise BadInputError(f"k must be 1 … d_sae ({self.d_sae}), got {self.k}.")
        if self.n_tokens < self.rows_per_step * self.seq_len:
            raise BadInputError("n_tokens must cover at least one step (rows_per_step × seq_len).")


class _Layer(torch.nn.Module):
    def __init__(self, d: int, f: int, g: torch.Generator) -> None:
        super().__init__()
        W_dec = torch.randn(f, d, generator=g)
        W_dec /= W_dec.norm(dim=1, keepdim=True)
        self.W_dec = torch.nn.Parameter(W_dec * 0.1)
        self.W_enc = torch.nn.Parameter(W_dec.T.clone())
        self.b_enc = torch.nn.Parameter(torch.zeros(f))
        self.b_dec = torch.nn.Parameter(torch.zeros(d))
        self.W_skip = torch.nn.Parameter(torch.zeros(d, d))
        self.register_buffer("threshold", torch.zeros(()))
        self.register_buffer("fired", torch.zeros(f, dtype=torch.long))  # steps since each latent last fired
        self.register_buffer("y_scale", torch.ones(()))  # the layer trains on y / y_scale (set on the first batch)

    def step_forward(self, n: torch.Tensor, k: int, momentum: float) -> tuple[torch.Tensor, torch.Tensor]:
        pre = torch.relu(n @ self.W_enc + self.b_enc)
        kk = min(k * n.shape[0], pre.numel())
        vals, idx = pre.flatten().topk(kk)
        acts = torch.zeros_like(pre).flatten().scatter(0, idx, vals).view_as(pre)
        with torch.no_grad():
            pos = vals[vals > 0]
            if len(pos):
                m = float(pos.min())
                if self.threshold > 0:
                    self.threshold.mul_(momentum).add_((1 - momentum) * m)
                else:
                    self.threshold.fill_(m)
            fired = (acts > 0).any(0)
            self.fired.add_(1).masked_fill_(fired, 0)
        return acts @ self.W_dec + self.b_dec + n @ self.W_skip.T, acts

    def export(self, layer: int) -> Transcoder:
        """The transcoder in the model's units: inputs were scaled by 1/√d_in, outputs by 1/y_scale."""
        f, c, s = self.W_enc.shape[1], float(self.y_scale), self.W_enc.shape[0] ** -0.5
        return Transcoder(layer, self.W_enc.detach() * s, self.b_enc.detach().clone(), self.W_dec.detach() * c,
                          self.b_dec.detach() * c, self.W_skip.detach() * (c * s),
                          self.threshold.detach().expand(f).clone())  # fmt: skip


def ordinary(y: torch.Tensor, keep: torch.Tensor, factor: float) -> torch.Tensor:
    """`keep` without the positions where the MLP writes a massive output: norm above `factor` × the median norm
    over `keep` (SmolLM2's layer-2 MLP writes ~40× the median norm on some ' the' and digit tokens, which then act
    as attention sinks). A transcoder cannot rebuild them from sparse features and they would dominate its loss;
    they are left out of training and of the splice, like position 0, and in a graph their MLP output is error."""
    if factor <= 0 or not keep.any():
        return keep
    norm = y.float().norm(dim=-1)
    return keep & (norm <= factor * norm[keep].median())


def _init_linear(
    handle: ModelHandle,
    layers: torch.nn.ModuleList,
    tokens: torch.Tensor,
    keep: torch.Tensor,
    rows_per_step: int,
    massive_factor: float,
    ridge: float = 1e-2,
) -> None:
    """Each layer's output scale (RMS norm of the centred target on the first batch) and its skip path as the ridge
    least-squares affine map n → y (W_skip, b_dec) fitted on all of `tokens` (the first few batches: one batch
    holds too few rows for 576² weights; its fit scored NMSE 0.36 in-sample but ~0.7 on the next batch). The
    features then learn what the map leaves. The map is skipped when there are fewer than 16 samples per input
    dimension (an overfit map would start worse than zero)."""
    from saelab.hooks import cache_activations

    L, d = len(layers), layers[0].W_enc.shape[0]
    names = [hook_in(layer) for layer in range(L)] + [hook_out(layer) for layer in range(L)]
    stats = [dict(n=0, sn=0.0, sy=0.0, nn=0.0, ny=0.0) for _ in range(L)]
    for b in range(0, tokens.shape[0], rows_per_step):
        cache, mask = cache_activations(handle, tokens[b : b + rows_per_step], names), keep[b : b + rows_per_step]
        for layer in range(L):
            m = ordinary(cache[hook_out(layer)], mask, massive_factor)
            n, y = cache[hook_in(layer)][m].float() * d**-0.5, cache[hook_out(layer)][m].float()
            if b == 0:
                layers[layer].y_scale.fill_(float((y - y.mean(0)).pow(2).sum(1).mean().sqrt()) or 1.0)
            y = y / layers[layer].y_scale
            s = stats[layer]
            s["n"] += n.shape[0]
            s["sn"], s["sy"] = s["sn"] + n.sum(0), s["sy"] + y.sum(0)
            s["nn"], s["ny"] = s["nn"] + n.T @ n, s["ny"] + n.T @ y
    for layer, s in enumerate(stats):
        if s["n"] < 16 * d:
            continue
        with torch.no_grad():
            n_bar, y_bar = s["sn"] / s["n"], s["sy"] / s["n"]
            gram = s["nn"] - s["n"] * torch.outer(n_bar, n_bar)
            gram += torch.eye(d) * ridge * gram.diagonal().mean()
            W = torch.linalg.solve(gram, s["ny"] - s["n"] * torch.outer(n_bar, y_bar))  # [d_in, d_out]
            layers[layer].W_skip.copy_(W.T)
            layers[layer].b_dec.copy_(y_bar - n_bar @ W)


def _corpus(handle: ModelHandle, cfg: TranscoderTrainConfig):
    """The training rows and their keep mask (position 0 and separators left out)."""
    from saelab.corpus import CorpusConfig, build_corpus, separator_id, sink_mask

    corpus = build_corpus(handle.tokenizer, CorpusConfig(seq_len=cfg.seq_len, n_tokens=cfg.n_tokens, seed=cfg.seed))
    keep = sink_mask(corpus.tokens, separator_id(handle.tokenizer), first=True)
    return corpus, keep


def train_transcoders(handle: ModelHandle, cfg: TranscoderTrainConfig, out: str | Path,
                      progress: Callable[[int, int, dict[str, float]], None] | None = None) -> TranscoderSet:  # fmt: skip
    """Train every layer's transcoder (module docstring) and write `out/layer_<L>/` + `out/transcoders.json`."""
    from saelab.hooks import cache_activations
    from saelab.storage import load_tensors, read_json, save_tensors, write_json

    out = Path(out)
    L, d = handle.n_layers, handle.d_model
    g = torch.Generator().manual_seed(cfg.seed)
    layers = torch.nn.ModuleList([_Layer(d, cfg.d_sae, g) for _ in range(L)])
    skip = [p for name, p in layers.named_parameters() if name.endswith("W_skip")]
    rest = [p for name, p in layers.named_parameters() if not name.endswith("W_skip")]
    # the skip path starts at its least-squares optimum: it moves slowly (a tenth of the rate) while features grow
    opt = torch.optim.Adam([{"params": rest}, {"params": skip, "lr": cfg.lr * 0.1}], lr=cfg.lr, betas=(0.9, 0.999))
    corpus, keep = _corpus(handle, cfg)
    n_rows = int(corpus.tokens.shape[0])
    steps = n_rows // cfg.rows_per_step
    ckpt, start = out / CKPT_DIR, 0
    identity = {"config": cfg.to_dict(), "model": handle.name, "corpus": corpus.fingerprint()}
    if (ckpt / "state.json").is_file() and read_json(ckpt / "state.json").get("identity") == identity:
        state = read_json(ckpt / "state.json")
        layers.load_state_dict(load_tensors(ckpt / "layers.safetensors"))
        opt.load_state_dict(torch.load(ckpt / "adam.pt", weights_only=True))  # our own file, tensors only
        start = int(state["step"])
    names = [hook_in(layer) for layer in range(L)] + [hook_out(layer) for layer in range(L)]
    if start == 0:  # output scales, and the skip path as the least-squares map over the first batches
        init_rows = min(n_rows, max(1, cfg.init_tokens // cfg.seq_len))
        _init_linear(handle, layers, corpus.tokens[:init_rows], keep[:init_rows], cfg.rows_per_step,
                     cfg.massive_factor)  # fmt: skip
    t0, last = time.perf_counter(), {}
    for step in range(start, steps):
        rows = slice(step * cfg.rows_per_step, (step + 1) * cfg.rows_per_step)
        cache = cache_activations(handle, corpus.tokens[rows], names)
        mask = keep[rows]
        nmse = []
        opt.zero_grad(set_to_none=True)
        for layer in range(L):
            m = ordinary(cache[hook_out(layer)], mask, cfg.massive_factor)
            n = cache[hook_in(layer)][m].float() * d**-0.5  # |n| ≈ 1: encoder outputs O(1) at any width
            y = cache[hook_out(layer)][m].float() / layers[layer].y_scale
            y_hat, _ = layers[layer].step_forward(n, cfg.k, cfg.threshold_momentum)
            loss = (y_hat - y).pow(2).sum() / (y - y.mean(0)).pow(2).sum().clamp(min=1e-8)
            loss.backward()
            nmse.append(float(loss.detach()))
        opt.step()
        last = {"step": step + 1, "nmse_mean": sum(nmse) / L, "nmse_max": max(nmse),
                "tokens_per_s": (step + 1 - start) * int(mask.numel()) / (time.perf_counter() - t0)}  # fmt: skip
        if progress is not None:
            progress(step + 1, steps, last)
        if (step + 1) % cfg.checkpoint_steps == 0 and step + 1 < steps:
            ckpt.mkdir(parents=True, exist_ok=True)
            save_tensors(ckpt / "layers.safetensors", {k: v.contiguous() for k, v in layers.state_dict().items()})
            tmp = ckpt / "adam.pt.tmp"
            torch.save(opt.state_dict(), tmp)
            tmp.replace(ckpt / "adam.pt")
            write_json(ckpt / "state.json", {"identity": identity, "step": step + 1})
    tset = TranscoderSet(handle.name, {layer: layers[layer].export(layer) for layer in range(L)}, out)
    for layer, tc in tset.transcoders.items():
        dead = float((layers[layer].fired >= max(1, steps // 4)).float().mean())
        save_transcoder(tc, out / f"layer_{layer}", handle.name, {"dead_fraction_train": dead})
    write_json(out / SET_FILE, {"model": handle.name, "layers": list(range(L)), "config": cfg.to_dict(),
                                "corpus": corpus.provenance(), "last_step": last})  # fmt: skip
    shutil.rmtree(ckpt, ignore_errors=True)
    return tset


def evaluate_layers(handle: ModelHandle, tset: TranscoderSet, tokens: torch.Tensor,
                    massive_factor: float = 10.0) -> list[dict[str, Any]]:  # fmt: skip
    """Per layer on held-out `tokens` [rows, seq]: normalised MSE, L0, dead fraction, and the CE-loss score with
    that layer's MLP replaced by its transcoder: (CE_zero − CE_tc) / (CE_zero − CE_clean). As in `saelab eval`,
    replacement and zero-ablation act on the analysed positions only (not position 0, separators or massive MLP
    outputs (`ordinary`), which the transcoder never trained on; their share is `massive_fraction`), and the loss is
    taken over all non-sink positions."""
    from saelab.corpus import separator_id, sink_mask
    from saelab.hooks import cache_activations, run_with_hooks

    keep = sink_mask(tokens, separator_id(handle.tokenizer), first=True)
    names = [hook_in(layer) for layer in tset.layers] + [hook_out(layer) for layer in tset.layers]
    cache = cache_activations(handle, tokens, names)

    def ce(hooks) -> float:
        logits = run_with_hooks(handle, tokens, hooks, return_type="logits").float()
        lp = torch.log_softmax(logits[:, :-1], -1).gather(-1, tokens[:, 1:, None])[..., 0]
        m = keep[:, 1:]
        return float(-(lp * m).sum() / m.sum())

    clean = ce([])
    rows = []
    for layer in tset.layers:
        tc = tset[layer]
        n, y = cache[hook_in(layer)].float(), cache[hook_out(layer)].float()
        ok = ordinary(y, keep, massive_factor)
        acts = tc.encode(n[ok])
        y_hat = tc.decode(acts, n[ok])
        nmse = float((y_hat - y[ok]).pow(2).sum() / (y[ok] - y[ok].mean(0)).pow(2).sum())
        zero = ce([(hook_out(layer), lambda x, hook, ok=ok: torch.where(ok[..., None], torch.zeros_like(x), x))])
        store: dict[str, torch.Tensor] = {}

        def grab(x, hook, store=store):
            store["n"] = x

        def replace(x, hook, tc=tc, store=store, ok=ok):  # only where it was trained: sinks keep the real output
            return torch.where(ok[..., None], tc(store["n"].float()).to(x.dtype), x)

        rep = ce([(hook_in(layer), grab), (hook_out(layer), replace)])
        score = (zero - rep) / (zero - clean) if zero != clean else math.nan
        rows.append({"layer": layer, "nmse": nmse, "l0": float((acts > 0).sum(1).float().mean()),
                     "dead_fraction": float(((acts > 0).sum(0) == 0).float().mean()), "ce_clean": clean,
                     "massive_fraction": 1 - float(ok.sum()) / float(keep.sum()),
                     "ce_zero_ablated": zero, "ce_replaced": rep, "ce_loss_score": score})  # fmt: skip
    return rows


__all__ = ["TranscoderTrainConfig", "evaluate_layers", "train_transcoders"]
