"""Profile distillation: pooling, masking of users without profiles, gradient routing,
loss weighting, and the collapse of the literal paper loss that the defaults rule out."""

from __future__ import annotations

import math

import pytest
import torch

from ucd.errors import ConfigError
from ucd.models import FullCrossEntropy, StudentConfig, build_student, next_item_labels
from ucd.models.distill import (
    AttentionPool,
    DistillConfig,
    DistillHead,
    ExpPool,
    LastPool,
    MeanPool,
    build_pooling,
    combine_losses,
    variance_hinge,
)


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


POOLINGS = ["mean", "exp", "attention", "last"]


def left_padded_valid(lengths, width):
    cols = torch.arange(width)
    return cols[None, :] >= width - torch.tensor(lengths)[:, None]


@pytest.mark.parametrize("name", POOLINGS)
def test_pooling_ignores_padded_positions(name):
    torch.manual_seed(0)
    pool = build_pooling(name, 8)
    valid = left_padded_valid([3, 6, 1], 6)
    h = torch.randn(3, 6, 8)
    noisy = torch.where(valid[..., None], h, torch.randn(3, 6, 8) * 100)
    torch.testing.assert_close(pool(noisy, valid), pool(h, valid))


@pytest.mark.parametrize("name", POOLINGS)
def test_pooling_of_a_row_without_valid_positions_is_zero(name):
    pool = build_pooling(name, 4)
    out = pool(torch.randn(2, 5, 4), torch.zeros(2, 5, dtype=torch.bool))
    assert torch.equal(out, torch.zeros(2, 4))


def test_mean_exp_last_by_hand():
    h = torch.tensor([[[9.0], [1.0], [2.0], [4.0]]])
    valid = torch.tensor([[False, True, True, True]])
    assert MeanPool()(h, valid).item() == pytest.approx(7 / 3)
    w = [math.exp(0.0), math.exp(0.1), math.exp(0.2)]
    expected = (w[0] * 1 + w[1] * 2 + w[2] * 4) / sum(w)
    assert ExpPool()(h, valid).item() == pytest.approx(expected, rel=1e-6)
    assert LastPool()(h, valid).item() == 4.0
    # t counts valid positions only, so a hole does not widen the gap between weights.
    holed = torch.tensor([[True, False, True, True]])
    expected = (w[0] * 9 + w[1] * 2 + w[2] * 4) / sum(w)
    assert ExpPool()(h, holed).item() == pytest.approx(expected, rel=1e-6)
    # Right-padded rows too: "last" is the last VALID position, not column L-1.
    assert LastPool()(h, torch.tensor([[True, True, False, False]])).item() == 1.0


def test_exp_pool_stays_finite_for_long_sequences():
    h = torch.ones(1, 2000, 2)
    out = ExpPool()(h, torch.ones(1, 2000, dtype=torch.bool))
    torch.testing.assert_close(out, torch.ones(1, 2))


def test_attention_pool_is_a_convex_combination_of_valid_states():
    torch.manual_seed(1)
    pool = AttentionPool(3)
    h = torch.randn(1, 4, 3)
    valid = torch.tensor([[False, False, True, True]])
    out = pool(h, valid)
    scores = h[0, 2:] @ pool.query / math.sqrt(3)
    torch.testing.assert_close(out[0], torch.softmax(scores, 0) @ h[0, 2:])


