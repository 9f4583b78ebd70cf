"""Noise sources: the Brownian tree is one path for every grid; i.i.d. draws are reproducible."""

from __future__ import annotations

import math

import torch

from solvers import BrownianTreeNoise, IidNoise, ZeroNoise


def test_brownian_increments_sum_across_grids():
    like = torch.zeros(1000, 2, dtype=torch.float64)
    tree = BrownianTreeNoise(7, 0.001, 1.0)
    coarse = torch.linspace(1.0, 0.001, 5, dtype=torch.float64).tolist()
    fine = torch.linspace(1.0, 0.001, 17, dtype=torch.float64).tolist()
    total_coarse = sum(tree.increment(a, b, like) for a, b in zip(coarse[:-1], coarse[1:], strict=True))
    other = BrownianTreeNoise(7, 0.001, 1.0)  # fresh instance, fresh cache: same path
    total_fine = sum(other.increment(a, b, like) for a, b in zip(fine[:-1], fine[1:], strict=True))
    torch.testing.assert_close(total_coarse, total_fine, rtol=1e-12, atol=1e-12)
    # a coarse increment equals the sum of the fine increments inside it
    inner = sum(other.increment(a, b, like) for a, b in zip(fine[:4], fine[1:5], strict=True))
    torch.testing.assert_close(tree.increment(coarse[0], coarse[1], like), inner)


def test_brownian_increment_statistics():
    like = torch.zeros(200_000, dtype=torch.float64)
    tree = BrownianTreeNoise(1, 0.0, 1.0)
    a, b, c = 0.9, 0.6, 0.25
    d1, d2 = tree.increment(a, b, like), tree.increment(b, c, like)
    assert abs(float(d1.var()) - 0.3) < 0.01 and abs(float(d2.var()) - 0.35) < 0.01
    assert abs(float((d1 * d2).mean())) < 0.01  # disjoint intervals are independent
    z = tree.normal(a, b, like)
    assert abs(float(z.std()) - 1) < 0.01


def test_seeds_and_extra_draws():
    like = torch.zeros(64, 3)
    t1, t2 = BrownianTreeNoise(3, 0.0, 1.0), BrownianTreeNoise(3, 0.0, 1.0)
    assert torch.equal(t1.extra(0.5, 2, like), t2.extra(0.5, 2, like))
    assert not torch.equal(t1.extra(0.5, 2, like), t1.extra(0.5, 3, like))
    other = BrownianTreeNoise(4, 0.0, 1.0)
    assert not torch.equal(other.increment(1.0, 0.5, like), t1.increment(1.0, 0.5, like))
    assert t1.increment(1.0, 0.5, like).dtype == torch.float32
    i1, i2 = IidNoise(5), IidNoise(5)
    assert torch.equal(i1.normal(1, 0.5, like), i2.normal(1, 0.5, like))
    expected = math.sqrt(0.25) * IidNoise(5).normal(1.0, 0.75, like)
    torch.testing.assert_close(IidNoise(5).increment(1.0, 0.75, like), expected)
    assert not ZeroNoise().normal(1, 0, like).any()


def test_brownian_tree_cache_never_changes_values():
    """W at queried times is memoized within a byte budget: a tree with a tiny budget (everything
    evicted) and a fresh tree per query give the same values as one warm tree."""
    import torch

    from solvers.noise import BrownianTreeNoise

    like = torch.zeros(7, 3)
    times = [0.9, 0.1, 0.5, 0.1, 0.9, 0.33, 0.5]
    warm = BrownianTreeNoise(3, 0.0, 1.0)
    starved = BrownianTreeNoise(3, 0.0, 1.0, cache_bytes=1)
    for t in times:
        fresh = BrownianTreeNoise(3, 0.0, 1.0).value(t, like)
        assert torch.equal(warm.value(t, like), fresh) and torch.equal(starved.value(t, like), fresh)
