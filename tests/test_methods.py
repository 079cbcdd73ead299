"""Each merge method against values computed by hand on small tensors, and parameter resolution (filters,
layer gradients, precedence) against the mergekit rules."""

from __future__ import annotations

import math

import pytest
import torch

from engine.config import layer_position, load_config
from engine.errors import ConfigError
from engine.methods import METHODS, REQUIRED


def run(method, base, tensors, model_params, **params):
    m = METHODS[method]
    full = {**{k: v for k, v in m.global_params.items() if v is not REQUIRED}, **params}
    mp = [{**{k: v for k, v in m.model_params.items() if v is not REQUIRED}, **p} for p in model_params]
    gen = torch.Generator().manual_seed(0) if m.random else None
    t = [torch.tensor(x, dtype=torch.float32) for x in tensors]
    b = torch.tensor(base, dtype=torch.float32) if base is not None else None
    return m.fn(b, t, mp, full, gen)


def close(a, b):
    assert torch.allclose(a, torch.tensor(b, dtype=torch.float32), atol=1e-6), (a, b)


def test_linear():
    close(run("linear", None, [[1, 2], [3, 6]], [{"weight": 1}, {"weight": 3}]), [2.5, 5.0])
    close(run("linear", None, [[1, 2], [3, 6]], [{"weight": 1}, {"weight": 3}], normalize=False), [10, 20])


def test_task_arithmetic():
    out = run("task_arithmetic", [1, 1, 1], [[2, 0, 1], [1, 3, 1]], [{"weight": 0.5}, {"weight": 1}], **{"lambda": 2})
    close(out, [2, 4, 1])
    # normalize divides the weighted sum of deltas by the sum of weights: (0.5·1 + 1·0) / 1.5
    out = run("task_arithmetic", [1, 1, 1], [[2, 0, 1], [1, 3, 1]], [{"weight": 0.5}, {"weight": 1}], normalize=True)
    close(out, [1 + 0.5 / 1.5, 1 + (-0.5 + 2) / 1.5, 1])


def test_ties_trims_elects_and_normalizes():
    # densities 0.5 keep the two largest |delta|: [3, 0, 0, -2] and [0, -2, 0, 4]; weighted by 2 and 1:
    # [6, 0, 0, -4] + [0, -2, 0, 4] -> signs [+, -, +(tie), +]; agreeing: [6, -2, 0, 4] / weights [2, 1, 1, 1]
    out = run(
        "ties",
        [0, 0, 0, 0],
        [[3, -1, 0.5, -2], [-1, -2, 0.2, 4]],
        [{"weight": 2, "density": 0.5}, {"weight": 1, "density": 0.5}],
    )
    close(out, [3, -2, 0, 4])
    out = run("ties", [0, 0, 0, 0], [[3, -1, 0.5, -2], [-1, -2, 0.2, 4]],
              [{"weight": 2, "density": 0.5}, {"weight": 1, "density": 0.5}], normalize=False)  # fmt: skip
    close(out, [6, -2, 0, 4])


def test_ties_keeps_at_least_one_and_breaks_ties_to_exact_count():
    out = run("ties", [0, 0, 0, 0], [[1, 1, 1, 1]], [{"weight": 1, "density": 0.5}])
    assert int((out != 0).sum()) == 2  # four equal magnitudes, exactly k = 2 kept
    out = run("ties", [0, 0, 0], [[0.1, -5, 0.2]], [{"weight": 1, "density": 0.01}])
    close(out, [0, -5, 0])  # k = max(1, int(0.03)) = 1


def test_breadcrumbs_drops_outliers_and_small():
    delta = [0.1 * (i + 1) for i in range(10)]
    # density 0.5 -> keep 5; gamma 0.2 -> drop the 2 largest; so the 3 smallest go too: keep 0.4..0.8
    out = run("breadcrumbs", [0] * 10, [delta], [{"weight": 1, "density": 0.5, "gamma": 0.2}])
    close(out, [0, 0, 0, 0.4, 0.5, 0.6, 0.7, 0.8, 0, 0])
    # rescale restores the L1 norm: 5.5 / 3.0
    out = run("breadcrumbs", [0] * 10, [delta], [{"weight": 1, "density": 0.5, "gamma": 0.2}], rescale=True)
    close(out, [0, 0, 0] + [v * 5.5 / 3.0 for v in (0.4, 0.5, 0.6, 0.7, 0.8)] + [0, 0])


