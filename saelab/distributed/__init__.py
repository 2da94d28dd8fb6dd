"""Scale-out on Ray (issue 18): the same computations as one process, their pieces run by Ray actors.

Nothing here imports Ray until a pool is made (`ray_pool.RayModelPool`, `ray_harvest.RayShardRunner`), so the app
and every command without `--ray` run without it. Outputs are written by the driver exactly as the single-process
code writes them: `harvest --ray` (shards), `dashboards --ray` (the activations phase), `sweep --ray` (harvest, then
one run per actor).
"""

from __future__ import annotations

import argparse


def add_ray_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """`--ray [ADDRESS]` and `--ray-workers N` on a command; `what` says what the actors compute."""
    parser.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                        help=f"compute {what} on Ray actors: 'local' (no ADDRESS) starts a cluster here, 'auto' or "
                        "ray://host:port joins one (docs/cluster.md); the same output as without")  # fmt: skip
    parser.add_argument("--ray-workers", type=int, default=2, help="actors (model copies) with --ray (default 2)")


def shard_runner(args: argparse.Namespace, model_spec: str):
    """The `RayShardRunner` (also a `RayModelPool`) a command's `--ray` asks for, or None without it."""
    if getattr(args, "ray", None) is None:
        return None
    from saelab.distributed.ray_harvest import RayShardRunner

    return RayShardRunner(model_spec, address=args.ray, workers=args.ray_workers)


__all__ = ["add_ray_arguments", "shard_runner"]