def head_inputs(batch=6, width=5, hidden=8, pdim=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(batch, width, hidden, generator=g, requires_grad=True)
    valid = left_padded_valid([width, 2, 3, width, 1, 4][:batch], width)
    prof = torch.randn(batch, pdim, generator=g)
    return h, valid, prof


CONFIGS = [
    DistillConfig(enabled=True),
    DistillConfig.paper(),
    DistillConfig(enabled=True, distance="infonce", pooling="attention"),
    DistillConfig(enabled=True, distance="rmse", target_norm="l2", project="student"),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.distance}-{c.project}")
def test_no_profiles_gives_zero_loss_and_zero_student_grads(cfg):
    torch.manual_seed(0)
    head = DistillHead(cfg, 8, 12)
    h, valid, prof = head_inputs()
    prof = torch.full_like(prof, float("nan"))
    loss = head(h, valid, prof, torch.zeros(6, dtype=torch.bool))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(h.grad, torch.zeros_like(h))
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in head.parameters())


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.distance}-{c.project}")
def test_users_without_profile_contribute_nothing(cfg):
    torch.manual_seed(0)
    head = DistillHead(cfg, 8, 12)
    h, valid, prof = head_inputs()
    has = torch.tensor([True, False, True, True, False, False])
    loss = head(h, valid, prof, has)
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    assert h.grad[~has].abs().max() == 0
    # Garbage (even NaN) in the rows without a profile changes nothing.
    h2 = torch.where(has[:, None, None], h.detach(), torch.randn_like(h))
    prof2 = torch.where(has[:, None], prof, torch.full_like(prof, float("nan")))
    torch.testing.assert_close(head(h2, valid, prof2, has), loss.detach())
    # The profiled rows alone are a fully covered batch: weighted by coverage, the mixed batch's
    # term is that one times its profiled share.
    share = has.float().mean() if cfg.weight_by_coverage else 1.0
    torch.testing.assert_close(head(h[has], valid[has], prof[has], has[has]) * share, loss)


def test_single_profiled_user_is_finite():
    head = DistillHead(DistillConfig(enabled=True), 8, 12)
    h, valid, prof = head_inputs()
    has = torch.zeros(6, dtype=torch.bool)
    has[2] = True
    loss = head(h, valid, prof, has)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(h.grad).all()


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.distance}-{c.project}")
def test_weight_by_coverage_gives_each_profiled_user_its_full_coverage_pull(cfg):
    """Plain mean: a profiled user's gradient grows as fewer users of the batch have a profile.
    Weighted by the profiled share, it is what the user gets at full coverage."""
    weighted = cfg.model_copy(update={"weight_by_coverage": True})
    cfg = cfg.model_copy(update={"weight_by_coverage": False})
    h, valid, prof = head_inputs()
    has = torch.tensor([True, False, True, False, False, False])

    def run(c, mask):
        torch.manual_seed(0)
        head = DistillHead(c, 8, 12)
        x = h.detach().clone().requires_grad_(True)
        loss = head(x, valid, prof, mask)
        loss.backward()
        return loss.detach(), x.grad

    plain, plain_grad = run(cfg, has)
    scaled, scaled_grad = run(weighted, has)
    torch.testing.assert_close(scaled, plain * 2 / 6)
    torch.testing.assert_close(scaled_grad, plain_grad * 2 / 6)
    assert scaled_grad[~has].abs().max() == 0
    everyone = torch.ones(6, dtype=torch.bool)
    torch.testing.assert_close(run(weighted, everyone)[0], run(cfg, everyone)[0])


def tiny_student(n_blocks=3):
    torch.manual_seed(0)
    cfg = StudentConfig(n_items=20, max_len=6, hidden=8, n_blocks=n_blocks, dropout=0.0)
    return build_student(cfg)


@pytest.mark.parametrize("pooling", POOLINGS)
def test_distill_gradient_reaches_block_k_and_not_later_blocks(pooling):
    model = tiny_student(3)
    cfg = DistillConfig(enabled=True, layer=2, pooling=pooling)
    head = DistillHead(cfg, 8, 5)
    x = torch.tensor([[0, 0, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6], [0, 0, 0, 7, 8, 9]])
    _, blocks = model(x, return_all=True)
    k = cfg.block_index(3)
    assert k == 1
    prof = torch.randn(3, 5)
    head(blocks[k], x > 0, prof, torch.ones(3, dtype=torch.bool)).backward()

    def grad_norm(module):
        return sum(p.grad.abs().sum().item() for p in module.parameters() if p.grad is not None)

    assert grad_norm(model.body.blocks[0]) > 0
    assert grad_norm(model.body.blocks[1]) > 0
    assert grad_norm(model.body.blocks[2]) == 0
    assert grad_norm(model.body.final_norm) == 0


