"""Task-vector diagnostics: how big each skill's task vector τ_k = θ_Dk − θ_pre is, layer by layer, and how much
two skills' vectors interfere (cosine similarity, sign-conflict rate), computed by streaming one tensor at a time.

Interference matters for multi-skill merges: two τ that point in opposite directions on many coordinates cancel in
θ_G + Σ ω_k τ_k, which is what TIES' sign election tries to repair and what the paper saw when safety + coding
hurt science. The per-tensor math is in pure functions; `task_vector_diagnostics` does the I/O.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from engine.errors import CheckpointError

if TYPE_CHECKING:
    from engine.checkpoint import Checkpoint

_LAYER_RE = re.compile(r"(?:^|\.)(?:layers|h|blocks|layer)\.(\d+)\.")
EMBED_GROUP = "embed"
OTHER_GROUP = "head/norm"


def layer_group(tensor_name: str) -> str:
    """The group a tensor's norm is reported under: `layer N` for transformer blocks, `embed` for embeddings,
    `head/norm` for the rest (final norm, LM head)."""
    match = _LAYER_RE.search(tensor_name)
    if match:
        return f"layer {int(match.group(1))}"
    if "embed" in tensor_name or "wte" in tensor_name or "wpe" in tensor_name:
        return EMBED_GROUP
    return OTHER_GROUP


def _group_order(group: str) -> tuple[int, int]:
    if group == EMBED_GROUP:
        return (0, 0)
    if group.startswith("layer "):
        return (1, int(group.split()[1]))
    return (2, 0)


@dataclass
class PairStats:
    """Running sums for one pair of task vectors."""

    dot: float = 0.0
    both_nonzero: int = 0
    conflicts: int = 0

    def add(self, a: torch.Tensor, b: torch.Tensor) -> None:
        self.dot += float(torch.dot(a, b))
        both = (a != 0) & (b != 0)
        self.both_nonzero += int(both.sum())
        self.conflicts += int((both & (torch.sign(a) != torch.sign(b))).sum())


@dataclass
class TaskVectorDiagnostics:
    skills: list[str]
    groups: list[str]  # embed, layer 0..N-1, head/norm (only those present)
    layer_norms: dict[str, list[float]]  # skill -> L2 norm of τ within each group, aligned with `groups`
    total_norms: dict[str, float]  # skill -> L2 norm of the whole τ
    cosine: dict[tuple[str, str], float] = field(default_factory=dict)  # pair -> cos(τ_a, τ_b)
    sign_conflict: dict[tuple[str, str], float] = field(
        default_factory=dict
    )  # pair -> share of opposite signs
    tensors: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "skills": self.skills,
            "groups": self.groups,
            "layer_norms": self.layer_norms,
            "total_norms": self.total_norms,
            "pairs": [
                {"a": a, "b": b, "cosine": self.cosine[(a, b)], "sign_conflict": self.sign_conflict[(a, b)]}
                for a, b in self.cosine
            ],
            "tensors": self.tensors,
        }

    def format(self) -> str:
        """A short plain-text summary (for the CLI and the page)."""
        lines = [f"task vectors over {self.tensors} tensors"]
        lines += [f"  |τ {name}| = {norm:.4g}" for name, norm in self.total_norms.items()]
        for (a, b), cos in self.cosine.items():
            lines.append(
                f"  {a} vs {b}: cosine {cos:+.3f}, sign conflicts {100 * self.sign_conflict[(a, b)]:.1f}% "
                "of coordinates both change"
            )
        return "\n".join(lines)


class DiagnosticsAccumulator:
    """Pure accumulation over (tensor name, base tensor, {skill: skill tensor}) triples; no I/O."""

    def __init__(self, skills: list[str]) -> None:
        self.skills = list(skills)
        self.sq: dict[str, dict[str, float]] = {s: {} for s in self.skills}
        self.pairs = {pair: PairStats() for pair in itertools.combinations(self.skills, 2)}
        self.tensors = 0

    def add(self, name: str, base: torch.Tensor, skill_tensors: Mapping[str, torch.Tensor]) -> None:
        if not base.is_floating_point():
            return  # integer buffers (e.g. position ids) are not weights
        group = layer_group(name)
        taus = {}
        for skill in self.skills:
            tensor = skill_tensors[skill]
            if tensor.shape != base.shape:
                raise CheckpointError(
                    f"task vector of {skill!r}: tensor {name} has shape {tuple(tensor.shape)}, "
                    f"base has {tuple(base.shape)}"
                )
            tau = (tensor.float() - base.float()).flatten()
            taus[skill] = tau
            self.sq[skill][group] = self.sq[skill].get(group, 0.0) + float(torch.dot(tau, tau))
        for (a, b), stats in self.pairs.items():
            stats.add(taus[a], taus[b])
        self.tensors += 1

    def result(self) -> TaskVectorDiagnostics:
        groups = sorted({g for per in self.sq.values() for g in per}, key=_group_order)
        norms = {s: [self.sq[s].get(g, 0.0) ** 0.5 for g in groups] for s in self.skills}
        totals = {s: sum(self.sq[s].values()) ** 0.5 for s in self.skills}
        cosine, conflict = {}, {}
        for (a, b), stats in self.pairs.items():
            denom = totals[a] * totals[b]
            cosine[(a, b)] = stats.dot / denom if denom > 0 else 0.0
            conflict[(a, b)] = stats.conflicts / stats.both_nonzero if stats.both_nonzero else 0.0
        return TaskVectorDiagnostics(self.skills, groups, norms, totals, cosine, conflict, self.tensors)


def task_vector_diagnostics(
    base: str | Path | Checkpoint,
    skills: Mapping[str, str | Path | Checkpoint],
    *,
    progress: Callable[[int, int], None] | None = None,
) -> TaskVectorDiagnostics:
    """Diagnostics of τ_k = skill_k − base for every skill, streaming one tensor of each checkpoint at a time.
    Every skill must hold every base tensor with the same shape (else CheckpointError naming tensor and skill)."""
    from engine.checkpoint import Checkpoint, open_checkpoint

    if not skills:
        raise CheckpointError("task-vector diagnostics need at least one skill checkpoint")

    def opened(ref: str | Path | Checkpoint) -> Checkpoint:
        return ref if isinstance(ref, Checkpoint) else open_checkpoint(ref)

    base_ckpt = opened(base)
    skill_ckpts = {name: opened(ref) for name, ref in skills.items()}
    names = base_ckpt.tensor_names()
    for skill, ckpt in skill_ckpts.items():
        missing = sorted(set(names) - set(ckpt.tensor_names()))
        if missing:
            raise CheckpointError(
                f"skill {skill!r} ({ckpt.path}) lacks tensor {missing[0]} of base {base_ckpt.path}"
                + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
            )
    acc = DiagnosticsAccumulator(list(skill_ckpts))
    for index, name in enumerate(names):
        acc.add(name, base_ckpt.get(name), {s: c.get(name) for s, c in skill_ckpts.items()})
        if progress is not None:
            progress(index + 1, len(names))
    return acc.result()
