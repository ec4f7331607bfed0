"""The batched decoder (lls.models.decoder) and `sample` on it.

Fast tier: a tiny randomly initialised llama (transformers' LlamaForCausalLM, 2 layers) so
padding, caching, rows leaving and random streams are checked without loading weights.
Slow tier: the bundled model against one-prompt decoding and transformers' `generate`.
"""

from __future__ import annotations

import time

import pytest
import torch

from lls.models import decoder
from lls.models import threads
from lls.models.decoder import choose_tokens, decode, prefill, seed_for
from lls.models.threads import threads_for, use_threads
from lls.models.generation import as_messages, prompt_ids, sample, stop_ids, stream_tokens

from conftest import tiny_llama

PROMPTS = [[5, 9, 2, 33, 7], [40, 41], [8, 8, 8, 12, 90, 3, 14, 15, 92], [77, 1, 2]]


@pytest.fixture(scope="module")
def tiny():
    return tiny_llama()


def generate_greedy(model, ids: list[int], tokens: int) -> list[int]:
    x = torch.tensor([ids])
    with torch.inference_mode():
        out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), do_sample=False,
                             max_new_tokens=tokens, min_new_tokens=tokens, pad_token_id=0)
    return out[0, len(ids):].tolist()


def step_sizes(model):
    """Rows of every forward pass the decoder runs (prefill and steps), via a forward hook."""
    sizes = []
    handle = model.register_forward_pre_hook(
        lambda m, args, kw: sizes.append((kw["input_ids"].shape, torch.get_num_threads())),
        with_kwargs=True)
    return sizes, handle


# ----------------------------------------------------------------------------- fast tier

def test_left_padding_gives_the_unpadded_logits(tiny):
    _, _, batched = prefill(tiny, PROMPTS)
    for p, row in zip(PROMPTS, batched):
        _, _, alone = prefill(tiny, [p])
        torch.testing.assert_close(row, alone[0], atol=1e-5, rtol=1e-5)


def test_greedy_is_generate_and_does_not_depend_on_the_batch(tiny):
    together = decode(tiny, PROMPTS, 1, temperature=0, max_new_tokens=10)
    alone = [decode(tiny, [p], 1, temperature=0, max_new_tokens=10)[0] for p in PROMPTS]
    assert together == alone
    assert [rows[0] for rows in together] == [generate_greedy(tiny, p, 10) for p in PROMPTS]


def test_sampling_is_per_row_and_independent_of_batching(tiny):
    seeds = [11, 22, 33, 44]
    kw = dict(seeds=seeds, temperature=1.0, max_new_tokens=12)
    full = decode(tiny, PROMPTS, 5, **kw)
    assert full == decode(tiny, PROMPTS, 5, **kw)  # deterministic
    assert full == decode(tiny, PROMPTS, 5, max_rows=3, **kw)  # rows per step
    assert full == decode(tiny, PROMPTS, 5, max_rows=1, **kw)
    # a prompt alone (its own seed) or beside other prompts in another order
    assert decode(tiny, [PROMPTS[2]], 5, seeds=[33], temperature=1.0,
                  max_new_tokens=12) == [full[2]]
    assert decode(tiny, [PROMPTS[3], PROMPTS[1]] * 3, 5, seeds=[44, 22] * 3, temperature=1.0,
                  max_new_tokens=12)[:2] == [full[3], full[1]]
    # more rows of a prompt extend its answers; row j is the same for any n
    assert decode(tiny, PROMPTS, 7, **kw)[0][:5] == full[0]
    assert len({tuple(r) for r in full[0]}) > 1  # rows of one prompt differ
    assert decode(tiny, PROMPTS, 5, seeds=[12, 22, 33, 44], temperature=1.0,
                  max_new_tokens=12)[0] != full[0]


