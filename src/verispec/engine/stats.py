"""SpecStats: what one generation did, in the terms of the speculative decoding literature.

mean acceptance length counts the bonus / recovered token (the convention of vLLM and
Spec-Bench): tokens emitted per target forward pass, 1.0 for plain decoding.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class SpecStats:
    target_calls: int = 0  # target forward passes (speculative iterations + plain steps)
    drafts: int = 0  # iterations that verified a draft
    plain_steps: int = 0  # iterations without a draft (controller said no, or nothing to draft)
    draft_tokens: int = 0  # draft tokens proposed (tree nodes)
    accepted: int = 0  # draft tokens accepted
    emitted: int = 0  # tokens emitted
    eos: int = 0  # 1 when the end-of-sequence token ended the text (generated, not emitted)
    prompt_tokens: int = 0
    position_tried: list[int] = field(default_factory=list)  # [d] drafts that reached depth d
    position_accepted: list[int] = field(default_factory=list)  # [d] ... and were accepted there
    time_prefill: float = 0.0  # the prompt's forward pass (inside time_total)
    time_draft: float = 0.0
    time_target: float = 0.0
    time_verify: float = 0.0
    time_total: float = 0.0
    finish_reason: str = ""

    def record(self, depth_reached: int, accepted: int) -> None:
        """One verified draft: its length along the verified path and the number accepted."""
        while len(self.position_tried) < depth_reached:
            self.position_tried.append(0)
            self.position_accepted.append(0)
        for d in range(depth_reached):
            self.position_tried[d] += 1
            if d < accepted:
                self.position_accepted[d] += 1

    @property
    def mean_acceptance_length(self) -> float:
        """Tokens the target produced per forward pass, the end-of-sequence token included."""
        return (self.emitted + self.eos) / self.target_calls if self.target_calls else 0.0

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.draft_tokens if self.draft_tokens else 0.0

    @property
    def per_position_acceptance(self) -> list[float]:
        return [a / t if t else 0.0 for a, t in zip(self.position_accepted, self.position_tried)]

    @property
    def tokens_per_s(self) -> float:
        return self.emitted / self.time_total if self.time_total > 0 else 0.0

    @property
    def decode_tokens_per_s(self) -> float:
        """Tokens per second after the prompt is processed (prefill excluded)."""
        t = self.time_total - self.time_prefill
        return self.emitted / t if t > 0 else 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(mean_acceptance_length=self.mean_acceptance_length, acceptance_rate=self.acceptance_rate,
                 per_position_acceptance=self.per_position_acceptance, tokens_per_s=self.tokens_per_s,
                 decode_tokens_per_s=self.decode_tokens_per_s)
        return d

    def summary(self) -> str:
        return (f"{self.emitted} tokens in {self.time_total:.2f} s ({self.tokens_per_s:.1f} tok/s, "
                f"{self.decode_tokens_per_s:.1f} after the prompt) | "
                f"mean acceptance length {self.mean_acceptance_length:.2f} | "
                f"{self.drafts} drafts, {self.accepted}/{self.draft_tokens} draft tokens accepted | "
                f"time draft {self.time_draft:.2f} s, target {self.time_target:.2f} s, "
                f"verify {self.time_verify:.2f} s")
