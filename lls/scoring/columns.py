"""The columns of a scoring run's chunks (every kind of run writes exactly these)."""

COLUMNS = ("index", "id", "source", "prompt", "chosen", "rejected", "chosen_scored",
           "rejected_scored", "prompt_tokens", "lc_s", "lr_s", "lc", "lr", "n_c", "n_r", "w")