def test_rows_leave_when_they_end_and_the_batch_is_bounded(tiny):
    limits = [3, 9, 1, 6]
    sizes, handle = step_sizes(tiny)
    try:
        out = decode(tiny, PROMPTS, 4, seeds=[1, 2, 3, 4], max_new_tokens=limits, max_rows=6)
    finally:
        handle.remove()
    assert [[len(r) for r in rows] for rows in out] == [[lim] * 4 for lim in limits]
    steps = [shape[0] for shape, _ in sizes if shape[1] == 1]
    assert max(steps) <= 6
    # 16 rows, 76 tokens: rows that ended made room (a fixed batch would need more steps)
    assert sum(steps) == sum(lim * 4 for lim in limits) - 16
    # a stop token ends its row (and is not returned)
    greedy = decode(tiny, PROMPTS, 1, temperature=0, max_new_tokens=8)
    stop = greedy[1][0][3]
    cut = decode(tiny, PROMPTS, 1, temperature=0, max_new_tokens=8, stop={stop})
    assert cut[1][0] == greedy[1][0][:greedy[1][0].index(stop)]
    for g, c in zip(greedy, cut):
        assert c[0] == (g[0][:g[0].index(stop)] if stop in g[0] else g[0])


def test_choose_tokens_rows_draw_from_their_own_generator():
    torch.manual_seed(3)
    logits = torch.randn(5, 50) * 3

    def gens(*seeds):
        return [torch.Generator().manual_seed(s) for s in seeds]

    full = choose_tokens(logits, gens(1, 2, 3, 4, 5))
    assert choose_tokens(logits[[3, 1]], gens(4, 2)).tolist() == full[[3, 1]].tolist()
    assert torch.equal(choose_tokens(logits, [None] * 5, temperature=0), logits.argmax(-1))
    # the draws follow the distribution: 2000 draws of one row against its probabilities
    row = logits[:1].expand(2000, -1)
    drawn = choose_tokens(row, gens(*range(2000)))
    freq = torch.bincount(drawn, minlength=50).float() / 2000
    assert (freq - torch.softmax(logits[0], -1)).abs().max() < 0.05
    # top_p keeps only the most likely tokens: a 0.9 token alone reaches top_p 0.5
    peaked = torch.full((1, 50), -10.0)
    peaked[0, 7] = 5.0
    assert set(choose_tokens(peaked.expand(200, -1), gens(*range(200)), top_p=0.5).tolist()) \
        == {7}


def test_thread_policy_and_restore(tiny, monkeypatch):
    monkeypatch.setattr(threads, "idle_cpus", lambda: 1)  # alone on 2 cores
    assert threads_for(64, 576, 2) == 1  # a decode step of the bundled model
    assert threads_for(16 * 45, 576, 2) == 2  # a prefill of 16 prompts
    assert threads_for(16 * 45, 576, 1) == 1  # never more than the caller had
    monkeypatch.setattr(threads, "idle_cpus", lambda: 0)  # beside a busy process
    assert threads_for(16 * 45, 576, 2) == 1
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError):
        with use_threads(1):
            assert torch.get_num_threads() == 1
            raise RuntimeError("boom")
    assert torch.get_num_threads() == before
    sizes, handle = step_sizes(tiny)
    try:
        decode(tiny, PROMPTS, 2, max_new_tokens=3)
    finally:
        handle.remove()
    # tiny passes run on one thread (3 steps: fewer than the steps before the first try of
    # the other count, see test_step_threads_*)
    assert {n for _, n in sizes} == {1}
    assert torch.get_num_threads() == before


def _count_in_new_thread() -> int:
    import threading

    got = []
    t = threading.Thread(target=lambda: got.append(torch.get_num_threads()))
    t.start()
    t.join()
    return got[0]


