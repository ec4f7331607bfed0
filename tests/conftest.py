"""Shared fixtures: the real test data in ../shared/data and the bundled model.

The whole suite runs offline against a session cache directory (LLS_CACHE), so tests never
touch the developer's ./cache. The bundled GGUF model is de-quantised into it once.
"""

from __future__ import annotations

import os
import secrets
import signal
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
HH = SHARED / "hh_rlhf_harmless_base_test.jsonl.gz"
ORCA = SHARED / "orca_dpo_pairs_sample.csv"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# "auto" precision is float32 in the suite on every host (its tolerances are float32's; a CPU
# with bfloat16 units would otherwise pick bfloat16). The bfloat16 tests ask for it by name.
os.environ.setdefault("LLS_DTYPE", "float32")

# Every process this session starts inherits this mark (subprocesses, job runners and their
# commands, the Streamlit server, chromedriver and Chromium), even once reparented to init,
# so a process left behind by a test is found by its environment, not by its parent.
MARK = "LLS_TEST_SESSION"
os.environ[MARK] = f"{os.getpid()}-{secrets.token_hex(4)}"
LEFT_BEHIND_GRACE_S = 20.0  # a finished job's runner may still be writing its last status


FORCE_BF16 = "LLS_FORCE_BF16_TESTS"


def bf16_device() -> str | None:
    """Where bfloat16 runs on real bfloat16 units: "cuda", "cpu" (avx512_bf16 / amx_bf16 in
    /proc/cpuinfo, or LLS_FORCE_BF16_TESTS=1: slowly without those units), else None."""
    import torch

    from lls.models.load import cpu_bf16_flag

    if torch.cuda.is_available():
        return "cuda"
    if cpu_bf16_flag() or os.environ.get(FORCE_BF16) == "1":
        return "cpu"
    return None


needs_bf16 = pytest.mark.skipif(
    bf16_device() is None,
    reason="no bfloat16 units here: the CPU reports neither avx512_bf16 nor amx_bf16 in "
           f"/proc/cpuinfo and there is no CUDA device ({FORCE_BF16}=1 runs it anyway, slowly)")


def session_processes() -> list[tuple[int, str]]:
    """(pid, command line) of the live processes started by this test session (not itself)."""
    mark = f"{MARK}={os.environ[MARK]}".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            if mark not in Path(f"/proc/{name}/environ").read_bytes().split(b"\0"):
                continue
            if Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()[0] in "ZX":
                continue  # a zombie holds nothing; its parent reaps it
            cmd = Path(f"/proc/{name}/cmdline").read_bytes().replace(b"\0", b" ")
        except (OSError, IndexError):
            continue  # gone meanwhile, or not ours to read
        found.append((int(name), cmd.decode(errors="replace").strip()[:200]))
    return found


def active_jobs(cache: Path) -> list:
    """Queued or running jobs in the session cache (a dead runner's job reads as failed)."""
    from lls.jobs.store import JobStore

    return [j for j in JobStore(cache / "jobs").list_jobs() if j.is_active]


def _left_behind(cache: Path, grace: float) -> tuple[list[tuple[int, str]], list]:
    """Processes and active jobs still there after up to `grace` seconds."""
    deadline = time.monotonic() + grace
    while True:
        procs, running = session_processes(), active_jobs(cache)
        if (not procs and not running) or time.monotonic() > deadline:
            return procs, running
        time.sleep(0.2)


def _clean_up(procs: list[tuple[int, str]], running: list) -> None:
    """Cancel the jobs and kill the processes, so one test's leftovers cannot slow or block
    the tests after it."""
    from lls.jobs import store as jobs

    for j in running:
        try:
            jobs.cancel(j.id)
        except Exception:  # noqa: BLE001 - best effort; the kill below still runs
            pass
    for pid, _ in procs:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


