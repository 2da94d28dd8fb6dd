"""Steering playground: a prompt, direction(s) and strength(s) → unsteered and steered text side by side.

Directions: an SAE latent (preselected from `?latent=N`), DiffMean/PCA/LAT/probe from typed texts, or one
MLP neuron. Generation streams token by token; the steered latent's activation is highlighted over both
outputs; a strength sweep plots PROXY judge ratings against the factor; presets save and load as JSON.
All the work is in `saelab.steering` (backend) and `saelab.ui.steering` (caches).
"""

import pandas as pd
import streamlit as st

from saelab.errors import BadInputError
from saelab.reports import render
from saelab.reports.steering_figures import sweep_figure
from saelab.steering.generate import MAX_NEW_TOKENS, GenerationConfig, generate, sweep
from saelab.steering.interventions import FORMULAS, MAX_FACTOR, Intervention
from saelab.steering.presets import GENERATION_LIMITS, Preset, dumps_preset, loads_preset
from saelab.ui import steering as ui
from saelab.ui.errors import show_error
from saelab.ui.feature_context import open_features
from saelab.ui.latents import query_latent
from saelab.ui.progress import streamlit_bar
from saelab.ui.prompt import MAX_PROMPT_CHARS, token_decoder

SOURCES = ["SAE latent", "Texts (DiffMean / PCA / LAT / probe)", "MLP neuron"]
KINDS = ["add", "clamp", "ablate"]
POSITIONS = ["all", "prompt", "generated"]

st.title("Steering playground")
st.caption(
    "α = factor × max_act (AxBench). "
    + " · ".join(f"**{k}**: {v}" for k, v in FORMULAS.items())
    + ". Unsteered and steered runs share the seed and sampling settings, so the difference is the steering."
)
ctx = open_features(need_dashboards=False)
handle, loaded, spec = ctx.handle, ctx.loaded, ui.spec()
d_sae = int(loaded.sae.cfg.d_sae)
decode = token_decoder(handle)
try:
    url_latent = query_latent(d_sae)
except Exception as err:
    show_error(err)
    url_latent = None

if url_latent is not None:
    label_set = ctx.store.labels() if ctx.store is not None else None
    proxy_label = bool(label_set is not None and label_set.proxy)
    st.html(render.heading_html(url_latent, ctx.labels.get(url_latent) or None, proxy=proxy_label))
    st.page_link(
        "pages/explorer.py",
        label=f"Latent {url_latent} in the Feature Explorer",
        query_params={"latent": str(url_latent)},
    )

# ---------------------------------------------------------------- presets (load)
with st.expander("Presets: load a saved steering setup (JSON)"):
    upload = st.file_uploader("Preset file", type=["json"], key="steer_upload")
    pasted = st.text_area("…or paste preset JSON", key="steer_paste", height=80)
    raw = upload.getvalue() if upload is not None else pasted.strip()
    if raw and st.button("Load preset", key="steer_load"):
        try:
            preset = loads_preset(raw)
        except Exception as err:
            show_error(err)
        else:
            st.session_state["steer_preset"] = preset
            gen = preset.generation
            st.session_state.update(
                steer_prompt=preset.prompt,
                steer_max_new_tokens=gen.max_new_tokens,
                steer_temperature=float(gen.temperature),
                steer_top_p=float(gen.top_p),
                steer_seed=gen.seed,
                steer_chat_template=gen.chat_template,
                steer_system=gen.system_prompt or "",
            )
            st.rerun()

# ---------------------------------------------------------------- prompt and sampling
# Defaults through session_state (not `value=`), so a loaded preset can set these widgets.
for key, default in {
    "steer_prompt": "Tell me about your weekend.",
    "steer_chat_template": True,
    "steer_system": "",
    "steer_max_new_tokens": 48,
    "steer_temperature": 1.0,
    "steer_top_p": 1.0,
    "steer_seed": 0,
}.items():
    st.session_state.setdefault(key, default)
prompt = st.text_area("Prompt", key="steer_prompt", max_chars=MAX_PROMPT_CHARS, height=80)
c1, c2 = st.columns([1, 3])
chat = c1.checkbox("Chat template", key="steer_chat_template")
system = c2.text_input("System prompt (the prompting baseline: e.g. “Always mention football.”)", key="steer_system")
with st.expander("Sampling"):
    s1, s2, s3, s4 = st.columns(4)
    lim = GENERATION_LIMITS  # the same bounds a preset is checked against
    max_new = s1.number_input("New tokens", min_value=lim["max_new_tokens"][0], step=8, key="steer_max_new_tokens")
    temperature = s2.number_input("Temperature (0 = greedy)", *lim["temperature"], step=0.1, key="steer_temperature")
    top_p = s3.number_input("Top-p", *lim["top_p"], step=0.05, key="steer_top_p")
    seed = s4.number_input("Seed", *lim["seed"], step=1, key="steer_seed")
