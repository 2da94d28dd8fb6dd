"""Bench: decoder matching of two 4,608-latent SAEs (d_in 576, the default model's width) → bench/results/compare.json.

Random decoders are the solver's worst case (no structure); a permuted copy is the easy case and must be
recovered exactly. The bar: ≤ 10 s for the exact 4,608 × 4,608 assignment on this machine.
"""

from __future__ import annotations

import time

import numpy as np
from common import write_results

from saelab.compare.matching import match_decoders

D_SAE, D_IN, BAR_S = 4608, 576, 10.0


def main() -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((D_SAE, D_IN)).astype(np.float32)
    b = rng.standard_normal((D_SAE, D_IN)).astype(np.float32)
    t0 = time.perf_counter()
    r = match_decoders(a, b)
    random_s = time.perf_counter() - t0
    perm = rng.permutation(D_SAE)
    t0 = time.perf_counter()
    p = match_decoders(a, a[perm])
    perm_s = time.perf_counter() - t0
    recovered = p.pairs_b == np.argsort(perm).tolist()
    write_results(
        "compare",
        figures={
            "random_4608x4608_s": random_s,
            "permuted_4608x4608_s": perm_s,
            "permutation_recovered": recovered,
            "method": r.method,
            "exact": r.exact,
        },  # fmt: skip
        ratios={"random_s_vs_10s_bar": random_s / BAR_S, "permuted_s_vs_10s_bar": perm_s / BAR_S},
        config={"d_sae": D_SAE, "d_in": D_IN},
        notes=["match_decoders: chunked float32 cosine matrix, best matches both ways, exact linear_sum_assignment."],
    )


if __name__ == "__main__":
    main()
