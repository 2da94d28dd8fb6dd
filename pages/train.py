"""Train an SAE: harvest activations, train, evaluate and build dashboards as one job, with live curves."""

import streamlit as st

from saelab.ui.errors import show_error
from saelab.ui.train import (
    default_name,
    follow_training,
    make_request,
    make_sweep,
    output_status,
    start_sweep,
    start_training,
    sweep_options,
    sweep_states,
    train_choices,
)
from saelab.ui.train import uses_k as takes_k

st.title("Train an SAE")
st.caption(
    "Harvests the model's activations at a hook over the corpus's training split, trains an SAE on them with "
    "SAE-Lens, evaluates it on held-out text (eval.json) and builds its dashboards and proxy labels, as one job "
    "on this server's queue (one heavy job at a time; cancel it in the sidebar or below). The SAE is saved in "
    "the features folder and appears in the SAE picker. A cancelled run resumes when started again."
)
try:
    choices = train_choices()
except Exception as err:
    show_error(err)
    st.stop()

c1, c2, c3 = st.columns(3)
hook = c1.selectbox("Hook", choices.hooks, index=choices.hooks.index(choices.default_hook), key="train_hook")
arch = c2.selectbox("Architecture", choices.architectures, index=choices.architectures.index("topk"), key="train_arch")
d_sae = c3.number_input("Width d_sae", 1, 65_536, 8 * choices.d_model, step=64, key="train_d_sae")
c1, c2, c3 = st.columns(3)
if takes_k(arch):
    k = c1.number_input("k (active latents)", 1, 1024, 32, key="train_k")
    coefficient = None
else:
    k = 32
    coefficient = c1.number_input("Sparsity coefficient (L1; L0 for jumprelu)", 0.0, 1e4, 5.0, format="%g",
                                  key="train_coefficient")  # fmt: skip
n_tokens = c2.number_input(f"Tokens to harvest ({choices.min_tokens:,}–{choices.max_tokens:,})", choices.min_tokens,
                           choices.max_tokens, choices.default_tokens, step=10_000, key="train_tokens")  # fmt: skip
lr = c3.number_input("Learning rate", 1e-6, 0.5, 3e-4, format="%g", key="train_lr")
c1, c2 = st.columns(2)
seed = c1.number_input("Seed", 0, 2**31 - 1, 0, key="train_seed")
name = c2.text_input("Output name (a folder in the features folder)", placeholder=default_name(hook, arch, int(d_sae)),
                     max_chars=64, key="train_name").strip() or default_name(hook, arch, int(d_sae))  # fmt: skip
with st.expander("Evaluation and dashboards"):
    e1, e2, e3 = st.columns(3)
    eval_tokens = e1.number_input("Held-out tokens to evaluate", 128, 262_144, 16_384, step=1024, key="train_eval")
    dash_tokens = e2.number_input("Dashboard tokens (at most)", 128, 1_048_576, 65_536, step=1024, key="train_dash")
    label_tokens = e3.number_input(
        "Held-out tokens to score labels", 128, 262_144, 16_384, step=1024, key="train_label"
    )

sweep_mode = st.toggle("Sweep: train a small grid of SAEs, one after another, from one harvest", key="train_sweep")
grid: dict[str, list] = {}
if sweep_mode:
    options = sweep_options(choices.d_model, arch)
    s1, s2 = st.columns(2)
    axis = "k" if takes_k(arch) else "coefficient"
    default_axis = [v for v in (16, 32, 64, 128) if v in options[axis]] if axis == "k" else options[axis][1:4]
    grid[axis] = s1.multiselect("k values" if axis == "k" else "Sparsity coefficients", options[axis],
                                default=default_axis, key=f"train_sweep_{axis}")  # fmt: skip
    width_options = sorted({*options["d_sae"], int(d_sae)})
    grid["d_sae"] = s2.multiselect("Widths d_sae", width_options, default=[int(d_sae)], key="train_sweep_d_sae")
    sweep_hooks = st.multiselect("Hooks (one harvest pass feeds them all)", choices.hooks, default=[hook],
                                 key="train_sweep_hooks")  # fmt: skip
    if len(sweep_hooks) > 1:
        grid["hook"] = sweep_hooks

on_ray = st.toggle("Run on Ray: harvest shards and dashboards (and a sweep's runs, side by side) on Ray actors",
                   key="train_ray", help="docs/cluster.md: 'local' starts a private cluster here; 'auto' or "
                   "ray://host:port joins a running one (outputs must be on a filesystem every node shares)")  # fmt: skip
ray = None
if on_ray:
    r1, r2 = st.columns(2)
    ray = (r1.text_input("Ray address", "local", key="train_ray_address"),
           int(r2.number_input("Ray workers (model copies)", 1, 64, 2, key="train_ray_workers")))  # fmt: skip
    if sweep_mode:
        st.caption("On Ray each actor trains one run at a time; the page reports runs as they finish (no live curves).")

try:
    request = make_request(
        name=name, hook=hook, architecture=arch, d_sae=int(d_sae), k=int(k),
        coefficient=float(coefficient) if coefficient is not None else None, n_tokens=int(n_tokens), lr=float(lr),
        seed=int(seed), eval_tokens=int(eval_tokens), dashboard_tokens=int(dash_tokens), label_tokens=int(label_tokens),
    )  # fmt: skip
    sweep = make_sweep(request, grid) if sweep_mode else None
    status = sweep_states(sweep) if sweep is not None else output_status(request)
except Exception as err:
    show_error(err)
    request, sweep, status = None, None, None
if isinstance(status, dict):  # a sweep: each run's state
    n_done = sum(v == "done" for v in status.values())
    st.caption(f"{len(status)} runs: {', '.join(f'`{r}`' for r in status)}"
               + (f" ({n_done} already trained: skipped)" if n_done else "")
               + ". Each appears in the SAE picker and on the Compare page's Pareto plot.")  # fmt: skip
    if st.button(f"Start sweep ({len(status)} runs)", type="primary", disabled=n_done == len(status),
                 key="train_sweep_start") and sweep is not None:  # fmt: skip
        try:
            start_sweep(sweep, ray)
        except Exception as err:
            show_error(err)
else:
    if status == "resume":
        st.caption(f"`{name}` is an unfinished run of these settings: starting resumes it.")
    elif status == "running":
        st.caption(f"`{name}` with these settings is queued or running (below and in the sidebar).")
    elif status == "done":
        st.caption(f"`{name}` is trained; change the name or a setting to train another.")
    if (
        st.button("Start training", type="primary", disabled=request is None or status == "done", key="train_start")
        and request is not None
    ):
        try:
            start_training(request, ray)
        except Exception as err:
            show_error(err)

st.subheader("Run")
follow_training()
