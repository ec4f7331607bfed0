"""LLS Studio library: Logit-Linear Selection of preference data (Aden-Ali et al., ICML 2026).

One idea per module (nothing in this package imports Streamlit; the CLI depends on the
stages, never the reverse):

- behaviors: target behaviors (system prompt, filter words, metric)
- cache: atomic, verified chunk storage under cache/
- chat: side-by-side streaming chat over one base model with adapters
- cli: `python -m lls ...`, one module per command group
- contrastive: ranking by w_target - w_control (control runs)
- data: preference data loaders, hub presets, hygiene report
- distributed: ranks and barriers under `accelerate launch`
- engine: the scoring engine (log-probabilities, LLS weights)
- errors: LLSError and its subclasses
- evaluation: the paper's behavior evaluation, metrics, LLM judge
- explain: per-token attribution of a pair's weight
- generation: batched sampling
- job_runner: the detached process that runs one background job
- jobs: background jobs on disk (submit, list, cancel; worker-side progress)
- meter: log-probability read-outs of the behavior during training
- models: locating, fingerprinting and loading models
- pair: the preference pair record
- render: chat-template rendering identical to TRL's DPO
- scoring: scoring runs (cache keys, chunked resumable runs, hygiene check, job submission)
- selection: top-gamma / threshold / random selection and export
- stats: Wilson and bootstrap intervals
- synthetic: synthetic runs, a tiny model and pairs for tests and benchmarks
- training: LoRA + DPO training with TRL
- transfer: teacher vs student weight agreement on the same pairs
"""

__version__ = "0.1.0"
