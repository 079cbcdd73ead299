"""Merge configs in mergekit's YAML: parse, validate, resolve per-tensor parameters, write back.

Parameter values follow mergekit 0.1.5: a scalar; a list of numbers (a gradient interpolated over the layers,
t = layer / (num_layers - 1), t = 0 for tensors outside the layers); or a list of `{filter, value}` conditions
where the first whose `filter` is a substring of the tensor name (or is absent / "*") wins. A per-model value
takes precedence over the top-level `parameters`, which take precedence over the method's default.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from engine.errors import ConfigError, MergescopeWarning
from engine.methods import KNOWN_PARAMETERS, METHODS, REQUIRED, MergeMethod
from engine.tokenizer_spec import TokenizerSpec, parse_tokenizer

_DTYPES = ("float32", "float16", "bfloat16", "float64")
_LAYER_RE = re.compile(r"(?:^|\.)(?:layers|h)\.(\d+)\.")  # Llama-style `layers.N.`, GPT-2 `h.N.`
_TOP_LEVEL_KEYS = {
    "merge_method", "base_model", "models", "parameters", "dtype", "out_dtype",
    "tokenizer_source", "chat_template", "name", "compute_dtype", "slices", "tokenizer",
}  # fmt: skip


class IgnoredParameterWarning(MergescopeWarning):
    """A field or parameter the merge does not read: accepted and ignored, as mergekit does."""


# Fields mergekit ignores (its pydantic models drop unknown keys) for which a better spelling exists.
_FIELD_HINTS = {
    "revision": "; mergekit pins a revision in the model reference itself: 'model: repo@revision'",
    "residual_weight": "; mergekit 0.1.5 parses it but never reads it",
    "merge_method": "; mergekit has one merge_method per config (per-slice methods are not read)",
}


def _did_you_mean(name: str, known: Iterable[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.75)
    return f"; did you mean '{close[0]}'?" if close else ""


def _unknown_fields(entry: Mapping[str, Any], known: set[str], where: str, ignored: list[str]) -> None:
    """Fields mergekit does not know are dropped by it without a word: accepted here, with a note naming each."""
    for key in sorted(set(entry) - known, key=str):
        hint = _FIELD_HINTS.get(key) or _did_you_mean(str(key), known)
        ignored.append(f"{where}: field '{key}' is ignored (mergekit does not read it{hint})")


@dataclass(frozen=True)
class ModelSpec:
    model: str
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SliceSource:
    """One model's contiguous run of layers [start, stop) feeding an output slice (mergekit `sources[]`)."""

    model: str
    layer_range: tuple[int, int]
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SliceSpec:
    """One output slice: its layers are merged from the sources' layers, position by position."""

    sources: tuple[SliceSource, ...]
    base_model: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def num_layers(self) -> int:
        start, stop = self.sources[0].layer_range
        return stop - start