def test_band_selection_over_chunks_with_ties_is_exact_and_rewinds():
    """Breadcrumbs' band fed in chunks: [skip, skip + k) by magnitude, ties kept in index order, and a second pass
    after `rewind` gives the same masks (the L1-rescale pass and the merging pass must agree)."""
    from engine.methods._task_vectors import middle_selector

    delta = torch.tensor([5.0, 1, 1, 1, 1, 1, 1, 1, 0.1, 0.2, 3, 1])  # eight 1s straddle the band's lower edge
    chunks = list(delta.split(5))
    band = middle_selector(delta.numel(), density=0.5, gamma=0.1)  # skip the top int(1.2) = 1 (5.0), keep 6
    for feed, settle in (("feed_high", "settle_high"), ("feed_low", "settle_low")):
        for chunk in chunks:
            getattr(band, feed)(chunk)
        getattr(band, settle)()
    first = torch.cat([band.mask(c) for c in chunks])
    band.rewind()
    second = torch.cat([band.mask(c) for c in chunks])
    assert torch.equal(first, second)
    assert first.tolist() == [0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, 0]  # 3.0, then the first five 1s in index order
    # The whole-tensor form breaks the ties as mergekit's sort does (its order, not index order): the same band.
    whole = METHODS["breadcrumbs"].fn(torch.zeros(12), [delta], [{"weight": 1.0, "density": 0.5, "gamma": 0.1}],
                                      {"normalize": False, "lambda": 1.0}).ne(0)  # fmt: skip
    assert int(whole.sum()) == 6 and whole[10] and not whole[0] and set(delta[whole].tolist()) == {1.0, 3.0}


def test_breadcrumbs_ties():
    out = run("breadcrumbs_ties", [0, 0, 0, 0], [[1, -2, 3, -4], [-1, 2, -3, 4]],
              [{"weight": 1, "density": 0.5, "gamma": 0.25}, {"weight": 0.5, "density": 0.5, "gamma": 0.25}])  # fmt: skip
    # each keeps ranks 1..2 of |delta| (drops the 1 top and 1 smallest): [0, -2, 3, 0], [0, 2, -3, 0]·0.5
    # sums [0, -1, 1.5, 0]: signs [+, -, +, +]; agreeing: [0, -2, 3, 0] (no normalize by default)
    close(out, [0, -2, 3, 0])


def test_dare_density_one_is_task_arithmetic_and_zero_keeps_base():
    close(run("dare_linear", [1, 1], [[2, 3]], [{"weight": 0.5, "density": 1.0}]), [1.5, 2])
    close(run("dare_linear", [1, 1], [[2, 3]], [{"weight": 0.5, "density": 0.0}]), [1, 1])


def test_dare_keeps_density_fraction_and_restores_l1():
    n = 200_000
    delta = torch.randn(n, generator=torch.Generator().manual_seed(1))
    m = METHODS["dare_linear"]
    out = m.fn(torch.zeros(n), [delta], [{"weight": 1.0, "density": 0.3}], {"rescale": True, "lambda": 1.0},
               torch.Generator().manual_seed(2))  # fmt: skip
    kept = (out != 0).float().mean().item()
    assert abs(kept - 0.3) < 5 * math.sqrt(0.3 * 0.7 / n)
    assert math.isclose(out.abs().sum().item(), delta.abs().sum().item(), rel_tol=1e-4)
    # expectation: kept entries are scaled by about 1/density
    ratio = (out[out != 0] / delta[out != 0]).mean().item()
    assert abs(ratio - 1 / 0.3) < 0.05


def test_della_prefers_large_magnitudes():
    n = 400
    rows = torch.arange(1, n + 1, dtype=torch.float32).repeat(200, 1)  # every row: magnitudes 1..400
    m = METHODS["della_linear"]
    out = m.fn(torch.zeros_like(rows), [rows], [{"weight": 1.0, "density": 0.5, "epsilon": 0.3}],
               {"rescale": False, "lambda": 1.0}, torch.Generator().manual_seed(3))  # fmt: skip
    kept = (out != 0).float().mean(dim=0)  # per rank position
    assert abs(kept[:40].mean().item() - 0.23) < 0.04  # smallest ranks: density - eps (+ a little)
    assert abs(kept[-40:].mean().item() - 0.77) < 0.04  # largest ranks: density + eps (- a little)
    assert abs(kept.mean().item() - 0.5) < 0.02


def test_della_rejects_bad_epsilon():
    with pytest.raises(ValueError, match="epsilon"):
        run("della", [0, 0], [[1, 2]], [{"weight": 1, "density": 0.9, "epsilon": 0.15}])


