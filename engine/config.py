"""Merge configs in mergekit's YAML: parse, validate, resolve per-tensor parameters, write back.

Parameter values follow mergekit 0.1.5: a scalar; a list of numbers (a gradient interpolated over the layers,
t = layer / (num_layers - 1), t = 0 for tensors outside the layers); or a list of `{filter, value}` conditions
where the first whose `filter` is a substring of the tensor name (or is absent / "*") wins. A per-model value
takes precedence over the top-level `parameters`, which take precedence over the method's default.
"""

from __future__ import annotations

import hashlib
import re
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from engine.errors import ConfigError, MergescopeWarning
from engine.methods import KNOWN_PARAMETERS, METHODS, REQUIRED, MergeMethod

_DTYPES = ("float32", "float16", "bfloat16", "float64")
_LAYER_RE = re.compile(r"(?:^|\.)layers\.(\d+)\.")
_TOP_LEVEL_KEYS = {
    "merge_method", "base_model", "models", "parameters", "dtype", "out_dtype",
    "tokenizer_source", "chat_template", "name", "compute_dtype",
}  # fmt: skip


class IgnoredParameterWarning(MergescopeWarning):
    """A parameter the merge method does not read: accepted and ignored, as mergekit does."""


@dataclass(frozen=True)
class ModelSpec:
    model: str
    parameters: dict[str, Any] = field(default_factory=dict)


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

    @property
    def method(self) -> MergeMethod:
        return METHODS[self.merge_method]

    def input_models(self) -> list[str]:
        """The models merged into the base (the base itself excluded when the method treats it apart)."""
        refs = [m.model for m in self.models]
        if self.method.uses_base:
            return [r for r in refs if r != self.base_model]
        # mergekit adds a base_model missing from the models as one more input of a method that ignores bases
        return refs + [self.base_model] if self.base_model and self.base_model not in refs else refs

    def refs(self) -> list[str]:
        """Every checkpoint the merge reads, base first, without repeats."""
        out = [self.base_model] if self.base_model else []
        out += [m.model for m in self.models if m.model not in out]
        return out

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
        out["models"] = [
            {"model": m.model, **({"parameters": dict(m.parameters)} if m.parameters else {})}
            for m in self.models
        ]
        if self.parameters:
            out["parameters"] = dict(self.parameters)
        for key in ("dtype", "out_dtype", "tokenizer_source", "chat_template", "compute_dtype"):
            if getattr(self, key):
                out[key] = getattr(self, key)
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
                    raise ConfigError(
                        f"{where}: a condition needs 'value' and optional 'filter', got {dict(item)}"
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
    """Validate the keys `used` here; accept (with a note in `ignored`) a parameter another method declares, as
    mergekit ignores whatever the method does not read; refuse names no method declares (typos)."""
    if params is None:
        return {}
    if not isinstance(params, Mapping):
        raise ConfigError(f"{where}: 'parameters' must be a mapping")
    for name, value in params.items():
        if name in used:
            _check_value(value, f"{where}.parameters.{name}", param_kind(used[name]))
            _check_range(name, value, f"{where}.parameters.{name}")
        elif name in KNOWN_PARAMETERS or name in method.model_params or name in method.global_params:
            note = f"{where}: parameter '{name}' is ignored by merge_method {method.name}{why}"
            ignored.append(note)
            warnings.warn(note, IgnoredParameterWarning, stacklevel=4)
        else:
            allowed = sorted({*method.model_params, *method.global_params})
            raise ConfigError(
                f"{where}: unknown parameter '{name}' for merge_method {method.name} (allowed: {', '.join(allowed)}; "
                "no mergekit method reads it)"
            )
    return dict(params)


def _check_inputs(config: MergeConfig, source: str) -> None:
    """mergekit's input contract for the method (it fails at merge time; we fail before reading anything)."""
    method = config.method
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


def config_from_dict(data: Any, source: str = "config") -> MergeConfig:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    unknown = set(data) - _TOP_LEVEL_KEYS
    if "slices" in unknown:
        raise ConfigError(f"{source}: 'slices' configs are not supported yet; use 'models:'")
    if unknown:
        raise ConfigError(f"{source}: unknown field(s) {', '.join(sorted(unknown))}")
    method_name = data.get("merge_method")
    if method_name not in METHODS:
        raise ConfigError(
            f"{source}: merge_method: unknown method {method_name!r} (known: {', '.join(sorted(METHODS))})"
        )
    method = METHODS[method_name]
    ignored: list[str] = []
    base = data.get("base_model")
    models_data = data.get("models")
    if not isinstance(models_data, list) or not models_data:
        raise ConfigError(f"{source}: 'models' must be a non-empty list")
    models = []
    for i, entry in enumerate(models_data):
        if isinstance(entry, str):
            entry = {"model": entry}
        if not isinstance(entry, Mapping) or not isinstance(entry.get("model"), str):
            raise ConfigError(f"{source}: models[{i}] needs a 'model' path or hub id")
        extra = set(entry) - {"model", "parameters"}
        if extra:
            raise ConfigError(f"{source}: models[{i}]: unknown field(s) {', '.join(sorted(extra))}")
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
    if method.requires_base and not base:
        raise ConfigError(f"{source}: base_model: merge_method {method_name} needs a base_model")
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
    )
    _check_inputs(config, source)
    return config


def _dtype_name(value: Any) -> str | None:
    return str(value).removeprefix("torch.") if value else None


def load_config(path_or_text: str | Path) -> MergeConfig:
    """Load mergekit YAML from a file path or from YAML text."""
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
    return config_from_dict(data, source)


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
    """θ_G + Σ ω_k (θ_Dk − θ_pre) as a mergekit config: base = θ_pre, general at weight 1, each skill at ω_k."""
    models = [ModelSpec(str(general), {"weight": 1.0})]
    models += [ModelSpec(str(path), {"weight": float(w)}) for path, w in skills.items()]
    data = MergeConfig(
        merge_method=method,
        models=tuple(models),
        base_model=str(base),
        parameters=dict(parameters or {}),
        dtype=dtype,
    ).to_dict()
    return config_from_dict(data, "ptm_config")
