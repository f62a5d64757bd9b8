"""The paper's experiments (E1–E4 of "Tiny language models") on top of the tinylm core.

presets (typed, validated) -> grid (jobs with keys and dependencies) -> executor (runs the jobs, each
one a step that leaves results.json) -> analyse (E1–E4 from results.json only) -> figures, render.
Only the CLI imports this package; nothing in the core imports it.
"""