@dataclass(frozen=True)
class MergeConfig:
    merge_method: str
    models: tuple[ModelSpec, ...]
    base_model: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    dtype: str | None = None
    out_dtype: str | None = None
    tokenizer_source: str | None = None
    chat_template: str | None = None
    # Ours (mergekit ignores unknown top-level keys): compute in this dtype instead of `dtype`, e.g. float32 for
    # more precise half-precision merges; the output dtype stays mergekit's (out_dtype, else dtype).
    compute_dtype: str | None = None
    # What validation accepted but the method ignores (also issued as IgnoredParameterWarning).
    ignored: tuple[str, ...] = field(default=(), compare=False)
    slices: tuple[SliceSpec, ...] = ()
    tokenizer: TokenizerSpec | None = None

    @property
    def method(self) -> MergeMethod:
        return METHODS[self.merge_method]

    def input_models(self) -> list[str]:
        """The models merged into the base (the base itself excluded when the method treats it apart)."""
        refs = [m.model for m in self.models] or [s.model for p in self.slices for s in p.sources]
        refs = list(dict.fromkeys(refs))
        if self.method.uses_base:
            return [r for r in refs if r != self.base_model]
        # mergekit adds a base_model missing from the models as one more input of a method that ignores bases
        return refs + [self.base_model] if self.base_model and self.base_model not in refs else refs

    def refs(self) -> list[str]:
        """Every checkpoint the merge reads, base first, without repeats."""
        out = [self.base_model] if self.base_model else []
        out += [m.model for m in self.models]
        for piece in self.slices:
            out += [piece.base_model] if piece.base_model else []
            out += [s.model for s in piece.sources]
        return list(dict.fromkeys(out))

    def slice_base(self, piece: SliceSpec) -> str | None:
        """A slice's base model (its own, else the config's), as the method sees it."""
        return piece.base_model or self.base_model

    def slice_inputs(self, piece: SliceSpec) -> list[SliceSource]:
        """A slice's sources merged into its base (the base excluded when the method treats it apart)."""
        base = self.slice_base(piece)
        if self.method.uses_base:
            return [s for s in piece.sources if s.model != base]
        return list(piece.sources)

    def slice_params(
        self, piece: SliceSpec, tensor_name: str, t: float
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Per-model (for `slice_inputs`, in order) and global parameters of one tensor of a slice at gradient
        position t. Precedence as mergekit: the source's own, the slice's, the config's, the method default."""
        method = self.method
        params = {
            name: _resolve(name, [piece.parameters, self.parameters], default, tensor_name, t)
            for name, default in method.global_params.items()
        }
        model_params = [
            {
                name: _resolve(
                    name, [src.parameters, piece.parameters, self.parameters], default, tensor_name, t,
                    model=src.model,
                )  # fmt: skip
                for name, default in method.model_params.items()
            }
            for src in self.slice_inputs(piece)
        ]
        return model_params, params

    def params_for(
        self, tensor_name: str, num_layers: int | None
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Resolved per-model parameters (for `input_models()`, in order) and global parameters for one tensor."""
        t = layer_position(tensor_name, num_layers)
        method = self.method
        params = {
            name: _resolve(name, [self.parameters], default, tensor_name, t)
            for name, default in method.global_params.items()
        }
        by_model = {m.model: m.parameters for m in self.models}
        model_params = [
            {
                name: _resolve(
                    name, [by_model.get(ref, {}), self.parameters], default, tensor_name, t, model=ref
                )
                for name, default in method.model_params.items()
            }
            for ref in self.input_models()
        ]
        return model_params, params

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"merge_method": self.merge_method}
        if self.base_model:
            out["base_model"] = self.base_model
        if self.slices:
            out["slices"] = [_slice_dict(piece) for piece in self.slices]
        else:
            out["models"] = [
                {"model": m.model, **({"parameters": dict(m.parameters)} if m.parameters else {})}
                for m in self.models
            ]
        if self.parameters:
            out["parameters"] = dict(self.parameters)
        for key in ("dtype", "out_dtype", "tokenizer_source", "chat_template", "compute_dtype"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        if self.tokenizer is not None:
            out["tokenizer"] = self.tokenizer.to_dict()
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)

    def key(self) -> str:
        """Stable hash of the config's meaning (used to tell variants apart)."""
        return hashlib.sha256(self.to_yaml().encode()).hexdigest()[:16]


def layer_position(tensor_name: str, num_layers: int | None) -> float:
    """mergekit's gradient coordinate t for a tensor: layer / (num_layers - 1); 0 outside the layers."""
    match = _LAYER_RE.search(tensor_name)
    if not match or not num_layers:
        return 0.0
    return int(match.group(1)) / (num_layers - 1) if num_layers > 1 else 1.0


def _coerce(value: Any, kind: type, where: str) -> Any:
    """Validate one scalar as the parameter's type (bool or float), as mergekit's pydantic check does."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, (int, float)) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.strip().lower() in ("true", "yes", "1")
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise ConfigError(f"{where}: expected a number, got {value!r}")


def param_kind(default: Any) -> type:
    return bool if isinstance(default, bool) else float


def _evaluate(setting: Any, tensor_name: str, t: float, kind: type = float, where: str = "parameter") -> Any:
    """mergekit's evaluation of a parameter setting for one tensor at gradient position t."""
    if setting is None:
        return None
    if isinstance(setting, (bool, int, float, str)):
        return _coerce(setting, kind, where)
    if isinstance(setting, list):
        if not setting:
            return None
        if all(isinstance(v, (bool, int, float, str)) for v in setting):
            values = [_coerce(v, kind, where) for v in setting]
            if kind is bool:  # discrete values are picked, not interpolated
                return values[int(t * (len(values) - 1))]
            scaled = t * (len(values) - 1)
            i0 = int(scaled)
            i1 = min(len(values) - 1, i0 + 1)
            frac = scaled - i0
            return (1 - frac) * values[i0] + frac * values[i1]
        for cond in setting:
            filt = cond.get("filter")
            if filt is None or filt == "*" or (tensor_name and filt in tensor_name):
                return _evaluate(cond.get("value"), tensor_name, t, kind, where)
        return None
    if isinstance(setting, Mapping) and "value" in setting:
        return _evaluate([setting], tensor_name, t, kind, where)
    raise ConfigError(f"{where}: unexpected parameter value {setting!r}")


def _resolve(
    name: str,
    scopes: list[Mapping[str, Any]],
    default: Any,
    tensor_name: str,
    t: float,
    model: str | None = None,
) -> Any:
    kind = param_kind(default)
    for scope in scopes:
        if name in scope:
            value = _evaluate(scope[name], tensor_name, t, kind, f"parameters.{name}")
            if value is not None:
                return value
    if default is REQUIRED:
        where = f"model {model}, tensor {tensor_name}" if model else f"tensor {tensor_name}"
        raise ConfigError(f"missing required parameter '{name}' ({where})")
    return default


def _check_value(setting: Any, where: str, kind: type = float) -> None:
    """Reject parameter values mergekit would not accept (so errors name the field, not a tensor later)."""
    if isinstance(setting, (bool, int, float, str)):
        _coerce(setting, kind, where)
        return
    if isinstance(setting, Mapping):
        setting = [setting]
    if isinstance(setting, list) and setting:
        for item in setting:
            if isinstance(item, Mapping):
                unknown = set(item) - {"filter", "value"}
                if unknown or "value" not in item:
                    # mergekit's early examples spelt the filter 'pattern'; 0.1.5 then applies the first entry to
                    # every tensor, which is never what such a config meant.
                    hint = "; 'pattern' is now spelt 'filter'" if "pattern" in unknown else ""
                    raise ConfigError(
                        f"{where}: a condition needs 'value' and optional 'filter', got {dict(item)}{hint}"
                    )
                if item.get("filter") is not None and not isinstance(item["filter"], str):
                    raise ConfigError(f"{where}: filter must be a string, got {item['filter']!r}")
                _check_value(item["value"], where, kind)
            elif isinstance(item, (bool, int, float, str)):
                _coerce(item, kind, where)
            else:
                raise ConfigError(f"{where}: unsupported list element {item!r}")
        return
    raise ConfigError(f"{where}: unsupported value {setting!r}")


# Parameters with a bounded meaning (a fraction kept, a fraction of magnitude): a value outside is a typo that would
# otherwise silently drop or distort a task vector (density -0.2 keeps nothing). Closed intervals.
PARAM_RANGES: dict[str, tuple[float, float]] = {
    "density": (0.0, 1.0),
    "epsilon": (0.0, 1.0),
    "gamma": (0.0, 1.0),
    "select_topk": (0.0, 1.0),  # SCE's fraction of entries selected
}


def _scalars(setting: Any) -> Iterator[Any]:
    """Every scalar a parameter setting can evaluate to (a gradient interpolates between its own values)."""
    if isinstance(setting, Mapping):
        setting = [setting]
    if isinstance(setting, list):
        for item in setting:
            yield from _scalars(item["value"] if isinstance(item, Mapping) else item)
    elif setting is not None:
        yield setting


def _check_range(name: str, setting: Any, where: str) -> None:
    bounds = PARAM_RANGES.get(name)
    if bounds is None:
        return
    lo, hi = bounds
    for value in _scalars(setting):
        number = _coerce(value, float, where)
        if not lo <= number <= hi:
            raise ConfigError(f"{where}: {number:g} is out of range; {name} must be between {lo:g} and {hi:g}")


def _check_params(
    params: Any, used: Mapping[str, Any], where: str, method: MergeMethod, ignored: list[str], why: str = ""
) -> dict[str, Any]:
    """Validate the keys `used` here; accept every other name with a note in `ignored` (a parameter another
    method declares, or one no method reads, with its likely spelling), as mergekit ignores whatever the method
    does not read."""
    if params is None:
        return {}
    if not isinstance(params, Mapping):
        raise ConfigError(f"{where}: 'parameters' must be a mapping")
    for name, value in params.items():
        if name in used:
            _check_value(value, f"{where}.parameters.{name}", param_kind(used[name]))
            _check_range(name, value, f"{where}.parameters.{name}")
        elif name in KNOWN_PARAMETERS or name in method.model_params or name in method.global_params:
            ignored.append(f"{where}: parameter '{name}' is ignored by merge_method {method.name}{why}")
        else:
            # mergekit reads parameters by name and drops the rest, so a config with a stray name runs there.
            allowed = sorted({*method.model_params, *method.global_params})
            ignored.append(
                f"{where}: unknown parameter '{name}' is ignored: no mergekit method reads it (merge_method "
                f"{method.name} reads {', '.join(allowed) or 'none'}{_did_you_mean(str(name), allowed)})"
            )
    return dict(params)


def _slice_dict(piece: SliceSpec) -> dict[str, Any]:
    out: dict[str, Any] = {
        "sources": [
            {
                "model": src.model,
                "layer_range": list(src.layer_range),
                **({"parameters": dict(src.parameters)} if src.parameters else {}),
            }
            for src in piece.sources
        ]
    }
    if piece.base_model:
        out["base_model"] = piece.base_model
    if piece.parameters:
        out["parameters"] = dict(piece.parameters)
    return out


def _layer_range(value: Any, where: str) -> tuple[int, int]:
    ok = isinstance(value, (list, tuple)) and len(value) == 2
    ok = ok and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    if not ok or not 0 <= value[0] < value[1]:
        raise ConfigError(f"{where}.layer_range: expected [start, stop) with 0 <= start < stop, got {value!r}")
    return int(value[0]), int(value[1])


def _parse_slices(data: Any, method: MergeMethod, ignored: list[str], source: str) -> tuple[SliceSpec, ...]:
    if not isinstance(data, list) or not data:
        raise ConfigError(f"{source}: 'slices' must be a non-empty list")
    slices = []
    for i, entry in enumerate(data):
        where = f"{source}: slices[{i}]"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{where}: expected a mapping with 'sources'")
        _unknown_fields(entry, {"sources", "base_model", "parameters"}, where, ignored)
        sources_data = entry.get("sources")
        if not isinstance(sources_data, list) or not sources_data:
            raise ConfigError(f"{where}: 'sources' must be a non-empty list")
        sources = []
        for j, src in enumerate(sources_data):
            at = f"{where}.sources[{j}]"
            if not isinstance(src, Mapping) or not isinstance(src.get("model"), str):
                raise ConfigError(f"{at}: needs a 'model' path or hub id")
            _unknown_fields(src, {"model", "layer_range", "parameters"}, at, ignored)
            if "layer_range" not in src:
                raise ConfigError(f"{at}: needs a 'layer_range' [start, stop)")
            sources.append(
                SliceSource(
                    src["model"],
                    _layer_range(src["layer_range"], at),
                    _check_params(src.get("parameters"), method.model_params, at, method, ignored),
                )
            )
        lengths = {s.layer_range[1] - s.layer_range[0] for s in sources}
        if len(lengths) > 1:
            raise ConfigError(f"{where}: every source of a slice must span the same number of layers")
        models = [s.model for s in sources]
        if len(set(models)) != len(models):
            raise ConfigError(f"{where}: a model appears twice among the sources")
        base = entry.get("base_model")
        if base is not None and not isinstance(base, str):
            raise ConfigError(f"{where}.base_model: expected a model path or hub id")
        params = _check_params(
            entry.get("parameters"), {**method.model_params, **method.global_params}, where, method, ignored
        )
        slices.append(SliceSpec(tuple(sources), base, params))
    return tuple(slices)


def _check_inputs(config: MergeConfig, source: str) -> None:
    """mergekit's input contract per tensor group: the base must be among a slice's sources, passthrough takes
    one model, and something besides the base must be merged."""
    method = config.method
    if config.slices:
        for i, piece in enumerate(config.slices):
            base = config.slice_base(piece)
            models = [s.model for s in piece.sources]
            if method.requires_base and base not in models:
                raise ConfigError(
                    f"{source}: slices[{i}]: base model {base} is not among the slice's sources "
                    "(mergekit needs it there)"
                )
            if method.name == "passthrough" and len(models) != 1:
                raise ConfigError(f"{source}: slices[{i}]: passthrough takes exactly one source per slice")
            if not config.slice_inputs(piece):
                raise ConfigError(f"{source}: slices[{i}]: nothing to merge besides the base model")
        return
    if method.name == "passthrough":
        models = {m.model for m in config.models} | ({config.base_model} if config.base_model else set())
        if len(models) != 1:
            raise ConfigError(f"{source}: models: passthrough takes exactly one model (base_model included)")
    count = len(config.input_models())
    low, high = method.inputs
    besides = " besides the base model" if method.uses_base and config.base_model else ""
    if count == 0:
        raise ConfigError(f"{source}: models: nothing to merge{besides}")
    if count < low or (high is not None and count > high):
        wanted = f"exactly {low}" if low == high else f"at least {low}" if high is None else f"{low} to {high}"
        raise ConfigError(
            f"{source}: models: merge_method {method.name} takes {wanted} model(s){besides}, got {count}"
        )


def _same_model(a: str, b: str) -> bool:
    if a == b:
        return True
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    try:
        return pa.exists() and pb.exists() and pa.resolve() == pb.resolve()
    except (OSError, RuntimeError):
        return False


def config_from_dict(data: Any, source: str = "config", *, strict: bool = False) -> MergeConfig:
    """A validated MergeConfig. Fields and parameters the merge does not read are accepted with a warning each,
    as mergekit accepts them; `strict` refuses them instead."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    ignored: list[str] = []
    if data.get("modules") is not None:
        data = _lift_default_module(data, source, ignored)
    _unknown_fields(data, _TOP_LEVEL_KEYS, source, ignored)
    method_name = data.get("merge_method")
    if method_name not in METHODS:
        raise ConfigError(
            f"{source}: merge_method: unknown method {method_name!r} (known: {', '.join(sorted(METHODS))})"
        )
    method = METHODS[method_name]
    base = data.get("base_model")
    models_data = data.get("models")
    slices = ()
    if data.get("slices") is not None:
        if models_data:
            raise ConfigError(f"{source}: give either 'models' or 'slices', not both")
        slices = _parse_slices(data["slices"], method, ignored, source)
        models_data = []
    elif not isinstance(models_data, list) or not models_data:
        raise ConfigError(f"{source}: 'models' (or 'slices') must be a non-empty list")
    models = []
    for i, entry in enumerate(models_data):
        if isinstance(entry, str):
            entry = {"model": entry}
        if not isinstance(entry, Mapping) or not isinstance(entry.get("model"), str):
            raise ConfigError(f"{source}: models[{i}] needs a 'model' path or hub id")
        _unknown_fields(entry, {"model", "parameters"}, f"{source}: models[{i}]", ignored)
        is_base = method.uses_base and entry["model"] == base
        params = _check_params(
            entry.get("parameters"),
            {} if is_base else method.model_params,
            f"{source}: models[{i}]",
            method,
            ignored,
            " (mergekit does not read per-model parameters of the base model)" if is_base
            else " (mergekit reads it only from the top-level parameters)",
        )  # fmt: skip
        first = next((j for j, m in enumerate(models) if _same_model(m.model, entry["model"])), None)
        if first is not None:
            # Parameters are looked up by model, so a repeat would silently take the other entry's parameters.
            raise ConfigError(
                f"{source}: models[{i}]: {entry['model']} is listed twice (also models[{first}]); list each model "
                "once (to weigh it more, raise its weight)"
            )
        models.append(ModelSpec(entry["model"], params))
    for key in ("dtype", "out_dtype", "compute_dtype"):
        value = data.get(key)
        if value is not None and str(value).removeprefix("torch.") not in _DTYPES:
            raise ConfigError(f"{source}: {key}: unknown dtype {value!r} (known: {', '.join(_DTYPES)})")
    if method.requires_base and not base and not any(p.base_model for p in slices):
        raise ConfigError(f"{source}: base_model: merge_method {method_name} needs a base_model")
    tokenizer = None
    if data.get("tokenizer") is not None:
        if data.get("tokenizer_source") is not None:
            raise ConfigError(f"{source}: give either 'tokenizer_source' or 'tokenizer', not both")
        tokenizer = parse_tokenizer(data["tokenizer"], f"{source}: tokenizer")
    for key in ("tokenizer_source", "chat_template"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise ConfigError(f"{source}: {key}: expected a string, got {data[key]!r}")
    config = MergeConfig(
        merge_method=method_name,
        models=tuple(models),
        base_model=base,
        parameters=_check_params(
            data.get("parameters"), {**method.model_params, **method.global_params}, source, method, ignored
        ),
        dtype=_dtype_name(data.get("dtype")),
        out_dtype=_dtype_name(data.get("out_dtype")),
        tokenizer_source=data.get("tokenizer_source"),
        chat_template=data.get("chat_template"),
        compute_dtype=_dtype_name(data.get("compute_dtype")),
        ignored=tuple(ignored),
        slices=slices,
        tokenizer=tokenizer,
    )
    _check_inputs(config, source)
    if strict and ignored:
        raise ConfigError("refused in strict mode: " + "; ".join(ignored))
    for note in ignored:
        warnings.warn(note, IgnoredParameterWarning, stacklevel=3)
    return config


def _lift_default_module(data: Mapping[str, Any], source: str, ignored: list[str]) -> dict[str, Any]:
    """mergekit's `modules:` form. A model with one layer stack has one module, `default`, and
    `modules: {default: {slices|models, parameters}}` means the same as those keys at the top level (module
    parameters over the top-level ones); a multi-module model (a VLM's decoder and vision tower) is refused."""
    modules = data["modules"]
    where = f"{source}: modules"
    if data.get("slices") is not None or data.get("models") is not None:
        raise ConfigError(f"{where}: give exactly one of 'models', 'slices' or 'modules'")
    if not isinstance(modules, Mapping) or not modules:
        raise ConfigError(f"{where}: expected a mapping of module name to its 'slices' or 'models'")
    if list(modules) != ["default"]:
        raise ConfigError(
            f"{where}: modules {', '.join(map(str, modules))}: only the single 'default' module of a model with one "
            "layer stack is supported (a multi-module model such as a VLM's text decoder and vision tower is not); "
            "use top-level 'models:' to merge every tensor of every module"
        )
    module = modules["default"]
    if not isinstance(module, Mapping):
        raise ConfigError(f"{where}.default: expected a mapping with 'slices' or 'models'")
    _unknown_fields(module, {"slices", "models", "parameters"}, f"{where}.default", ignored)
    if (module.get("slices") is None) == (module.get("models") is None):
        raise ConfigError(f"{where}.default: give exactly one of 'slices' or 'models'")
    lifted = {k: v for k, v in data.items() if k != "modules"}
    for key in ("slices", "models"):
        if module.get(key) is not None:
            lifted[key] = module[key]
    if module.get("parameters") is not None:
        if not isinstance(module["parameters"], Mapping):
            raise ConfigError(f"{where}.default: 'parameters' must be a mapping")
        lifted["parameters"] = {**(data.get("parameters") or {}), **module["parameters"]}
    return lifted


def _dtype_name(value: Any) -> str | None:
    return str(value).removeprefix("torch.") if value else None


def load_config(path_or_text: str | Path, *, strict: bool = False) -> MergeConfig:
    """Load mergekit YAML from a file path or from YAML text (`strict`: see `config_from_dict`)."""
    source = "config"
    text = str(path_or_text)
    # One line naming a file (any suffix: `merge myconfig`) is a path; text that is no file is YAML.
    one_line = "\n" not in text and len(text) < 4096
    if isinstance(path_or_text, Path) or (one_line and (text.endswith((".yml", ".yaml")) or _is_file(text))):
        path = Path(path_or_text)
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            from engine.fs import describe_os_error

            reason = describe_os_error(exc) if isinstance(exc, OSError) else f"{path}: not a text file ({exc})"
            raise ConfigError(f"config {reason}") from exc
        source = str(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"{source}: invalid YAML{where}: {getattr(exc, 'problem', exc)}") from exc
    return config_from_dict(data, source, strict=strict)


def _is_file(text: str) -> bool:
    try:
        return Path(text).expanduser().is_file()
    except (OSError, ValueError):
        return False


def ptm_config(
    base: str | Path,
    general: str | Path,
    skills: Mapping[str | Path, float],
    *,
    method: str = "task_arithmetic",
    parameters: Mapping[str, Any] | None = None,
    dtype: str = "float32",
) -> MergeConfig:
    """θ_G + Σ ω_k (θ_Dk − θ_pre) as a mergekit config: base = θ_pre, general at weight 1, each skill at ω_k.

    The variant speaks with the general model's tokenizer and chat template, and the YAML says so (mergekit would
    otherwise take both from the base): `chat_template` is the general's template text, and `tokenizer_source`
    the general model when its tokenizer holds exactly its vocab_size tokens (for a padded embedding matrix
    mergekit would cut the padding rows, so there the base's identical vocabulary is left to stand)."""
    models = [ModelSpec(str(general), {"weight": 1.0})]
    models += [ModelSpec(str(path), {"weight": float(w)}) for path, w in skills.items()]
    tokenizer_source, chat_template = _general_tokenizer(Path(general))
    data = MergeConfig(
        merge_method=method,
        models=tuple(models),
        base_model=str(base),
        parameters=dict(parameters or {}),
        dtype=dtype,
        tokenizer_source=tokenizer_source,
        chat_template=chat_template,
    ).to_dict()
    return config_from_dict(data, "ptm_config")


def _general_tokenizer(general: Path) -> tuple[str | None, str | None]:
    from engine.chat_template import model_chat_template
    from engine.tokenizer_build import tokenizer_length
    from engine.vocab import vocab_size_of

    if not general.is_dir():  # a hub id not downloaded yet: nothing to say
        return None, None
    try:
        config = json.loads((general / "config.json").read_text())
    except (OSError, ValueError):
        config = {}
    length = tokenizer_length(general)
    source = str(general) if length is not None and length == vocab_size_of(config) else None
    return source, model_chat_template(general)