if int(max_new) > MAX_NEW_TOKENS:
    st.warning(f"{int(max_new):,} new tokens requested: capped at {MAX_NEW_TOKENS}, the most one generation makes.")
    max_new = MAX_NEW_TOKENS


# ---------------------------------------------------------------- directions → interventions
def strength_controls(key: str, default_factor: float = 2.0) -> tuple[str, float, str]:
    a, b, c = st.columns(3)
    kind = a.selectbox("Intervention", KINDS, key=f"{key}_kind")
    factor = b.number_input(
        f"Factor (|factor| ≤ {MAX_FACTOR:g})", value=default_factor, step=0.5, key=f"{key}_factor", format="%.2f"
    )
    positions = c.selectbox("Positions", POSITIONS, key=f"{key}_pos")
    return kind, float(factor), positions


def chosen_interventions() -> tuple[list[Intervention], list[str]]:
    """The interventions the widgets describe, and concept examples for the judge."""
    preset = st.session_state.get("steer_preset")
    if preset is not None:
        described = "; ".join(iv.describe() for iv in preset.interventions)
        st.info(f"Using the loaded preset's interventions: {render.md_esc(described, 1000)}")
        if st.button("Clear the preset", key="steer_clear_preset"):
            del st.session_state["steer_preset"]
            st.rerun()
        return preset.interventions, []
    sources = st.multiselect("Direction sources", SOURCES, default=[SOURCES[0]], key="steer_sources")
    out: list[Intervention] = []
    examples: list[str] = []
    problems: list[Exception] = []
    if SOURCES[0] in sources:
        st.markdown("**SAE latent** — decoder row of the latent; max_act = latent max activation × decoder norm")
        latent = st.number_input(
            "Latent", 0, d_sae - 1, url_latent if url_latent is not None else 0, key="steer_latent"
        )
        kind, factor, positions = strength_controls("steer_sae")
        out.append(Intervention(kind, ui.sae_direction(ctx.sae_path, int(latent), spec), factor, positions))
        examples += ui.latent_examples(ctx.store, int(latent), decode)
    if SOURCES[1] in sources:
        st.markdown("**Texts** — one example per line; activations at the hook over every token but the first")
        m1, m2 = st.columns([1, 2])
        method = m1.selectbox("Method", ["diffmean", "pca", "lat", "probe"], key="steer_method")
        resid = [n for n in handle.hook_names() if n.endswith("hook_resid_post")]
        hook = m2.selectbox(
            "Hook", resid, index=resid.index(loaded.hook) if loaded.hook in resid else 0, key="steer_hook"
        )
        t1, t2 = st.columns(2)
        pos = ui.split_lines(t1.text_area("Positive texts (the concept)", key="steer_pos"), "positive")
        neg = ui.split_lines(t2.text_area("Negative texts (without it)", key="steer_neg"), "negative")
        kind, factor, positions = strength_controls("steer_text")
        if not pos or not neg:
            problems.append(BadInputError("Type at least one positive and one negative text for the text direction."))
        else:
            try:
                direction = ui.text_direction(method, tuple(pos), tuple(neg), hook, int(seed), spec)
            except Exception as err:  # reported when a button is pressed; the other widgets still render
                problems.append(err)
            else:
                out.append(Intervention(kind, direction, factor, positions))
                examples += pos
    if SOURCES[2] in sources:
        st.markdown("**MLP neuron** — one-hot at `blocks.L.mlp.hook_post` (adds α·W_out[n] to the residual)")
        n1, n2 = st.columns(2)
        layer = n1.number_input("Layer", 0, handle.n_layers - 1, min(6, handle.n_layers - 1), key="steer_layer")
        neuron = n2.number_input("Neuron", 0, int(handle.cfg.d_mlp) - 1, 0, key="steer_neuron")
        kind, factor, positions = strength_controls("steer_neuron")
        out.append(Intervention(kind, ui.neuron_direction(int(layer), int(neuron), spec), factor, positions))
    if problems:
        raise problems[0]
    if not out:
        raise BadInputError("Choose at least one direction source.")
    return out, examples


