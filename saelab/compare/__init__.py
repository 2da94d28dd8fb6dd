"""Compare SAEs of the same model: decoder-cosine feature matching (`matching`) and side-by-side core metrics
(`metrics`). The figures and exports are in `saelab.reports.compare`; `saelab compare` is the command line."""