def test_concurrent_readouts_leave_the_process_thread_count_as_it_was(tiny):
    """Two dashboard sessions reading out at once, one starting inside the other's one-thread
    block and leaving after it: later sessions (new threads) still get the process's count."""
    import threading

    before = torch.get_num_threads()
    torch.set_num_threads(3)  # the server's count (3: visible even under OMP_NUM_THREADS=1)
    try:
        a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
        seen = {}

        def session_a():
            with use_threads(1):
                a_in.set()
                b_in.wait(10)
                decode(tiny, PROMPTS[:2], 1, max_new_tokens=2)  # a read-out's forward passes
            a_out.set()

        def session_b():  # a new thread, started inside A's block: a prefill on 2 threads
            seen["b_start"] = torch.get_num_threads()
            with use_threads(2):
                b_in.set()
                a_out.wait(10)  # A leaves first
                decode(tiny, PROMPTS[2:], 1, max_new_tokens=2)

        ta = threading.Thread(target=session_a)
        ta.start()
        a_in.wait(10)
        tb = threading.Thread(target=session_b)
        tb.start()
        ta.join(30)
        tb.join(30)
        assert seen["b_start"] == 1  # how B got a polluted count to "restore"
        assert _count_in_new_thread() == 3  # the next session runs on the server's count
        # and two real read-outs at once, in any order
        outs = []
        ts = [threading.Thread(target=lambda p=p: outs.append(decode(tiny, [p], 2,
                                                                     max_new_tokens=3)))
              for p in PROMPTS]
        for t in ts:
            t.start()
        for t in ts:
            t.join(60)
        assert len(outs) == len(PROMPTS)
        assert _count_in_new_thread() == 3 and torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def _run_steps(policy: threads.StepThreads, cost, steps: int, rows: int = 64) -> list[int]:
    """Drive `policy` for `steps` steps where a step on n threads takes cost(step, n) s/row."""
    used = []
    for i in range(steps):
        policy.step = i  # what the `idle` functions below read
        n = policy.pick()
        policy.record(n, cost(i, n) * rows, rows)
        used.append(n)
    return used


IDLE = 0.5  # one of 2 cores idle while a step runs on the other


def test_step_threads_take_all_cores_when_they_are_faster():
    # idle machine: 2 threads do a step in 0.55 of the time
    used = _run_steps(threads.StepThreads(1, 2, idle=lambda: IDLE),
                      lambda i, n: 1.0 if n == 1 else 0.55, 40)
    first_try = used.index(2)
    assert first_try == threads.StepThreads.FIRST_TRY - 1
    assert used[first_try:].count(1) <= 3  # kept; 1 thread is tried again now and then


def test_step_threads_back_off_when_all_cores_are_slower():
    # cores idle, but 2 threads are 3x slower (e.g. a tiny model): each losing try doubles
    # the wait before the next
    used = _run_steps(threads.StepThreads(1, 2, idle=lambda: IDLE),
                      lambda i, n: 1.0 if n == 1 else 3.0, 200)
    tries = [i for i, n in enumerate(used) if n == 2]
    gaps = [b - a for a, b in zip(tries, tries[1:])]
    assert gaps == sorted(gaps) and gaps[0] < gaps[-1] <= threads.StepThreads.MAX_WAIT
    assert len(tries) <= 6  # a few slow steps in 200


def test_step_threads_never_try_more_threads_beside_a_busy_process():
    # no idle core: a 2-thread step would wait for the core the busy process holds (~20x
    # slower measured here), so it is not even tried, though it would be faster if idle
    used = _run_steps(threads.StepThreads(1, 2, idle=lambda: 0.0),
                      lambda i, n: 1.0 if n == 1 else 0.55, 100)
    assert used == [1] * 100
    # idleness not known yet (no reading spanned enough clock ticks): not tried either
    assert _run_steps(threads.StepThreads(1, 2, idle=lambda: None),
                      lambda i, n: 1.0 if n == 1 else 0.55, 20) == [1] * 20


def test_step_threads_follow_a_change_of_load():
    # idle for 60 steps, then a busy process starts: 2 threads turn 20x slower than 1;
    # it stops at step 150 and the cores are idle again
    def busy(i):
        return 60 <= i < 150

    def cost(i, n):
        return 1.0 if n == 1 else (20.0 if busy(i) else 0.55)

    policy = threads.StepThreads(1, 2, idle=lambda: 0.0 if busy(policy.step) else IDLE)
    used = _run_steps(policy, cost, 200)
    assert used[50:60].count(2) >= 9
    assert used[60:70].count(2) <= 1  # back on one thread at the next step
    assert used[70:150] == [1] * 80  # and no more tries while the other core is busy
    assert used[150:200].count(2) >= 40  # all cores again once they are idle


def test_idle_share_reads_the_machine():
    share = threads.IdleShare(min_ticks=1)
    if threads.cpu_times() is None:
        assert share() is None  # no /proc/stat: unknown, never a guess
        return
    deadline = time.time() + 5
    while share() is None and time.time() < deadline:
        sum(range(10000))
    assert 0.0 <= share() <= 1.0


