"""Students: causality, padding invariance, masking, scoring and the injected losses."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ucd.errors import ConfigError
from ucd.models import (
    BCEOneNegative,
    FullCrossEntropy,
    SampledSoftmax,
    StudentConfig,
    bert4rec_mask,
    build_loss,
    build_student,
    next_item_labels,
)

N_ITEMS = 30
MAX_LEN = 10


@pytest.fixture(autouse=True)
def _one_thread():
    # The machine is shared; one thread avoids oversubscription stalls on tiny tensors.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make(kind="sasrec", norm_first=True, seed=0, **kw):
    torch.manual_seed(seed)
    cfg = StudentConfig(
        kind=kind,
        n_items=N_ITEMS,
        max_len=MAX_LEN,
        hidden=16,
        n_heads=2,
        n_blocks=2,
        dropout=0.0,
        norm_first=norm_first,
        **kw,
    )
    return build_student(cfg).eval()


def rand_items(shape, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, N_ITEMS + 1, shape, generator=g)


VARIANTS = [(k, nf) for k in ("sasrec", "bert4rec") for nf in (True, False)]


@pytest.mark.parametrize("norm_first", [True, False])
def test_sasrec_later_items_never_change_earlier_positions(norm_first):
    model = make("sasrec", norm_first)
    x = rand_items((3, MAX_LEN))
    base, base_blocks = model(x, return_all=True)
    for j in (3, MAX_LEN - 1):
        y = x.clone()
        y[:, j] = (y[:, j] % N_ITEMS) + 1
        out, blocks = model(y, return_all=True)
        torch.testing.assert_close(out[:, :j], base[:, :j], rtol=0, atol=1e-6)
        for b, bb in zip(blocks, base_blocks, strict=True):
            torch.testing.assert_close(b[:, :j], bb[:, :j], rtol=0, atol=1e-6)
        assert not torch.allclose(out[:, j], base[:, j])


def test_bert4rec_is_bidirectional():
    model = make("bert4rec")
    x = rand_items((2, MAX_LEN))
    y = x.clone()
    y[:, -1] = (y[:, -1] % N_ITEMS) + 1
    assert not torch.allclose(model(x)[:, 0], model(y)[:, 0], atol=1e-4)


@pytest.mark.parametrize("kind,norm_first", VARIANTS)
def test_left_padding_never_changes_real_positions(kind, norm_first):
    model = make(kind, norm_first)
    real = rand_items((2, 4))
    short = model(real)
    padded_ids = torch.cat([torch.zeros(2, MAX_LEN - 4, dtype=torch.long), real], dim=1)
    padded, blocks = model(padded_ids, return_all=True)
    torch.testing.assert_close(padded[:, -4:], short, rtol=0, atol=1e-5)
    # Padding outputs are zeroed so that no consumer (pooling, loss) can pick them up.
    assert padded[:, :-4].abs().max() == 0
    assert all(b[:, :-4].abs().max() == 0 for b in blocks)
    # Whatever sits in the padding row of the embedding table must not leak either.
    with torch.no_grad():
        model.body.item_emb.weight[0].normal_()
    torch.testing.assert_close(model(padded_ids)[:, -4:], short, rtol=0, atol=1e-5)
    torch.testing.assert_close(model.score_last(padded_ids), model.score_last(real), atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind,norm_first", VARIANTS)
def test_all_padding_rows_are_finite_in_train_and_eval(kind, norm_first):
    model = make(kind, norm_first)
    x = torch.zeros(3, MAX_LEN, dtype=torch.long)
    x[1, -3:] = torch.tensor([4, 5, 6])
    # Every query must keep at least one key, or softmax over nothing is NaN on backends
    # that do not special-case fully masked rows.
    assert model.body.attention_mask(x > 0).any(-1).all()
    for train in (False, True):
        model.train(train)
        out = model(x)
        assert torch.isfinite(out).all()
        scores = model.score_last(x)
        assert torch.isfinite(scores[:, 1:]).all()
        labels = x.clone()
        loss = FullCrossEntropy()(model, out, labels)
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        model.zero_grad()


def test_sequence_longer_than_max_len_is_rejected():
    with pytest.raises(ValueError, match="max_len"):
        make()(rand_items((1, MAX_LEN + 1)))


@pytest.mark.parametrize("kind", ["sasrec", "bert4rec"])
def test_logits_cover_items_only_and_padding_is_minus_inf(kind):
    model = make(kind)
    x = rand_items((2, MAX_LEN))
    scores = model.score_last(x)
    assert scores.shape == (2, N_ITEMS + 1)
    assert torch.isneginf(scores[:, 0]).all()
    assert torch.isfinite(scores[:, 1:]).all()
    h = model(x)
    items = torch.arange(1, N_ITEMS + 1).expand(h.shape[0] * h.shape[1], -1)
    flat = h.reshape(-1, h.shape[-1])
    torch.testing.assert_close(model.score_items(flat, items), model.logits(flat)[:, 1:])


def test_sasrec_score_last_reads_the_last_position():
    model = make("sasrec")
    x = rand_items((2, MAX_LEN))
    torch.testing.assert_close(model.score_last(x), model.logits(model(x)[:, -1]))


def test_bert4rec_score_last_shifts_in_the_mask_token():
    model = make("bert4rec")
    full = rand_items((2, MAX_LEN))
    shifted = torch.cat([full[:, 1:], torch.full((2, 1), N_ITEMS + 1)], dim=1)
    torch.testing.assert_close(model.score_last(full), model.logits(model(shifted)[:, -1]))
    # A short row gets the mask appended; same result as the padded, shifted form.
    short = full[:, -4:]
    padded = torch.cat([torch.zeros(2, MAX_LEN - 4, dtype=torch.long), short], dim=1)
    torch.testing.assert_close(model.score_last(short), model.score_last(padded), atol=1e-5, rtol=0)


def test_bert4rec_mask_labels():
    x = torch.tensor([[0, 0, 3, 4, 5, 6], [0, 0, 0, 0, 0, 0], [7, 8, 9, 10, 11, 12]])
    g = torch.Generator().manual_seed(0)
    masked, labels = bert4rec_mask(x, 0.5, mask_token=99, generator=g)
    is_masked = masked == 99
    assert torch.equal(labels > 0, is_masked)
    assert torch.equal(labels[is_masked], x[is_masked])
    assert torch.equal(masked[~is_masked], x[~is_masked])
    assert not (is_masked & (x == 0)).any()
    assert is_masked[0].any() and is_masked[2].any() and not is_masked[1].any()


def test_bert4rec_mask_always_masks_one_real_item_per_row():
    x = torch.tensor([[0, 0, 3, 4, 5], [1, 2, 3, 4, 5], [0, 0, 0, 0, 9]])
    masked, labels = bert4rec_mask(x, 1e-9, mask_token=99, generator=torch.Generator())
    # With a negligible rate the fallback must pick exactly the last real item.
    assert torch.equal(labels, torch.tensor([[0, 0, 0, 0, 5], [0, 0, 0, 0, 5], [0, 0, 0, 0, 9]]))
    assert torch.equal(masked[:, -1], torch.full((3,), 99))


def test_bert4rec_mask_rate():
    x = rand_items((200, 50))
    masked, _ = bert4rec_mask(x, 0.15, mask_token=99, generator=torch.Generator().manual_seed(3))
    assert abs((masked == 99).float().mean().item() - 0.15) < 0.01


def test_next_item_labels():
    seq = torch.tensor([[0, 0, 5, 6, 7], [1, 2, 3, 4, 5]])
    inputs, labels = next_item_labels(seq)
    assert torch.equal(inputs, torch.tensor([[0, 0, 5, 6], [1, 2, 3, 4]]))
    assert torch.equal(labels, torch.tensor([[0, 0, 6, 7], [2, 3, 4, 5]]))


def test_full_cross_entropy_matches_hand_computation():
    model = make("sasrec")
    g = torch.Generator().manual_seed(5)
    hidden = torch.randn(2, 3, 16, generator=g)
    labels = torch.tensor([[0, 4, 7], [2, 0, 30]])
    got = FullCrossEntropy()(model, hidden, labels)
    table = model.body.item_emb.weight
    terms = []
    for b, t in [(0, 1), (0, 2), (1, 0), (1, 2)]:
        scores = table[1:] @ hidden[b, t]
        terms.append(torch.logsumexp(scores, 0) - scores[labels[b, t] - 1])
    torch.testing.assert_close(got, torch.stack(terms).mean())
    flat_h, flat_y = hidden.reshape(-1, 16), labels.reshape(-1)
    ref = F.cross_entropy(flat_h @ table.T[:, 1:], flat_y - 1, ignore_index=-1)
    torch.testing.assert_close(got, ref)


def test_losses_without_targets_are_zero_and_connected():
    model = make("sasrec")
    h = model(rand_items((2, MAX_LEN)))
    for loss in (FullCrossEntropy(), SampledSoftmax(5), BCEOneNegative()):
        value = loss(model, h, torch.zeros(2, MAX_LEN, dtype=torch.long))
        assert value.item() == 0.0
        value.backward(retain_graph=True)


@pytest.mark.parametrize(
    "kind,loss_name,kw",
    [
        ("sasrec", "full_ce", {}),
        ("sasrec", "sampled_softmax", {"n_negatives": 8}),
        ("sasrec", "bce", {}),
        ("bert4rec", "full_ce", {}),
    ],
)
def test_each_loss_decreases_on_a_tiny_overfit_problem(kind, loss_name, kw):
    model = make(kind).train()
    seq = rand_items((8, MAX_LEN + 1), seed=7)
    seq[:2, :4] = 0
    if kind == "sasrec":
        inputs, labels = next_item_labels(seq)
    else:
        inputs, labels = model.mask(seq[:, 1:], generator=torch.Generator().manual_seed(0))

    def evaluate(loss):
        # Same negatives before and after training, so the comparison is not sampling noise.
        if hasattr(loss, "generator"):
            loss.generator = torch.Generator().manual_seed(11)
        with torch.no_grad():
            return loss(model, model(inputs), labels).item()

    loss = build_loss(loss_name, **kw)
    before = evaluate(loss)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(40):
        opt.zero_grad()
        loss(model, model(inputs), labels).backward()
        opt.step()
    after = evaluate(loss)
    assert after < 0.6 * before, (before, after)


def test_config_and_factory_errors():
    with pytest.raises(ConfigError):
        build_student(StudentConfig())
    with pytest.raises(ValueError):
        StudentConfig(hidden=10, n_heads=3)
    with pytest.raises(ValueError):
        StudentConfig(unknown=1)
    with pytest.raises(ConfigError):
        build_loss("nope")
    assert StudentConfig(n_items=7).mask_token == 8
    assert math.isclose(StudentConfig().mask_prob, 0.15)


def test_negatives_that_hit_the_positive_are_ignored():
    # One item only: every sampled negative IS the positive and must carry no loss.
    torch.manual_seed(0)
    model = build_student(StudentConfig(n_items=1, max_len=4, hidden=8, dropout=0.0))
    x = torch.tensor([[0, 1, 1, 1]])
    h = model(x)
    assert SampledSoftmax(4)(model, h, x).item() == 0.0
    pos = model.score_items(h[x > 0], torch.ones(3, 1, dtype=torch.long))[:, 0]
    torch.testing.assert_close(BCEOneNegative()(model, h, x), F.softplus(-pos).mean())


def test_trimming_shared_left_padding_changes_nothing():
    """training.trim_padding drops all-padding columns; scores and losses must not move."""
    from ucd.train.epoch import trim_padding

    torch.manual_seed(0)
    for kind in ("sasrec", "bert4rec"):
        model = build_student(
            StudentConfig(kind=kind, n_items=30, max_len=12, hidden=16, n_heads=2, dropout=0.0)
        )
        model.eval()
        x = torch.zeros(3, 12, dtype=torch.long)
        x[0, -4:] = torch.tensor([3, 4, 5, 6])
        x[1, -2:] = torch.tensor([7, 8])
        x[2, -5:] = torch.tensor([1, 2, 3, 9, 10])
        t = trim_padding(x)
        assert t.shape == (3, 5) and torch.equal(t, x[:, -5:])
        assert trim_padding(x, keep=1).shape == (3, 6)
        with torch.no_grad():
            assert torch.allclose(model.score_last(x), model.score_last(t), atol=1e-5)
