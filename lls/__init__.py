"""LLS Studio library: Logit-Linear Selection of preference data (Aden-Ali et al., ICML 2026).

One folder per stage of the pipeline; each stage imports only the stages above it in this list,
never the CLI, and nothing in the package imports Streamlit:

- core: shared basics (errors, cache, stats, the pair record, behaviors, prompt sets, ranks)
- models: locating and loading models, chat-template rendering, sampling
- jobs: background jobs on disk, their runner process, memory estimates
- data: preference data: readers, shapes, hub presets, hygiene, validation
- scoring: the LLS weights: engine, scoring runs, selection, contrastive, transfer
- evaluation: measuring the behavior: sampled evaluation, judge, effect meter, chat
- training: LoRA + DPO with TRL's DPOTrainer, the adapter registry
- studies: grids of cells, each LLS adapter with its random twin
- cli: `python -m lls ...`, one module per command group

Import from the stage: `from lls.scoring import ScoreConfig, score`,
`from lls.training import TrainConfig, train`.
"""

__version__ = "0.1.0"