def test_block_index_defaults_to_last_and_validates():
    assert DistillConfig().block_index(4) == 3
    assert DistillConfig(layer=1).block_index(4) == 0
    with pytest.raises(ConfigError):
        DistillConfig(layer=5).block_index(4)
    with pytest.raises(ValueError):
        DistillConfig(layer=0)
    with pytest.raises(ValueError):
        DistillConfig(bogus=True)
    with pytest.raises(ConfigError):
        DistillHead(DistillConfig(project="none"), 8, 12)


def test_combine_losses_before_and_after_cutoff():
    # Unbounded balancing makes the VALUE equal L_rec (only the gradient differs), so a
    # bounded beta is used to tell the two regimes apart.
    cfg = DistillConfig(enabled=True, alpha=0.4, epochs=3, beta_max=2.0)
    l_rec, l_d = torch.tensor(5.0), torch.tensor(0.5)
    assert combine_losses(l_rec, l_d, cfg, epoch=0).item() == pytest.approx(0.4 + 3.0)
    assert combine_losses(l_rec, l_d, cfg, epoch=2).item() == pytest.approx(0.4 + 3.0)
    unbounded = cfg.model_copy(update={"beta_max": None, "alpha": 0.25})
    assert combine_losses(l_rec, l_d, unbounded, 0).item() == pytest.approx(5.0)
    assert combine_losses(l_rec, l_d, cfg, epoch=3).item() == 5.0
    assert combine_losses(l_rec, l_d, cfg.model_copy(update={"enabled": False}), 0).item() == 5.0
    no_balance = cfg.model_copy(update={"balance": False})
    assert combine_losses(l_rec, l_d, no_balance, 0).item() == pytest.approx(0.4 * 0.5 + 3.0)


def test_beta_is_clamped_and_detached():
    cfg = DistillConfig(enabled=True, alpha=0.4, beta_max=2.0, epochs=1)
    l_rec = torch.tensor(10.0, requires_grad=True)
    l_d = torch.tensor(0.01, requires_grad=True)
    total = combine_losses(l_rec, l_d, cfg, epoch=0)
    assert total.item() == pytest.approx(0.4 * 2.0 * 0.01 + 0.6 * 10.0)
    total.backward()
    assert l_d.grad.item() == pytest.approx(0.4 * 2.0)
    assert l_rec.grad.item() == pytest.approx(0.6)


def test_zero_distill_loss_never_makes_nan_even_unbounded():
    cfg = DistillConfig.paper(epochs=1)
    total = combine_losses(torch.tensor(3.0), torch.tensor(0.0), cfg, epoch=0)
    assert total.item() == pytest.approx(0.6 * 3.0)


# --- the collapse mechanism ------------------------------------------------------------


def test_literal_weighting_amplifies_distill_gradient_as_its_loss_vanishes():
    """With beta detached, d total / d L_d = alpha * L_rec / L_d: unbounded as L_d -> 0."""
    paper, default = DistillConfig.paper(epochs=1), DistillConfig(enabled=True, epochs=1)
    for l_d_value, factor in [(1.0, 0.4 * 5.0), (0.01, 0.4 * 500.0), (1e-4, 0.4 * 50000.0)]:
        for cfg, bound in [(paper, factor), (default, 0.4 * default.beta_max)]:
            l_d = torch.tensor(l_d_value, requires_grad=True)
            combine_losses(torch.tensor(5.0), l_d, cfg, 0).backward()
            assert l_d.grad.item() == pytest.approx(min(factor, bound), rel=1e-5)


def test_constant_solution_is_optimal_for_paper_but_not_for_defaults():
    """Profiles projected to one vector c and every pooled state equal to c: the literal
    loss is exactly 0 there; the default loss stays high (no target can be constant)."""
    h, valid, prof = head_inputs()
    has = torch.ones(6, dtype=torch.bool)
    c = torch.randn(8)
    const_hidden = c.expand(6, 5, 8).clone()
    for cfg, check in [
        (DistillConfig.paper(), lambda v: v == pytest.approx(0.0, abs=1e-10)),
        (DistillConfig(enabled=True), lambda v: v >= 1.0),
        (DistillConfig(enabled=True, distance="mse"), lambda v: v >= 1.0),
        (DistillConfig(enabled=True, distance="infonce"), lambda v: v >= math.log(6) - 1e-4),
    ]:
        head = DistillHead(cfg, 8, 12)
        with torch.no_grad():
            head.profile_proj.weight.zero_()
            head.profile_proj.bias.copy_(c)
        assert check(head(const_hidden, valid, prof, has).item()), cfg


