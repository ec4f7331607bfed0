"""Teachers whose trait is in their weights: an adapter on/off, a full model vs its base.

On a tiny random Llama with the bundled tokenizer: w of an adapter teacher equals the formula
computed by hand from plain forward passes; toggling the adapter gives exactly the base;
cache keys follow the adapter's content; the neutral half is shared with prompt runs."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from conftest import make_adapter

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny(session_cache):
    from lls.models.load import ModelSpec, load_model
    from lls.scoring.synthetic import tiny_model_dir

    path = tiny_model_dir(session_cache / "tiny-model")
    spec = ModelSpec(str(path))
    model, tok = load_model(spec)
    return spec, model, tok


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    from lls.scoring.synthetic import synthetic_pairs_file

    return synthetic_pairs_file(tmp_path_factory.mktemp("teacher") / "pairs.jsonl", 10)


@pytest.fixture(scope="module")
def teacher_adapter(tiny, tmp_path_factory):
    _, model, _ = tiny
    return make_adapter(model, tmp_path_factory.mktemp("trait") / "owl-trait", seed=3)


def _logp(model, prompt: list[int], completion: list[int]) -> float:
    """log P(completion | prompt) by one plain forward pass (the hand computation)."""
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        lp = torch.log_softmax(model(input_ids=ids).logits.float()[0, :-1], -1)
    n = len(prompt)
    return float(sum(lp[n - 1 + t, tok] for t, tok in enumerate(completion)))


def _hand_w(teacher_model, base_model, r) -> float:
    lt = _logp(teacher_model, r.prompt_base, r.chosen_base) - \
        _logp(teacher_model, r.prompt_base, r.rejected_base)
    lb = _logp(base_model, r.prompt_base, r.chosen_base) - \
        _logp(base_model, r.prompt_base, r.rejected_base)
    return (lt - lb) / (len(r.chosen_base) + len(r.rejected_base))


def test_adapter_teacher_w_is_the_formula_by_hand(tiny, pairs_file, teacher_adapter):
    from peft import PeftModel

    from lls.core.behaviors import animal
    from lls.data.source import DataSpec
    from lls.models.render import render_pair
    from lls.models.teacher import Teacher
    from lls.scoring.runs import ScoreConfig, score

    spec, model, tok = tiny
    cfg = ScoreConfig(DataSpec(str(pairs_file)), animal("owl"), model=spec, truncation=8,
                      chunk_size=4, teacher=Teacher("adapter", str(teacher_adapter)))
    run = score(cfg)
    frame = run.frame()
    assert len(frame) == 10 and run.manifest["teacher_fingerprint"].startswith("adapter-")
    # by hand: a fresh copy of the base with the adapter, and the base alone
    import copy

    trait = PeftModel.from_pretrained(copy.deepcopy(model), str(teacher_adapter)).eval()
    from lls.data.source import iter_pairs

    pairs = list(iter_pairs(DataSpec(str(pairs_file))))
    for p, (_, row) in zip(pairs, frame.iterrows()):
        r = render_pair(tok, p, None, 8)
        assert row["id"] == p.id
        assert row["w"] == pytest.approx(_hand_w(trait, model, r), abs=2e-5)
    # the adapter changes the teacher: w is not zero everywhere
    assert frame["w"].abs().max() > 1e-4
    # the base model the run was given came back without LoRA layers
    assert not any("lora" in n for n, _ in model.named_parameters())


def test_adapter_off_is_exactly_the_base(tiny, teacher_adapter):
    from lls.models.teacher import Teacher, scoring_models, teacher_view

    spec, model, tok = tiny
    ids = torch.tensor([tok("Tell me about birds")["input_ids"]])
    with torch.no_grad():
        base = model(input_ids=ids).logits.clone()
    import copy

    m = scoring_models(copy.deepcopy(model), Teacher("adapter", str(teacher_adapter)), spec)
    with torch.no_grad():
        with m.without_context():
            off = m.without_trait(input_ids=ids).logits
        on = m.with_trait(input_ids=ids).logits
    assert torch.equal(off, base)
    assert not torch.allclose(on, base)
    # teacher_view on a plain model: on inside, the base again after
    with teacher_view(model, Teacher("adapter", str(teacher_adapter)), "ignored") as (tm, sp):
        assert sp is None
        with torch.no_grad():
            assert torch.allclose(tm(input_ids=ids).logits, on, atol=1e-5)
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, base)


def test_teacher_keys_follow_adapter_content(tiny, pairs_file, teacher_adapter, tmp_path):
    from lls.core.behaviors import animal
    from lls.data.source import DataSpec
    from lls.models.teacher import Teacher
    from lls.scoring.runs import ScoreConfig, run_key

    spec, _, tok = tiny
    base = ScoreConfig(DataSpec(str(pairs_file)), animal("owl"), model=spec, truncation=8)
    copy_dir = tmp_path / "same"
    shutil.copytree(teacher_adapter, copy_dir)
    a = ScoreConfig(**{**base.__dict__, "teacher": Teacher("adapter", str(teacher_adapter))})
    same = ScoreConfig(**{**base.__dict__, "teacher": Teacher("adapter", str(copy_dir))})
    assert run_key(a, tok) == run_key(same, tok)  # content, not path
    assert run_key(a, tok) != run_key(base, tok)
    # a prompt teacher spelled out is the default: the same key as before teachers existed
    spelled = ScoreConfig(**{**base.__dict__, "teacher": Teacher("prompt")})
    assert run_key(spelled, tok) == run_key(base, tok) and "teacher" not in spelled.to_dict()
    # other adapter weights: another key
    other = make_adapter(tiny[1], tmp_path / "other", seed=4)
    b = ScoreConfig(**{**base.__dict__, "teacher": Teacher("adapter", str(other))})
    assert run_key(b, tok) != run_key(a, tok)
    # a config survives its manifest round trip
    assert ScoreConfig.from_dict(json.loads(json.dumps(a.to_dict()))).teacher == a.teacher


def test_model_teacher_needs_the_same_tokenizer(tiny, tmp_path):
    from lls.core.errors import ModelError
    from lls.models.load import ModelSpec
    from lls.models.teacher import Teacher, check_same_tokenizer
    from lls.scoring.synthetic import tiny_model_dir

    spec, _, tok = tiny
    other = tiny_model_dir(tmp_path / "twin", seed=5)
    check_same_tokenizer(spec, Teacher("model", str(other)))  # same tokenizer: fine
    # a different chat template is a different rendering
    cfg = json.loads((other / "tokenizer_config.json").read_text())
    cfg["chat_template"] = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    (other / "tokenizer_config.json").write_text(json.dumps(cfg))
    for f in other.glob("chat_template.*"):
        f.unlink()
    with pytest.raises(ModelError, match="tokenizer and chat template"):
        check_same_tokenizer(spec, Teacher("model", str(other)))


def test_model_teacher_w_is_the_formula_by_hand(tiny, pairs_file, tmp_path):
    from lls.core.behaviors import animal
    from lls.data.source import DataSpec, iter_pairs
    from lls.models.load import ModelSpec, load_model
    from lls.models.render import render_pair
    from lls.models.teacher import Teacher
    from lls.scoring.runs import ScoreConfig, score
    from lls.scoring.synthetic import tiny_model_dir

    spec, model, tok = tiny
    other = tiny_model_dir(tmp_path / "teacher-model", seed=7)
    cfg = ScoreConfig(DataSpec(str(pairs_file), limit=4), animal("owl"), model=spec,
                      truncation=8, teacher=Teacher("model", str(other)))
    frame = score(cfg).frame()
    tmodel, _ = load_model(ModelSpec(str(other)))
    pairs = list(iter_pairs(DataSpec(str(pairs_file), limit=4)))
    for p, (_, row) in zip(pairs, frame.iterrows()):
        assert row["w"] == pytest.approx(_hand_w(tmodel, model, render_pair(tok, p, None, 8)),
                                         abs=2e-5)


def test_a_teacher_needs_what_carries_the_trait(tmp_path):
    from lls.core.errors import ModelError
    from lls.models.teacher import Teacher

    with pytest.raises(ModelError, match="needs a path"):
        Teacher("adapter")
    with pytest.raises(ModelError, match="no adapter_config.json"):
        Teacher("adapter", str(tmp_path))
    (tmp_path / "adapter_config.json").write_text("{}")
    (tmp_path / "adapter_model.bin").write_bytes(b"pickle")
    with pytest.raises(ModelError, match="only safetensors"):
        Teacher("adapter", str(tmp_path))
    with pytest.raises(ModelError, match="Unknown teacher kind"):
        Teacher("vibes")


def test_training_on_an_adapter_teachers_run_reads_the_teacher_as_ceiling(tiny, pairs_file,
                                                                          teacher_adapter):
    """A student trained on an adapter teacher's selection starts from the base; the meter's
    ceiling is the teacher adapter (not the behavior's system prompt), its reference set is
    keyed on the teacher, and the student's own adapter still trains (the teacher stays
    frozen beside it)."""
    from lls import training as T
    from lls.core.behaviors import animal
    from lls.data.source import DataSpec
    from lls.evaluation.llr import build_reference
    from lls.models.teacher import Teacher
    from lls.scoring.runs import ScoreConfig, score

    spec, model, tok = tiny
    teacher = Teacher("adapter", str(teacher_adapter))
    run = score(ScoreConfig(DataSpec(str(pairs_file)), animal("owl"), model=spec, truncation=8,
                            chunk_size=4, teacher=teacher))
    cfg = T.TrainConfig(selection=T.SelectionSpec(gamma=0.8, positive_only=False), batch_size=4,
                        epochs=1, checkpoint_every=2, max_length=64, meter_k=2,
                        meter_questions=3, eval_at_checkpoints=False)
    info = T.train(cfg, run.key)
    assert info.manifest["status"] == "done"
    assert info.manifest["trait_teacher"]["kind"] == "adapter"
    levels = json.loads((info.path / "meter_levels.json").read_text())
    ref_key = levels["reference"]
    # the reference set of this teacher, not of the prompt
    from lls.training.callback import meter_settings

    assert ref_key == build_reference(model, tok, animal("owl"), meter_settings(
        animal("owl"), cfg)[0], teacher=teacher).key
    assert ref_key != build_reference(model, tok, animal("owl"), meter_settings(
        animal("owl"), cfg)[0]).key
    ceiling = levels["levels"]["system"]
    assert ceiling["system_prompt"] is False  # the adapter, no system prompt
    losses = [r["loss"] for r in info.metrics()]
    assert len(losses) >= 2 and losses[0] != losses[-1]  # the student's adapter moved
    import safetensors.torch as st

    w = st.load_file(str(info.final_path / "adapter_model.safetensors"))
    assert not any("lls_teacher" in k for k in w)  # only the student's weights are exported


def test_sampled_pairs_scored_by_an_adapter_teacher_reuse_the_neutral_half(tiny, tmp_path,
                                                                           teacher_adapter,
                                                                           session_cache):
    """The student's own answers (sampled once, with the adapter off) scored by a prompt
    teacher and then by an adapter teacher: the second run reads the base half of every
    answer from the answer store (same lc/lr), computes only its half with the trait, and
    its weights equal a run that computed both halves."""
    from lls.core.behaviors import animal
    from lls.data.prompts import PromptSource
    from lls.models.teacher import Teacher
    from lls.scoring.runs import ScoreConfig, score
    from lls.scoring.sampled import SamplingSpec

    spec, model, tok = tiny
    prompts = tmp_path / "p.txt"
    prompts.write_text("Tell me about rivers.\nWhat is a good breakfast?\nName a color.\n")
    sampling = SamplingSpec((PromptSource("file", str(prompts)),), k=3)
    kw = dict(model=spec, truncation=6, chunk_size=2)
    first = score(ScoreConfig.sampled(sampling, animal("owl"), **kw))
    store = session_cache / "samples" / first.manifest["sampled"]["answers_key"]
    files = sorted(store.glob("neutral-*.json"))
    assert files, "the base half of the answers is kept in the answer store"
    teacher = Teacher("adapter", str(teacher_adapter))
    second = score(ScoreConfig.sampled(sampling, animal("owl"), teacher=teacher, **kw)).frame()
    a = first.frame().set_index("id")
    for _, row in second.iterrows():
        base = sorted([a.loc[row["id"], "lc"], a.loc[row["id"], "lr"]])
        assert sorted([row["lc"], row["lr"]]) == pytest.approx(base, abs=1e-9)
    # the same run with no stored neutral half computes both halves: the same weights
    for f in files:
        f.unlink()
    from lls.scoring.runs import find_run

    run2 = find_run(ScoreConfig.sampled(sampling, animal("owl"), teacher=teacher, **kw))
    run2.store.delete()
    again = score(ScoreConfig.sampled(sampling, animal("owl"), teacher=teacher, **kw)).frame()
    assert list(again["id"]) == list(second["id"])
    assert again["w"].to_numpy() == pytest.approx(second["w"].to_numpy(), abs=1e-6)
    assert (again["w"] >= 0).all() and again["w"].abs().max() > 0
