"""Models: locating, fingerprinting and loading them (GGUF de-quantised once), chat-template
rendering identical to TRL's DPO, the batched decoder and its thread policy, and sampling with
adapters on one base model."""

from .decoder import decode, seed_for
from .generation import AdapterHost, sample
from .load import BUNDLED, ModelSpec, load_model, load_tokenizer, model_fingerprint
from .render import render_pair
from .threads import use_threads

__all__ = ["AdapterHost", "BUNDLED", "ModelSpec", "decode", "load_model", "load_tokenizer",
           "model_fingerprint", "render_pair", "sample", "seed_for", "use_threads"]