def test_slerp():
    h = math.sqrt(0.5)
    close(run("slerp", [1, 0], [[0, 1]], [{}], t=0.5), [h, h])
    close(run("slerp", [1, 0], [[0, 1]], [{}], t=0.0), [1, 0])
    close(run("slerp", [1, 0], [[0, 1]], [{}], t=1.0), [0, 1])
    close(run("slerp", [2, 0], [[0, 2]], [{}], t=1 / 3), [2 * math.cos(math.pi / 6), 2 * math.sin(math.pi / 6)])
    # (nearly) colinear: linear interpolation
    close(run("slerp", [1, 0], [[2, 0]], [{}], t=0.5), [1.5, 0])


def test_model_stock():
    # orthogonal deltas: cos 0 -> t 0 -> the base
    close(run("model_stock", [0, 0], [[1, 0], [0, 1]], [{}, {}]), [0, 0])
    c = 1 / math.sqrt(2)
    t = 2 * c / (1 + c)
    close(run("model_stock", [0, 0], [[1, 1], [1, 0]], [{}, {}]), [t * 1, t * 0.5])
    # filter_wise: one angle per row; row 0 orthogonal (keeps base), row 1 identical (t = 1 -> average)
    out = run("model_stock", [[0, 0], [0, 0]], [[[1, 0], [1, 2]], [[0, 1], [1, 2]]], [{}, {}], filter_wise=True)
    close(out, [[0, 0], [1, 2]])


CONFIG = """
merge_method: ties
base_model: base
models:
  - model: a
    parameters:
      weight: [{filter: mlp, value: [0, 1]}, {value: 0.5}]
      density: [0.2, 0.4, 1.0]
  - model: b
parameters: {weight: 0.25, density: 0.9, normalize: [true, false], lambda: 2}
"""


def test_parameter_resolution_follows_mergekit():
    config = load_config(CONFIG)
    assert layer_position("model.layers.3.mlp.up_proj.weight", 7) == 0.5
    assert layer_position("model.embed_tokens.weight", 7) == 0.0
    assert layer_position("model.layers.0.mlp.up_proj.weight", 1) == 1.0  # one layer: t = 1, as mergekit
    mp, params = config.params_for("model.layers.3.mlp.up_proj.weight", 7)
    assert mp[0]["weight"] == pytest.approx(0.5)  # filter matched, gradient [0, 1] at t = 0.5
    assert mp[0]["density"] == pytest.approx(0.4)  # gradient over three points at t = 0.5
    assert mp[1] == {"weight": 0.25, "density": 0.9}  # top-level parameters as fallback
    assert params["normalize"] is True and params["lambda"] == 2.0  # booleans pick, not interpolate
    mp, params = config.params_for("model.layers.6.self_attn.q_proj.weight", 7)
    assert mp[0]["weight"] == 0.5 and mp[0]["density"] == pytest.approx(1.0)
    assert params["normalize"] is False
    mp, _ = config.params_for("model.embed_tokens.weight", 7)
    assert mp[0]["density"] == pytest.approx(0.2)  # outside the layers: t = 0


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("merge_method: tie\nmodels: [{model: a}]", "merge_method"),
        ("merge_method: ties\nmodels: [{model: a}]", "base_model"),
        ("merge_method: ties\nbase_model: b\nmodels: [{model: a, parameters: {wieght: 1}}]", "wieght"),
        ("merge_method: ties\nbase_model: b\nmodels: [{model: a, parameters: {weight: abc}}]", "weight"),
        ("merge_method: ties\nbase_model: b\nmodels: [{model: a}]\nparameters: {normalize: maybe}", "normalize"),
        ("merge_method: linear\nmodels: [{model: a, extra: 1}]", "extra"),
        ("merge_method: linear\nmodels: [{model: a}]\nbogus: 1", "bogus"),
        ("merge_method: linear\nmodels: [{model: a\n", "line"),
        ("merge_method: linear\nmodels: [{model: a}]\nout_dtype: fp8", "out_dtype"),
        ("merge_method: ties\nbase_model: b\nmodels: [{model: a, parameters: {density: [{filter: 3, value: 1}]}}]", "filter"),
    ],
)
def test_config_errors_name_the_field(text, field):
    # strict: keys mergekit ignores (`wieght`, `extra`, `bogus`) are refused too, not only warned about
    with pytest.raises(ConfigError, match=field):
        load_config(text, strict=True)