setup_error: Exception | None = None  # shown when the user presses a button, so the page keeps all its widgets
interventions: list[Intervention] = []
concept_examples: list[str] = []
try:
    interventions, concept_examples = chosen_interventions()
    cfg = GenerationConfig(
        max_new_tokens=int(max_new),
        temperature=float(temperature),
        top_p=float(top_p),
        seed=int(seed),
        chat_template=bool(chat),
        system_prompt=system.strip() or None,
    )
except Exception as err:
    setup_error = err


def steered_latent(ivs: list[Intervention]) -> int | None:
    return next(
        (iv.sae_latent() for iv in ivs if iv.sae_latent() is not None and iv.direction.hook == loaded.hook), None
    )


# ---------------------------------------------------------------- generate (streamed)
if st.button("Generate", type="primary", key="steer_generate"):
    left, right = st.columns(2)
    left.markdown("**Unsteered**")
    right.markdown("**Steered**")
    slots = {"unsteered": left.empty(), "steered": right.empty()}

    on_token = ui.streaming_slots(slots)

    try:
        if setup_error is not None:
            raise setup_error
        result = generate(handle, prompt, interventions, cfg, loaded_sae=loaded, on_token=on_token)
    except Exception as err:
        show_error(err)
    else:
        st.session_state["steer_result"] = (
            result,
            interventions,
            Preset(prompt, cfg, interventions, model=handle.name),
        )
        for slot in slots.values():
            slot.empty()

stored = st.session_state.get("steer_result")
if stored is None:
    st.info("Results are not built yet: set a prompt and a direction, then press **Generate**.")
else:
    result, ivs, preset = stored
    latent = steered_latent(ivs)
    left, right = st.columns(2)
    for col, which, ids in (
        (left, "unsteered", result.unsteered_token_ids[0]),
        (right, "steered", result.steered_token_ids[0]),
    ):
        col.markdown(f"**{which.capitalize()}**")
        if latent is None or not ids:
            col.text(getattr(result, which)[0] or "(no tokens)")
            continue
        try:
            vals = ui.latent_values(ctx.sae_path, spec, tuple(ids), latent, tuple(result.prompt_token_ids[0]))
        except Exception as err:
            show_error(err)
            col.text(getattr(result, which)[0])
            continue
        scale = float(ivs[0].direction.meta.get("latent_max_act") or max(vals) or 1.0)
        col.html(render.highlight_tokens([decode(t) for t in ids], vals, scale))
        col.caption(f"Latent {latent} activation (read without steering): max {max(vals):.3g}, shading ÷ {scale:.3g}")
    st.caption(" · ".join(result.config["interventions"]) or "no intervention")
    for note in result.notes:
        st.caption(note)
    st.download_button(
        "Save this setup as a preset (JSON)",
        dumps_preset(preset),
        file_name="steering_preset.json",
        mime="application/json",
        key="steer_download",
    )

# ---------------------------------------------------------------- strength sweep
with st.expander("Strength sweep: concept, relevance and fluency against the factor (PROXY judge)"):
    factors_text = st.text_input("Factors", value="0, 0.5, 1, 2, 4", key="steer_sweep_factors")
    examples_text = st.text_area(
        "Concept examples for the judge (one per line; default: the latent's top contexts or your positive texts)",
        value="\n".join(concept_examples[:20]),
        key="steer_sweep_examples",
    )
    if st.button("Run sweep", key="steer_sweep"):
        try:
            if setup_error is not None:
                raise setup_error
            factors = ui.parse_factors(factors_text)
            examples = ui.split_lines(examples_text, "example")
            judge = ui.proxy_judge(tuple(examples), spec) if examples else None
            with streamlit_bar("Sweep (decode steps, every factor in one batch)") as progress:
                res = sweep(
                    handle, prompt, interventions, factors, cfg, loaded_sae=loaded, judge=judge, progress=progress
                )
        except Exception as err:
            show_error(err)
        else:
            if res.means:
                st.plotly_chart(sweep_figure(res.factors, res.means, title="Strength sweep"), key="steer_sweep_fig")
                st.caption(f"{res.judge.get('judge', 'PROXY judge')}. {res.judge.get('score', '')}")
            else:
                st.warning(
                    "No PROXY ratings: "
                    + (
                        "the judge module (saelab.steering.judges) is not available"
                        if examples
                        else "give concept examples for the judge"
                    )
                    + ". The texts are shown below without ratings."
                )
            st.dataframe(pd.DataFrame(ui.sweep_rows(res)), hide_index=True)
