"""bfloat16 precision candidates for the benchmarks, real or emulated with float32 kernels.

Not part of the product: `lls.models.load.bf16_linears` is what ships. This module builds the
candidates docs/precision.md compares, from one float32 model (each a deep copy):

* `plain`: the whole model cast to bfloat16 (weights, residual stream, norms, LM head);
* `autocast`: float32 weights, the decoder run under `torch.autocast("cpu", bfloat16)`
  (projections and attention in bfloat16, their outputs bfloat16 until a float32 op
  promotes them), the LM head and log-softmax outside it in float32;
* `linears`: the decoder's projections cast once to bfloat16, inputs cast to bfloat16 and
  outputs back to float32, everything else float32 (`bf16_linears`, what ships).

`emulate=True` gives the same numbers with float32 matmul kernels, for CPUs whose bfloat16
kernels are slow (without avx512_bf16/AMX they ran 8.5x slower than float32 here): a
bfloat16 matmul kernel rounds its inputs to bfloat16, multiplies them exactly (a product of
two 8-bit significands fits float32's 24 bits), accumulates in float32 and rounds the result
to bfloat16 once. So each projection is computed as `round(round(x) @ round(W).T)` in
float32, `round` being a cast to bfloat16; only the order of the float32 additions differs
from the real kernel, which flips a rounded output by one bfloat16 step now and then (measured
on a 2048x576 @ 576x1536 product: 99.987% of outputs identical, the rest one step apart).
Every other operation of a candidate runs as it would for real (in bfloat16 where it is
bfloat16). Speed figures of emulated runs mean nothing; agreement figures are the candidate's.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from lls.models.load import bf16_linears

CANDIDATES = ("linears", "autocast", "plain")
SHIPPED = "linears"
BF16 = torch.bfloat16


def _round(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.to(BF16).float()


def _decoder_linears(model):
    return [m for m in model.get_decoder().modules() if isinstance(m, torch.nn.Linear)]


def _emulated_forward(module, out_dtype):
    """A Linear's forward as a bfloat16 kernel computes it, with float32 kernels. The backward
    pass is emulated too: autograd rounds the output's gradient to bfloat16 (the cast's
    backward), multiplies it by the weight in float32 and rounds the input's gradient (the
    backward of the input's cast), as a bfloat16 kernel's backward does."""
    def forward(x):
        w = module.weight.float()
        b = None if module.bias is None else module.bias.float()
        with torch.autocast("cpu", enabled=False):
            y = F.linear(_round(x.float()), w, b)
        return y.to(BF16).to(out_dtype)

    return forward


def candidate(model, name: str, *, emulate: bool = False):
    """A deep copy of the float32 `model` computing as candidate `name` (see the module doc)."""
    if name not in CANDIDATES:
        raise SystemExit(f"unknown candidate {name!r}; use one of {', '.join(CANDIDATES)}")
    m = copy.deepcopy(model)
    if name == "linears":
        if not emulate:
            bf16_linears(m)
            return m
        for lin in _decoder_linears(m):
            lin.to(BF16)  # stored as shipped (peft then treats the layers alike)
            lin.forward = _emulated_forward(lin, torch.float32)
        return m
    if name == "plain":
        # parameters only: loading with dtype=bfloat16 keeps the rotary buffers float32 too
        for p in m.parameters():
            p.data = p.data.to(BF16)
        if emulate:
            for lin in [x for x in m.modules() if isinstance(x, torch.nn.Linear)]:
                lin.forward = _emulated_forward(lin, BF16)
        return m
    # autocast: the decoder (not the LM head) under CPU autocast
    dec = m.get_decoder()
    if emulate:
        for lin in _decoder_linears(m):
            lin.weight.data = _round(lin.weight.data)  # autocast's cast of the weight
            lin.forward = _emulated_forward(lin, BF16)  # what autocast's linear returns
    dec.forward = torch.autocast("cpu", dtype=BF16)(dec.forward)
    return m
