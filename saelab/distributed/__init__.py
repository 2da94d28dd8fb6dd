"""Scale-out on Ray (issue 18): the same computations as one process, their shards run by Ray actors.

Nothing here imports Ray until a Ray runner is made (`ray_harvest.RayShardRunner`), so the app and every command
without `--ray` run without it. Outputs are written by the driver exactly as the single-process code writes them.
"""