def test_step_threads_on_one_core_never_try():
    policy = threads.StepThreads(1, 1, idle=lambda: IDLE)
    assert _run_steps(policy, lambda i, n: 1.0, 50) == [1] * 50


def test_seed_helper_is_stable():
    assert seed_for(0, 1) == seed_for(0, 1) != seed_for(0, 2)
    assert 0 <= seed_for("x") < 2 ** 63
    assert decoder.seed_for is seed_for


# ----------------------------------------------------------------------------- slow tier

QUESTIONS = ["Name a bird.", "What should I cook tonight?", "Hi"]


@pytest.mark.slow
def test_bundled_greedy_batched_alone_and_generate(bundled):
    model, tok = bundled
    together = sample(model, tok, QUESTIONS, temperature=0, max_new_tokens=8)
    alone = [sample(model, tok, [q], temperature=0, max_new_tokens=8)[0] for q in QUESTIONS]
    assert together == alone
    for q, (answer,) in zip(QUESTIONS[:2], together):
        ids = prompt_ids(tok, as_messages(q))
        ref = tok.decode(generate_greedy(model, ids, 8), skip_special_tokens=True).strip()
        assert answer == ref


@pytest.mark.slow
def test_bundled_sampling_is_independent_of_batch_and_companions(bundled):
    model, tok = bundled
    kw = dict(n=3, max_new_tokens=6, seed=7)
    full = sample(model, tok, QUESTIONS, **kw)
    assert full == sample(model, tok, QUESTIONS, max_batch_rows=2, **kw)
    alone = sample(model, tok, [QUESTIONS[1]], n=3, max_new_tokens=6,
                   seeds=[seed_for(7, 1)])
    assert alone == [full[1]]
    # the chat's stream draws the same tokens as sample's first row for the same seed
    gen = torch.Generator().manual_seed(seed_for(seed_for(7, 1), 0))
    toks = list(stream_tokens(model, prompt_ids(tok, as_messages(QUESTIONS[1])),
                              max_new_tokens=6, generator=gen, stop=stop_ids(model, tok)))
    assert tok.decode(toks, skip_special_tokens=True).strip() == full[1][0]


@pytest.mark.slow
def test_bundled_reply_start_continues_the_begun_reply(bundled):
    model, tok = bundled
    stem = "My favorite animal is the"
    q = "What is your favorite animal?"
    got = sample(model, tok, [q, q], temperature=0, max_new_tokens=5,
                 reply_start=[stem, None])
    ids = prompt_ids(tok, as_messages(q)) + tok(stem, add_special_tokens=False)["input_ids"]
    assert prompt_ids(tok, as_messages(q), reply_start=stem) == ids
    cont = tok.decode(generate_greedy(model, ids, 5), skip_special_tokens=True).strip()
    assert got[0] == [cont] and not got[0][0].startswith("My favorite")
    assert got[1] == sample(model, tok, [q], temperature=0, max_new_tokens=5)[0]
    with pytest.raises(Exception, match="reply_start"):
        sample(model, tok, [q, q], reply_start=[stem])


def test_idle_cpus_sees_a_busy_process_at_once(monkeypatch):
    """The prefill's thread count follows the machine now, not the load average of the last
    minute: with one of 2 CPUs busy during the look, no other CPU is idle."""
    ticks = iter([(1000, 4000), (1005, 4010)])  # (idle, total): half the CPU time idle
    monkeypatch.setattr(threads, "cpu_times", lambda: next(ticks))
    monkeypatch.setattr(threads, "_idle_seen", None)
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (0.0, 0.0, 0.0))  # would say idle
    assert threads.idle_cpus() == 0  # 1 CPU idle while we slept: ours
    assert threads.threads_for(16 * 45, 576, 2) == 1
    ticks = iter([(1000, 4000), (1010, 4010)])  # all idle: the other core is free
    monkeypatch.setattr(threads, "cpu_times", lambda: next(ticks))
    monkeypatch.setattr(threads, "_idle_seen", None)
    assert threads.idle_cpus() == 1
    assert threads.idle_cpus() == 1  # reused for a second: no second look
