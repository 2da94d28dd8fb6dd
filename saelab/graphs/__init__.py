"""Attribution graphs (issue 19): trace a prompt through per-layer skip-transcoder features, offline on a CPU.

`transcoders` (what replaces each MLP), `linearised` (the local replacement model: frozen attention patterns and
norm scales, transcoders plus error nodes), `attribution` (direct effects between tokens, features, errors and
logits by batched backward passes), `prune` (influence, pruning, replacement and completeness scores).
"""