def test_missing_required_weight_names_model_and_tensor():
    config = load_config("merge_method: task_arithmetic\nbase_model: b\nmodels: [{model: a}]")
    with pytest.raises(ConfigError, match=r"weight.*model a, tensor x\.weight"):
        config.params_for("x.weight", 2)


def test_yaml_round_trip():
    config = load_config(CONFIG)
    again = load_config(config.to_yaml())
    assert again == config and again.key() == config.key()


# --- the methods added for mergekit 0.1.5 parity, against values worked out by hand ---


def test_nearswap_takes_close_values():
    # w = clamp(t / |base − other|, 0, 1) = [1, 0.5, 0.125]
    close(run("nearswap", [0, 0, 0], [[0.1, 1, -4]], [{}], t=0.5), [0.1, 0.5, -0.5])


def test_ram_unique_deltas_whole_shared_averaged():
    # entry 0: both contribute -> mean 2; entry 2: only A -> 2; entry 3: 1e-6 is below epsilon -> nobody
    close(run("ram", [0, 0, 0, 0], [[1, 0, 2, 1e-6], [3, 0, 0, 0]], [{}, {}]), [2, 0, 2, 0])


def test_ramplus_tl_scales_unique_deltas_by_shared_ratio():
    # A shares 1 entry and owns 1: rho = 1, lambda = 1 + 0.5·min(1, 1) = 1.5 on its own entry
    close(run("ramplus_tl", [0, 0, 0, 0], [[1, 0, 2, 1e-6], [3, 0, 0, 0]], [{}, {}], r=0.5, alpha=1.0), [2, 0, 3, 0])


def test_sce_weights_by_mean_square_and_erases_disagreeing_signs():
    # mean squares 5.25 and 7.25 -> weights 0.42, 0.58; election +,+(tie),+,+ ; A's -2 and B's -4 are erased
    out = run("sce", [0, 0, 0, 0], [[1, -2, 0, 4], [3, 2, 0, -4]], [{}, {}])
    close(out, [0.42 * 1 + 0.58 * 3, 2, 0, 4])
    # select_topk 0.5 of the 3 nonzero variances [1, 4, 0, 16] keeps int(1.5) = 1 entry: the last
    close(run("sce", [0, 0, 0, 0], [[1, -2, 0, 4], [3, 2, 0, -4]], [{}, {}], select_topk=0.5), [0, 0, 0, 4])


def test_arcee_fusion_keeps_only_outlying_importance():
    # one row, so one KL factor: importance ∝ |delta|; quartile ranks int(q·7) = 1, 3, 5 -> 0.2, 0.4, 0.6;
    # fence 0.4 + 1.5·0.4 = 1.0: only the 3.0 entry passes
    other = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 3.0]
    close(run("arcee_fusion", [0] * 8, [other], [{}]), [0] * 7 + [3.0])


def test_nuslerp_flattened_rows_and_columns():
    r = math.sqrt(0.5)
    close(run("nuslerp", None, [[1, 0], [0, 1]], [{"weight": 1}, {"weight": 1}]), [r, r])
    close(run("nuslerp", [1, 1], [[2, 1], [1, 2]], [{"weight": 1}, {"weight": 1}]), [1 + r, 1 + r])
    # rows, t = 3 / 4: row 0 orthogonal, row 1 colinear (linear interpolation)
    rows = run("nuslerp", None, [[[1, 0], [2, 0]], [[0, 1], [2, 0]]], [{"weight": 1}, {"weight": 3}],
               nuslerp_flatten=False)  # fmt: skip
    close(rows, [[math.sin(math.pi / 8), math.sin(3 * math.pi / 8)], [2, 0]])
    # columns: column 1 starts from a zero vector (angle π/2), column 0 from [1, 2] towards [0, 2]
    cols = run("nuslerp", None, [[[1, 0], [2, 0]], [[0, 1], [2, 0]]], [{"weight": 1}, {"weight": 3}],
               nuslerp_flatten=False, nuslerp_row_wise=True)  # fmt: skip
    theta = math.acos(4 / (math.sqrt(5) * 2))
    c0, c1 = math.sin(0.25 * theta) / math.sin(theta), math.sin(0.75 * theta) / math.sin(theta)
    close(cols, [[c0 * 1 + c1 * 0, math.sin(3 * math.pi / 8)], [c0 * 2 + c1 * 2, 0]])


@pytest.mark.parametrize("method", ["karcher", "multislerp"])
def test_spherical_means_of_two_orthogonal_models(method):
    # directions e1, e2 -> midpoint (e1 + e2)/√2, scaled by the mean norm (1 + 3) / 2
    out = run(method, None, [[1, 0], [0, 3]], [{"weight": 1}, {"weight": 1}])
    close(out, [math.sqrt(2), math.sqrt(2)])