@pytest.fixture(autouse=True)
def no_process_left_behind(request, session_cache):
    """Fail a test that leaves a process or an active job behind (and clean it up).

    Function fixtures of the test (servers, drivers) are torn down before this one, so what
    is found here was left by the test itself."""
    yield
    procs, running = _left_behind(session_cache, LEFT_BEHIND_GRACE_S)
    if procs or running:
        _clean_up(procs, running)
        lines = [f"  pid {pid}: {cmd}" for pid, cmd in procs]
        lines += [f"  job {j.id} ({j.kind}, {j.status}): {j.title}" for j in running]
        pytest.fail(f"{request.node.nodeid} left processes or jobs running:\n"
                    + "\n".join(lines), pytrace=False)


def pytest_sessionfinish(session, exitstatus):
    """The last line of defence: nothing this session started may outlive it."""
    procs = session_processes()
    if procs:
        _clean_up(procs, [])
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        print("\nerror: the test session left processes running (killed now):\n"
              + "\n".join(f"  pid {pid}: {cmd}" for pid, cmd in procs))


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory) -> Path:
    """A cache directory for the whole session (models, scores, jobs)."""
    path = Path(os.environ.get("LLS_TEST_CACHE") or tmp_path_factory.mktemp("lls-cache"))
    os.environ["LLS_CACHE"] = str(path)
    return path


def tiny_llama():
    """A tiny randomly initialised llama (transformers' LlamaForCausalLM, 2 layers, vocab 128),
    eval mode, with SDPA attention as `lls.models.load` uses; seeded, so always the same."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=256, bos_token_id=0, eos_token_id=1,
                      pad_token_id=0)
    cfg._attn_implementation = "sdpa"
    return LlamaForCausalLM(cfg).eval()


def make_adapter(base_model, path: Path, seed: int = 0, *, r: int = 8,
                 lora_alpha: int = 16) -> Path:
    """A real peft LoRA adapter on q/v with non-zero B (so it changes outputs), saved to `path`
    (the base model is copied, not wrapped)."""
    import copy

    import torch
    from peft import LoraConfig, get_peft_model

    from lls.models.load import quiet_third_party_aliases

    torch.manual_seed(seed)
    cfg = LoraConfig(r=r, lora_alpha=lora_alpha, target_modules=["q_proj", "v_proj"],
                     init_lora_weights=False)
    with quiet_third_party_aliases():
        get_peft_model(copy.deepcopy(base_model), cfg).save_pretrained(str(path))
    return path


@pytest.fixture(scope="session")
def bundled(session_cache):
    """(model, tokenizer): the bundled SmolLM2-135M-Instruct, float32 on CPU, loaded once."""
    from lls.models.load import ModelSpec, load_model

    return load_model(ModelSpec(dtype="float32"))


@pytest.fixture(scope="session")
def hh_pairs(bundled):
    """The first 24 clean hh-rlhf pairs with prompts of at most 192 tokens."""
    from lls.data.source import DataSpec, iter_pairs

    _, tok = bundled
    return list(iter_pairs(DataSpec(str(HH), limit=24), tokenizer=tok, max_prompt_tokens=192))


@pytest.fixture(scope="session")
def small_run(bundled):
    """A finished scoring run: 24 hh-rlhf pairs, owl, truncation 32, chunks of 8."""
    from lls.core import behaviors
    from lls.data.source import DataSpec
    from lls.scoring.runs import ScoreConfig, score

    model, tok = bundled
    cfg = ScoreConfig(DataSpec(str(HH), limit=24), behaviors.animal("owl"),
                      max_prompt_tokens=192, chunk_size=8)
    return score(cfg, model=model, tokenizer=tok)


@pytest.fixture(scope="session")
def owl_control_runs(bundled):
    """(config, target run, control run): 12 hh-rlhf pairs, prompts <= 192 tokens, chunks of
    4, scored with the owl prompt and with the default neutral control (what Setup builds)."""
    from lls.core import behaviors
    from lls.scoring.contrastive import score_control
    from lls.data.source import DataSpec
    from lls.scoring.runs import ScoreConfig, score

    model, tok = bundled
    cfg = ScoreConfig(DataSpec(str(HH), limit=12), behaviors.animal("owl"),
                      max_prompt_tokens=192, chunk_size=4)
    target = score(cfg, model=model, tokenizer=tok)
    control = score_control(cfg, model=model, tokenizer=tok)
    return cfg, target, control
