"""LLS Studio library: Logit-Linear Selection of preference data (Aden-Ali et al., ICML 2026).

One idea per module (nothing in this package imports Streamlit; the CLI depends on the
stages, never the reverse):

- adapters: the adapter registry (trained adapters, checkpoints, random twins)
- behaviors: target behaviors (system prompt, filter words, metric)
- cache: atomic, verified chunk storage under cache/; JSON/JSONL and file-hash helpers
- chat: side-by-side streaming chat over one base model with adapters
- cli: `python -m lls ...`, one module per command group
- contrastive: ranking by w_target - w_control (control runs)
- data: preference data: DataSpec, the pair stream
- distributed: ranks and barriers under `accelerate launch`
- dpo: TRL glue for LoRA-DPO (trainer class, LoRA config, reference-log-prob reuse)
- effects: paired LLS - random effects, sampled one-word read-out, collapse flags
- engine: log-probabilities of completions and LLS weights (the scoring engine)
- errors: LLSError and its subclasses
- eval_config: what an evaluation samples (models, prompts, settings) and its key
- evaluation: the paper's sampled behavior evaluation as resumable jobs
- explain: per-token attribution of a pair's weight
- generation: batched sampling, adapters attached to one base model
- hub: hub dataset presets and streaming
- hygiene: drop reasons, counts and advice (HygieneReport)
- job_runner: the detached process that runs one background job
- jobs: background jobs on disk (submit, list, cancel; worker-side progress)
- judge: an LLM judge by label log-probabilities
- lifecycle: scoring run states (running, complete, failed, interrupted)
- llr: the behavior likelihood ratio and its reference set
- meter: the effect meter's entry points (read-outs of models and checkpoints)
- models: locating, fingerprinting and loading models
- pair: the preference pair record
- probe: the preference probe (one-word favourite questions)
- prompts: prompt sets: general questions, probe questions, reference prompts
- readers: local files: formats, compression, streaming rows
- render: chat-template rendering identical to TRL's DPO
- scoring: scoring runs (cache keys, chunked resumable runs, hygiene check, job submission)
- selection: top-gamma / threshold / random selection and export
- shapes: rows to pairs: transcripts, messages, columns, pairwise exports
- stats: Wilson and bootstrap intervals
- study: studies: grids of cells, each LLS adapter with its random twin; results
- study_runner: running a study's queue (here, as a job, or through submitit)
- synthetic: synthetic runs, a tiny model and pairs for tests and benchmarks
- train_callback: checkpoints, evals and meter read-outs during training
- train_cancel: cancelling training safely (SIGTERM, guarded saves)
- train_config: TrainConfig and SelectionSpec: one declaration per training option
- training: LoRA + DPO training runs with TRL: resume, submission
- transfer: teacher vs student weight agreement on the same pairs
- validate: the whole-source validation pass before any model loads
"""

__version__ = "0.1.0"
