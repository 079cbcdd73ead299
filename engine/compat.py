"""Compatibility report for a set of checkpoints: can they be merged, and if not, what differs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from engine.checkpoint import Checkpoint

# config.json fields that must agree for tensors to be merged meaningfully.
CONFIG_FIELDS = (
    "architectures", "model_type", "hidden_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "intermediate_size", "vocab_size", "tie_word_embeddings",
)  # fmt: skip


@dataclass(frozen=True)
class Difference:
    field: str
    detail: str

    def __str__(self) -> str:
        return f"{self.field}: {self.detail}"


@dataclass
class CompatReport:
    names: list[str]
    summary: dict[str, object]
    differences: list[Difference] = field(default_factory=list)
    notes: list[Difference] = field(default_factory=list)  # differences that do not block a merge (dtypes)

    @property
    def ok(self) -> bool:
        return not self.differences

    def format(self) -> str:
        lines = [f"checkpoints: {', '.join(self.names)}"]
        lines += [f"  {key}: {value}" for key, value in self.summary.items()]
        if self.ok:
            lines.append("compatible: yes")
        else:
            lines.append(f"compatible: NO ({len(self.differences)} difference(s))")
            lines += [f"  - {d}" for d in self.differences]
        if self.notes:
            lines.append("notes (mergeable):")
            lines += [f"  - {d}" for d in self.notes]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "checkpoints": list(self.names),
            "summary": self.summary,
            "differences": [{"field": d.field, "detail": d.detail} for d in self.differences],
            "notes": [{"field": d.field, "detail": d.detail} for d in self.notes],
        }


def _tied(ckpt: Checkpoint) -> bool:
    return bool(ckpt.config.get("tie_word_embeddings", False)) or "lm_head.weight" not in ckpt.tensor_names()


def compatibility_report(ckpts: Sequence[Checkpoint]) -> CompatReport:
    """Compare every checkpoint with the first: config fields, tensor names, shapes and dtypes."""
    first = ckpts[0]
    names = [c.name for c in ckpts]
    summary: dict[str, object] = {
        "architecture": ",".join(first.config.get("architectures") or [first.config.get("model_type", "?")]),
        "tensors": len(first.tensor_names()),
        "vocab_size": first.config.get("vocab_size"),
        "layers": first.config.get("num_hidden_layers"),
        "hidden_size": first.config.get("hidden_size"),
        "tied_embeddings": _tied(first),
        "dtypes": sorted({str(first.info(n).dtype).removeprefix("torch.") for n in first.tensor_names()}),
    }
    diffs: list[Difference] = []
    notes: list[Difference] = []
    first_names = set(first.tensor_names())
    for other in ckpts[1:]:
        pair = f"{first.name} vs {other.name}"
        for key in CONFIG_FIELDS:
            a, b = first.config.get(key), other.config.get(key)
            if a != b:
                diffs.append(Difference(f"config.{key}", f"{a!r} in {first.name}, {b!r} in {other.name}"))
        if _tied(first) != _tied(other):
            diffs.append(
                Difference(
                    "tied_embeddings", f"{_tied(first)} in {first.name}, {_tied(other)} in {other.name}"
                )
            )
        other_names = set(other.tensor_names())
        for differing, what in ((first_names - other_names, "missing from"), (other_names - first_names, "only in")):
            for name in sorted(differing)[:5]:
                diffs.append(Difference("tensor", f"{name} {what} {other.name} ({pair})"))
            if len(differing) > 5:
                diffs.append(Difference("tensor", f"... and {len(differing) - 5} more {what} {other.name}"))
        dtype_diffs = 0
        for name in sorted(first_names & other_names):
            a, b = first.info(name), other.info(name)
            if a.shape != b.shape:
                diffs.append(
                    Difference(
                        "shape", f"{name}: {list(a.shape)} in {first.name}, {list(b.shape)} in {other.name}"
                    )
                )
            elif a.dtype != b.dtype:
                # Mixed dtypes merge fine (compute is float32) but the user should know.
                dtype_diffs += 1
                if dtype_diffs <= 3:
                    notes.append(
                        Difference("dtype", f"{name}: {_dt(a.dtype)} in {first.name}, {_dt(b.dtype)} in {other.name}")
                    )
        if dtype_diffs > 3:
            notes.append(Difference("dtype", f"... and {dtype_diffs - 3} more tensors differ in dtype in {other.name}"))
    return CompatReport(names, summary, diffs, notes)


def _dt(dtype: object) -> str:
    return str(dtype).removeprefix("torch.")


def config_report(config, ckpts: Mapping[str, Checkpoint]) -> CompatReport:
    """The compatibility report for one merge config: what `compatibility_report` checks, except what the config
    makes legitimate — layer counts under `slices:` (each slice's layer_range is checked against its source
    instead) and vocabulary sizes under a tokenizer setting (rows are aligned by token) become notes — plus
    whatever the merge plan itself refuses (a layer_range out of range, a tensor a slice needs but lacks)."""
    from engine.errors import MergescopeError
    from engine.merge import merge_plan
    from engine.plan import output_layers
    from engine.tokenizer_build import tokenizer_setting

    refs = config.refs()
    report = compatibility_report([ckpts[r] for r in refs])
    relaxed = set()
    if config.slices:
        relaxed |= {"config.num_hidden_layers", "tensor"}
        report.summary["output_layers"] = output_layers(config)
    if tokenizer_setting(config) is not None:
        relaxed |= {"config.vocab_size"}
    if tokenizer_setting(config) is not None or config.slices:
        relaxed |= {"shape"}  # re-checked per planned tensor (token-indexed rows may differ when aligned)
    keep = [d for d in report.differences if d.field not in relaxed]
    report.notes += [d for d in report.differences if d.field in relaxed and d.field != "tensor"]
    report.differences = keep
    try:
        merge_plan(config, ckpts)
    except MergescopeError as exc:
        report.differences.append(Difference("plan", str(exc)))
    return report