@pytest.mark.parametrize("method", ["karcher", "multislerp", "nuslerp", "sce", "ramplus_tl", "arcee_fusion"])
def test_streamed_form_equals_whole_tensor_form(method):
    """The multi-pass row-chunk form (statistics pass, then merge) gives the whole-tensor result."""
    gen = torch.Generator().manual_seed(3)
    base = torch.randn(40, 16, generator=gen)
    count = 1 if method == "arcee_fusion" else 2
    tensors = [base + 0.3 * torch.randn(40, 16, generator=gen) for _ in range(count)]
    m = METHODS[method]
    params = {k: v for k, v in m.global_params.items() if v is not REQUIRED}
    params |= {"select_topk": 0.3} if method == "sce" else {}
    mp = [{"weight": w} for w in (0.3, 0.9)][:count]
    use_base = None if method == "karcher" else base
    whole = m.fn(use_base, tensors, mp, params)

    def read_chunks():
        for start in range(0, 40, 7):
            yield (None if use_base is None else base[start : start + 7]), [t[start : start + 7] for t in tensors]

    streamed = torch.cat(list(m.stream(read_chunks, base.numel(), mp, params)))
    assert torch.allclose(streamed, whole, atol=1e-5), (streamed - whole).abs().max()
    assert not torch.allclose(whole, base)


@pytest.mark.parametrize("density, splits, edge", [(0.3, False, None), (0.5, True, None), (0.5, True, 0)])
def test_sce_streamed_weights_with_tied_variances(density, splits, edge, monkeypatch):
    """SCE's streamed form sums the weights' squares during its second counting pass; with many equal variances
    (quantized deltas: ties at the threshold, kept in index order) it still gives the top-k selection's merge,
    also when the threshold's bucket holds more entries than it keeps aside (`edge` 0: a pass of their own)."""
    import engine.methods.sce as sce
    from engine.methods.sce import _combine, _count, _variance, _weights

    if edge is not None:
        monkeypatch.setattr(sce, "EDGE_ENTRIES", edge)

    gen = torch.Generator().manual_seed(5)
    base = torch.randn(60, 16, generator=gen)
    tensors = [base + 0.25 * torch.randint(-2, 3, (60, 16), generator=gen).float() for _ in range(3)]
    m = METHODS["sce"]

    def read_chunks():
        for start in range(0, 60, 7):
            yield base[start : start + 7], [t[start : start + 7] for t in tensors]

    streamed = torch.cat(list(m.stream(read_chunks, base.numel(), [{}] * 3, {"select_topk": density})))
    deltas = torch.stack([t - base for t in tensors])
    variance = _variance(deltas).reshape(-1)
    k = _count(torch.count_nonzero(variance), density)
    order = torch.sort(variance, descending=True, stable=True).indices  # ties in index order
    # 0.5: the threshold splits a run of equal variances (the first ones in index order are kept); 0.3: it does not
    assert bool(variance[order[k - 1]] == variance[order[k]]) == splits
    keep = torch.zeros(variance.numel())
    keep[order[:k]] = 1
    deltas = deltas * keep.reshape(base.shape)
    weights = _weights(deltas.double().square().reshape(3, -1).sum(dim=1) / base.numel())
    assert torch.allclose(streamed, _combine(base, deltas, weights), atol=1e-6)


@pytest.mark.parametrize("shape", [(7,), (5, 9), (3, 6, 4)])
def test_della_ranks_are_mergekits(shape):
    """DELLA's keep probabilities from mergekit's ranks (argsort of the argsort along dim 1), drawn alike."""
    from engine.methods._task_vectors import keep_ranked

    delta = torch.randn(shape, generator=torch.Generator().manual_seed(2))
    rows = delta if delta.dim() >= 2 else delta.unsqueeze(0)
    ranks = torch.argsort(rows.abs(), dim=1).argsort(dim=1).float() + 1
    lo, hi = ranks.min(dim=1, keepdim=True).values, ranks.max(dim=1, keepdim=True).values
    probs = 0.3 + ((ranks - lo) / (hi - lo)).clamp(0, 1) * 2 * 0.2
    want = torch.bernoulli(probs, generator=torch.Generator().manual_seed(1)).reshape(shape)
    assert torch.equal(keep_ranked(delta, 0.5, 0.2, generator=torch.Generator().manual_seed(1)), want)
