"""`saelab steer`: a prompt, one or more directions and strengths → unsteered vs steered text.

Examples:
    saelab steer --prompt "Tell me about your day." --latent 123 --factor 2
    saelab steer --prompt "Write a story." --method diffmean --pos sports.txt --neg other.txt --factor 1.5
    saelab steer --prompt "Hi" --neuron 5:100 --kind clamp --factor 3 --positions generated
    saelab steer --preset my_preset.json            (a preset saved from the page)
Texts files hold one text per line. Factors pair with directions in order (SAE latents, then the text
direction, then neurons); a single factor applies to all. α = factor × max_act (AxBench).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from saelab.defaults import DEFAULT_HOOK, DEFAULT_MODEL, default_sae_dir
from saelab.errors import BadInputError


def _default_sae() -> Path:
    return default_sae_dir()


def _read_lines(path: str) -> list[str]:
    p = Path(path)
    if not p.is_file():
        raise BadInputError(f"No texts file at {p} (one text per line).")
    try:
        return [line for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError as err:
        raise BadInputError(f"{p} is not UTF-8 text ({err.reason}).") from err


def _parse_neuron(spec: str) -> tuple[int, int]:
    try:
        layer, neuron = (int(x) for x in spec.split(":"))
    except ValueError:
        raise BadInputError(f"--neuron takes LAYER:INDEX, e.g. 5:100; got {spec!r}.") from None
    return layer, neuron


def cmd_steer(args: argparse.Namespace) -> int:
    from saelab.models import load_model
    from saelab.sae.files import load_sae
    from saelab.steering.direction_sources import neuron_direction, sae_latent_direction, text_direction
    from saelab.steering.generate import GenerationConfig, generate
    from saelab.steering.interventions import MAX_FACTOR, Intervention
    from saelab.steering.presets import Preset, load_preset, save_preset

    # Checks that need no model come first, so a typo fails in a second rather than after loading.
    cfg = GenerationConfig(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
        chat_template=not args.no_chat,
        system_prompt=args.system,
    )
    for f in args.factor or []:
        if not math.isfinite(f) or abs(f) > MAX_FACTOR:
            raise BadInputError(f"--factor {f:g} is not a finite number with |factor| ≤ {MAX_FACTOR:g}.")
    handle = load_model(args.model)
    loaded = None
    if args.latent or args.kind == "clamp" or args.sae:
        loaded = load_sae(args.sae or _default_sae(), handle=handle)
    if args.preset:
        preset = load_preset(args.preset)
        prompts = args.prompt or [preset.prompt]
        cfg, interventions = preset.generation, preset.interventions
    else:
        if not args.prompt:
            raise BadInputError("Give a prompt with --prompt (or a preset with --preset).")
        prompts = args.prompt
        directions = [sae_latent_direction(loaded, latent, handle=handle) for latent in args.latent or []]
        if args.method:
            if not (args.pos and args.neg):
                raise BadInputError(f"--method {args.method} needs --pos and --neg texts files.")
            hook = args.hook or (loaded.hook if loaded else DEFAULT_HOOK)
            pos, neg = _read_lines(args.pos), _read_lines(args.neg)
            directions.append(text_direction(handle, args.method, pos, neg, hook=hook, seed=args.seed))
        for spec in args.neuron or []:
            directions.append(neuron_direction(handle, *_parse_neuron(spec)))
        if not directions:
            raise BadInputError("Choose a direction: --latent, --method with --pos/--neg, or --neuron.")
        factors = args.factor or [1.0]
        if len(factors) not in (1, len(directions)):
            raise BadInputError(f"Give one --factor, or one per direction ({len(directions)}); got {len(factors)}.")
        factors = factors * len(directions) if len(factors) == 1 else factors
        interventions = [Intervention(args.kind, d, f, positions=args.positions) for d, f in zip(directions, factors)]
        cfg = GenerationConfig(
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            top_p=args.top_p,
            seed=args.seed,
            chat_template=not args.no_chat,
            system_prompt=args.system,
        )
    result = generate(handle, prompts, interventions, cfg, loaded_sae=loaded)
    if args.save_preset:
        save_preset(Preset(prompts[0], cfg, interventions, model=handle.name), args.save_preset)
    if args.json:
        print(json.dumps(result.to_dict(), indent=1))
        return 0
    print("interventions: " + ("; ".join(result.config["interventions"]) or "none"))
    for i, prompt in enumerate(result.prompts):
        print(f"\n=== prompt {i + 1}: {prompt}\n--- unsteered\n{result.unsteered[i]}\n--- steered\n{result.steered[i]}")
    for note in result.notes:
        print(f"note: {note}")
    return 0


def register(sub) -> None:
    """Add `saelab steer` to the CLI's subparsers."""
    p = sub.add_parser("steer", help="generate unsteered vs steered text for a prompt and steering direction(s)")
    p.add_argument("--prompt", action="append", help="prompt text (repeat for a batch)")
    p.add_argument("--model", default=DEFAULT_MODEL, help="model spec (default: %(default)s)")
    p.add_argument("--sae", help="SAE folder for --latent / clamp (default: cached_features/default)")
    p.add_argument("--latent", type=int, action="append", help="SAE latent index (repeatable)")
    p.add_argument("--method", choices=["diffmean", "pca", "lat", "probe"], help="direction from --pos/--neg texts")
    p.add_argument("--pos", help="file of positive texts, one per line")
    p.add_argument("--neg", help="file of negative texts, one per line")
    p.add_argument("--hook", help="hook for --method (default: the SAE's hook or blocks.12.hook_resid_post)")
    p.add_argument("--neuron", action="append", help="MLP neuron LAYER:INDEX (repeatable)")
    p.add_argument("--factor", type=float, action="append", help="strength per direction; α = factor × max_act")
    p.add_argument("--kind", choices=["add", "clamp", "ablate"], default="add")
    p.add_argument("--positions", choices=["all", "prompt", "generated"], default="all")
    p.add_argument("--max-new-tokens", type=int, default=64, help="new tokens (cap 256)")
    p.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-chat", action="store_true", help="do not wrap the prompt in the chat template")
    p.add_argument("--system", help="system prompt (the prompting baseline)")
    p.add_argument("--preset", help="load prompt, settings and interventions from a preset JSON")
    p.add_argument("--save-preset", help="write this run's preset JSON here")
    p.add_argument("--json", action="store_true", help="print the SteeringResult as JSON")
    p.set_defaults(func=cmd_steer)
