"""PIRL: the loss against a float64 transcription of the paper's formula, the bank, the views, exact resume."""
import math

import pytest
import torch

from jigsaw.pirl import EPS, MemoryBank
from jigsaw.pirl_views import ViewConfig, pirl_views


def _paper_nce(v, pos, negs, z, prior, t):
    """Misra & van der Maaten eq. 3: -log h(v, m_I) - sum_k log(1 - h(v, m_k)), h = e / (e + K/N), e = exp(s/T)/Z;
    pure Python floats, one sample at a time."""
    def e(m):
        return math.exp(sum(a * b for a, b in zip(v, m)) / t) / z
    h = lambda m: e(m) / (e(m) + prior)  # noqa: E731
    return -math.log(h(pos)) - sum(math.log(1 - h(m)) for m in negs)


def _unit(x):
    n = math.sqrt(sum(a * a for a in x))
    return [a / n for a in x]


def test_the_loss_is_the_papers_nce_with_vissls_fixed_z_on_a_fixed_bank():
    torch.manual_seed(0)
    n_items, dim, batch, k, t, lam = 40, 6, 5, 12, 0.07, 0.5
    bank = MemoryBank(n_items, dim, seed=3, temperature=t, negatives=k, weight=lam)
    bank.memory = bank.memory.double()
    g, f = torch.randn(batch, dim, dtype=torch.float64), torch.randn(batch, dim, dtype=torch.float64)
    rows, negs = torch.tensor([0, 7, 7, 19, 39]), torch.randint(0, n_items, (k,))
    negs[3] = 7  # a sample's own entry among the draws: left out of its negatives
    loss, hits, _ = bank.loss(g, f, rows, negs)
    m = bank.memory.tolist()
    gs, fs = [_unit(x) for x in g.tolist()], [_unit(x) for x in f.tolist()]
    # Z: the first step's mean exp(score / T) over the tiles' term, positives and negatives, times N (VISSL)
    scores = [sum(a * b for a, b in zip(v, m[j])) for v, r in zip(gs, rows.tolist()) for j in [r] + negs.tolist()]
    z = sum(math.exp(s / t) for s in scores) / len(scores) * n_items
    assert abs(bank.z - z) <= 1e-9 * z
    prior = k / n_items
    others = [[m[j] for j in negs.tolist() if j != r] for r in rows.tolist()]
    assert len(others[1]) < k
    expect = sum(lam * _paper_nce(gv, m[r], o, z, prior, t) + (1 - lam) * _paper_nce(fv, m[r], o, z, prior, t)
                 for gv, fv, r, o in zip(gs, fs, rows.tolist(), others)) / batch
    # VISSL adds float32's eps to each of the 1 + K denominators: at most (1 + K) * eps / prior apart
    assert abs(float(loss) - expect) <= (1 + k) * EPS / prior + 1e-12, (float(loss), expect)
    z_before = bank.z
    bank.loss(f, g, rows, negs)
    assert bank.z == z_before  # fixed once
    assert 0 <= int(hits) <= batch


def test_the_bank_moves_only_the_batchs_rows_toward_f_and_stays_unit():
    bank = MemoryBank(10, 4, seed=0, momentum=0.5)
    before = bank.memory.clone()
    f = torch.nn.functional.normalize(torch.randn(2, 4), dim=1)
    bank.update(torch.tensor([1, 4]), f)
    expect = torch.nn.functional.normalize(0.5 * before[[1, 4]] + 0.5 * f, dim=1)
    assert torch.allclose(bank.memory[[1, 4]], expect, atol=1e-7)
    others = [i for i in range(10) if i not in (1, 4)]
    assert torch.equal(bank.memory[others], before[others])
    assert torch.allclose(bank.memory.norm(dim=1), torch.ones(10), atol=1e-6)


def test_negatives_are_capped_by_the_bank_and_replayed_by_iteration():
    bank = MemoryBank(50, 4, seed=1, negatives=32000)
    assert bank.negatives == 50
    assert torch.equal(bank.draw_negatives(7), bank.draw_negatives(7))
    assert not torch.equal(bank.draw_negatives(7), bank.draw_negatives(8))
    state = bank.state_dict()
    other = MemoryBank(50, 4, seed=2)
    other.load_state_dict(state)
    assert torch.equal(other.memory, bank.memory) and other.z == bank.z


def test_views_are_drawn_from_the_generator_alone():
    images = torch.randint(0, 256, (3, 200, 180, 3), dtype=torch.uint8)
    cfg = ViewConfig(image_size=48, cell=60, tile=40)
    a = pirl_views(images, cfg, torch.Generator().manual_seed(5))
    b = pirl_views(images, cfg, torch.Generator().manual_seed(5))
    c = pirl_views(images, cfg, torch.Generator().manual_seed(6))
    assert a[0].shape == (3, 3, 48, 48) and a[1].shape == (3, 9, 3, 40, 40)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[1], c[1])
    assert torch.isfinite(a[1]).all() and a[1].abs().max() < 3  # ImageNet-standardised 0-1 values


def test_a_uniform_image_gives_uniform_tiles_whatever_the_draws():
    """Crops, flips and order move pixels only: a flat grey image stays flat (no coordinates off the image)."""
    images = torch.full((2, 120, 120, 3), 128, dtype=torch.uint8)
    image, tiles = pirl_views(images, ViewConfig(image_size=32, cell=40, tile=32), torch.Generator().manual_seed(0))
    flat = tiles.flatten(3)  # per tile and channel: the jitter changes colours, not places
    assert torch.allclose(flat, flat[..., :1].expand_as(flat), atol=1e-5)


def test_infonce_is_the_softmax_of_the_positive_among_the_negatives_without_z():
    """VISSL's loss_type cross_entropy: -log(e^{s0/T} / (e^{s0/T} + sum_k e^{sk/T})), own entries left out."""
    torch.manual_seed(1)
    n_items, dim, batch, k, t, lam = 30, 5, 4, 9, 0.1, 0.25
    bank = MemoryBank(n_items, dim, seed=4, temperature=t, negatives=k, weight=lam, loss_type="infonce")
    bank.memory = bank.memory.double()
    g, f = torch.randn(batch, dim, dtype=torch.float64), torch.randn(batch, dim, dtype=torch.float64)
    rows, negs = torch.tensor([2, 5, 11, 29]), torch.randint(0, n_items, (k,))
    negs[0] = 5
    loss, _, _ = bank.loss(g, f, rows, negs)
    m = bank.memory.tolist()

    def info_nce(v, r):
        s = lambda j: math.exp(sum(a * b for a, b in zip(v, m[j])) / t)  # noqa: E731
        return -math.log(s(r) / (s(r) + sum(s(j) for j in negs.tolist() if j != r)))
    expect = sum(lam * info_nce(gv, r) + (1 - lam) * info_nce(fv, r) for gv, fv, r in
                 zip([_unit(x) for x in g.tolist()], [_unit(x) for x in f.tolist()], rows.tolist())) / batch
    assert abs(float(loss) - expect) <= 1e-12 * max(1.0, expect)
    assert bank.z < 0  # no normalising constant
    state = bank.state_dict()
    nce_bank = MemoryBank(n_items, dim, seed=4)
    with pytest.raises(ValueError, match="infonce"):
        nce_bank.load_state_dict(state)
