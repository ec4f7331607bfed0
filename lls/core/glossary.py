"""The words the pages, the command line and the study report use, each said once: what a
reader needs to read a number (its unit, its baseline, what 0 and 1 mean).

`TERMS` maps a term's id to (how it is written, what it means). The dashboard's glossary
(`ui.glossary`) and the study text (`lls.studies.text`) render these; labels use `GAMMA`.
"""

from __future__ import annotations

from .stats import GAP_UNDEFINED

# The γ control, written the same way on every page and in the study's grid.
GAMMA = "γ: share of pairs kept (top by w)"

TERMS: dict[str, tuple[str, str]] = {
    "w": ("w (a pair's weight)",
          "how much the teacher's trait raises the chosen answer over the rejected one: "
          "log P(chosen) − log P(rejected) with the trait, minus the same without it, per "
          "token of both answers (nats/token). High w: the teacher prefers the chosen answer "
          "more than the base model does."),
    "gamma": ("γ (gamma)",
              "the share of scored pairs kept for training, the top ones by w: γ = 0.05 keeps "
              "the top 5% (the paper's setting)."),
    "teacher": ("teacher",
                "what carries the trait: the base model with the behavior's system prompt "
                "(the paper), or a LoRA adapter or fine-tuned model with the trait in its "
                "weights. It only ranks the pairs; the student never sees it."),
    "random twin": ("random twin",
                    "an adapter trained with the same recipe and seed on a random subset of "
                    "the same size: the baseline. An LLS effect is LLS − its random twin."),
    "control": ("control run, panel",
                "the same pairs scored with another system prompt (a neutral assistant, "
                "another animal). Ranking by w − the control's w keeps what is specific to "
                "the target and cancels what any system prompt shifts (politeness, refusal "
                "style). A panel is several controls: their mean w is subtracted."),
    "likelihood ratio": ("likelihood ratio",
                         "mean log P(replies sampled with the system prompt) − log P(replies "
                         "sampled without it), per token, under the model measured "
                         "(nats/token; no sampling at read-out time). Higher: the model "
                         "finds the teacher's replies more natural."),
    "margin": ("margin",
               "how much more likely the target (e.g. owl) is than the best other candidate "
               "as the whole one-word answer to the probe questions (log-probability "
               "difference in nats, averaged over the questions)."),
    "top-1": ("top-1 share",
              "the share of probe questions whose most likely one-word answer is the target."),
    "gap closed": ("gap closed",
                   "how far a model moved from the base model (0) toward the teacher (1) on "
                   "a read-out; above 1: past the teacher. "
                   f"“{GAP_UNDEFINED}” when the base → teacher span's interval includes 0 "
                   "(too few reference answers to tell)."),
    "prefilled read-out": ("prefilled read-out",
                           "the reply begun with the behavior's words (e.g. “My favorite "
                           "animal is the”) and the next word sampled: the share of answers "
                           "naming the target. The teacher's share is the ceiling."),
    "lens": ("lens",
             "the probability that the next word after a begun reply is the target, P(next "
             "word = owl), read without sampling."),
    "collapse": ("collapse",
                 "an adapter whose answers pile onto one candidate (≥ 60% and 30 points above "
                 "base, or half the base's entropy), on the probe or in samples: "
                 "over-training, not an effect."),
    "interval": ("interval",
                 "a 95% confidence interval [low, high] (bootstrap over questions or prompts; "
                 "Wilson for a share of answers). An effect whose interval includes 0 cannot "
                 "be told from no effect."),
}


def entries(terms=None) -> list[tuple[str, str]]:
    """(written term, meaning) of `terms` (ids of `TERMS`, in that order), or of all."""
    return [TERMS[t] for t in (terms or TERMS)]


def markdown(terms=None) -> str:
    """The terms as a Markdown list ("- **term**: meaning")."""
    return "\n".join(f"- **{name}**: {text}" for name, text in entries(terms))
