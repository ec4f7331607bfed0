"""The canonical preference pair record shared by every stage."""

from __future__ import annotations

import json
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Pair:
    """One preference pair.

    `prompt` is a list of chat messages ({"role", "content"}); roles are "system", "user"
    and "assistant", and the last message is a user turn. `chosen` and `rejected` are the
    two assistant responses to that prompt (plain strings, untruncated).
    """

    id: str
    prompt: list[dict[str, str]] = field(hash=False)
    chosen: str
    rejected: str
    source: str = ""

    def prompt_json(self) -> str:
        return json.dumps(self.prompt, ensure_ascii=False)

    def to_dict(self) -> dict:
        return {"id": self.id, "prompt": self.prompt, "chosen": self.chosen,
                "rejected": self.rejected, "source": self.source}

    @classmethod
    def from_dict(cls, d: dict) -> "Pair":
        prompt = d["prompt"]
        if isinstance(prompt, str):
            prompt = json.loads(prompt)
        return cls(id=str(d["id"]), prompt=[dict(m) for m in prompt], chosen=d["chosen"],
                   rejected=d["rejected"], source=d.get("source", ""))
