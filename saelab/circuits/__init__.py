"""Circuit discovery: which attention heads carry a task, by discrete SAE codes, activation and attribution patching.

Data flow: `tasks` (prompt pairs + metric) → `heads` (hook_z forwards) → `methods` registry (`discrete_sae`,
`patching`, `attribution`) → `evaluate` (against the activation-patching reference) → `run` (CircuitConfig →
CircuitResult); figures and exports of a `CircuitResult` live in `saelab.reports.circuits_figures` /
`saelab.reports.circuits`. See docs/circuits.md.
"""
