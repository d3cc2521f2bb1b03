"""The demo's named choices (kept apart so that parsing the command line imports nothing heavy)."""

ATTACKS = ("none", "sign_flip", "ipm", "alie", "gaussian")
RULES = ("mean", "trimmed_mean", "median", "meamed", "phocas", "krum", "geometric_median")
GRAPHS = ("ring", "circulant2", "exponential", "complete")
