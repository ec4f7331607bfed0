"""Models: locating, fingerprinting and loading them (GGUF de-quantised once), chat-template
rendering identical to TRL's DPO, and sampling with adapters on one base model."""

from .generation import AdapterHost, sample
from .load import BUNDLED, ModelSpec, load_model, load_tokenizer, model_fingerprint
from .render import render_pair

__all__ = ["AdapterHost", "BUNDLED", "ModelSpec", "load_model", "load_tokenizer",
           "model_fingerprint", "render_pair", "sample"]