def test_variance_hinge():
    assert variance_hinge(torch.ones(10, 4) * 3.0).item() == pytest.approx(1.0, abs=0.02)
    assert variance_hinge(torch.randn(4000, 4, generator=torch.Generator().manual_seed(0)) * 2) == 0
    assert variance_hinge(torch.ones(1, 4)).item() == 0.0


def synthetic(n_users=256, n_items=200, n_clusters=10, width=13, pdim=32, seed=0):
    """Users walk through one cluster of items; their "profile" encodes that cluster."""
    g = torch.Generator().manual_seed(seed)
    per = n_items // n_clusters
    cluster = torch.randint(0, n_clusters, (n_users,), generator=g)
    jump = torch.rand(n_users, width, generator=g) < 0.2
    step = torch.where(jump, torch.randint(0, per, (n_users, width), generator=g), 1)
    pos = step.cumsum(1) % per
    seqs = 1 + cluster[:, None] * per + pos
    lengths = torch.randint(5, width + 1, (n_users,), generator=g)
    seqs[torch.arange(width)[None, :] < width - lengths[:, None]] = 0
    proto = torch.randn(n_clusters, pdim, generator=g)
    return seqs, proto[cluster] + 0.3 * torch.randn(n_users, pdim, generator=g)


def train(dcfg, steps=150, hidden=32, seed=0):
    seqs, prof = synthetic()
    torch.manual_seed(seed)
    cfg = StudentConfig(n_items=200, max_len=12, hidden=hidden, n_blocks=2, dropout=0.0)
    model = build_student(cfg)
    head = DistillHead(dcfg, hidden, prof.shape[1]) if dcfg is not None else None
    params = list(model.parameters()) + (list(head.parameters()) if head else [])
    opt = torch.optim.AdamW(params, lr=2e-3)
    rec_loss, g = FullCrossEntropy(), torch.Generator().manual_seed(seed)
    history = []
    for _ in range(steps):
        idx = torch.randint(0, seqs.shape[0], (64,), generator=g)
        x, y = next_item_labels(seqs[idx])
        final, blocks = model(x, return_all=True)
        l_rec = rec_loss(model, final, y)
        total = l_rec
        if head is not None:
            k = dcfg.block_index(cfg.n_blocks)
            l_d = head(blocks[k], x > 0, prof[idx], torch.ones(64, dtype=torch.bool))
            total = combine_losses(l_rec, l_d, dcfg, epoch=0)
        opt.zero_grad()
        total.backward()
        torch.nn.utils.clip_grad_norm_(params, 0.5)
        opt.step()
        history.append(l_rec.item())
    spread = float("nan")
    if head is not None:
        with torch.no_grad():
            spread = head.profile_proj(prof).var(0).mean().item()
    return sum(history[-15:]) / 15, spread


def test_paper_loss_collapses_and_defaults_do_not():
    """~450 small steps: the literal loss drives the projected profiles towards a constant
    and the rec loss back towards ln|items|; the defaults stay close to no distillation."""
    plain, _ = train(None)
    paper, paper_spread = train(DistillConfig.paper(epochs=10**6))
    ours, ours_spread = train(DistillConfig(enabled=True, epochs=10**6))
    initial_spread = DistillHead(DistillConfig(), 32, 32).profile_proj(synthetic()[1]).var(0)
    assert plain < 2.5, plain
    assert paper > plain + 1.5 and paper > 0.6 * math.log(200), (plain, paper)
    assert paper_spread < 0.25 * initial_spread.mean().item(), paper_spread
    assert ours < plain + 0.4, (plain, ours)
    assert ours_spread > 0.5, ours_spread
