"""Distillation losses (distill/transfer/divergences.py) against plain-loop references, TRL, and their properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from distill.transfer.divergences import (
    DIVERGENCES,
    divergence,
    mix_sparse_teachers,
    mix_teachers,
    sparse_distributions,
    sparse_divergence,
    token_mean,
)

INF = math.inf
BOUNDED = ("jsd", "skew_forward_kl", "skew_reverse_kl", "tvd")  # finite wherever either side has zeros


# --- references: one position at a time, plain Python floats -------------------------------------


def ref_kl(p: list[float], q: list[float]) -> float:
    total = 0.0
    for pi, qi in zip(p, q, strict=True):
        if pi > 0:
            total += INF if qi == 0 else pi * (math.log(pi) - math.log(qi))
    return total


def ref_divergence(name: str, p: list[float], q: list[float], beta: float, alpha: float) -> float:
    if name == "forward_kl":
        return ref_kl(p, q)
    if name == "reverse_kl":
        return ref_kl(q, p)
    if name == "jsd":
        if beta == 0:
            return ref_kl(p, q)
        if beta == 1:
            return ref_kl(q, p)
        m = [beta * pi + (1 - beta) * qi for pi, qi in zip(p, q, strict=True)]
        return beta * ref_kl(p, m) + (1 - beta) * ref_kl(q, m)
    if name == "skew_forward_kl":
        return ref_kl(p, [alpha * pi + (1 - alpha) * qi for pi, qi in zip(p, q, strict=True)])
    if name == "skew_reverse_kl":
        return ref_kl(q, [alpha * qi + (1 - alpha) * pi for pi, qi in zip(p, q, strict=True)])
    assert name == "tvd"
    return 0.5 * sum(abs(pi - qi) for pi, qi in zip(p, q, strict=True))


def distributions(seed: int, shape: tuple[int, ...] = (2, 3, 5), zeros: float = 0.3) -> np.ndarray:
    """Random distributions over the last dim, about ``zeros`` of the entries exactly 0 (never a whole row)."""
    rng = np.random.default_rng(seed)
    probs = rng.random(shape) ** 2
    probs[rng.random(shape) < zeros] = 0.0
    probs[..., 0] += (probs.sum(-1) == 0)  # no empty row
    return probs / probs.sum(-1, keepdims=True)


def log(probs: np.ndarray) -> torch.Tensor:
    with np.errstate(divide="ignore"):
        return torch.from_numpy(np.log(probs))


def loop(name: str, p: np.ndarray, q: np.ndarray, beta: float = 0.5, alpha: float = 0.1) -> np.ndarray:
    rows_p, rows_q = p.reshape(-1, p.shape[-1]), q.reshape(-1, q.shape[-1])
    values = [ref_divergence(name, list(a), list(b), beta, alpha) for a, b in zip(rows_p, rows_q, strict=True)]
    return np.array(values).reshape(p.shape[:-1])


# --- dense divergences --------------------------------------------------------------------------


@pytest.mark.parametrize("name", DIVERGENCES)
@pytest.mark.parametrize(("beta", "alpha"), [(0.5, 0.1), (0.0, 0.0), (1.0, 0.5), (0.2, 0.9)])
def test_divergence_matches_loops_with_exact_zeros(name: str, beta: float, alpha: float) -> None:
    p, q = distributions(1), distributions(2)
    got = divergence(name, log(p), log(q), beta=beta, alpha=alpha)
    assert got.shape == (2, 3)
    np.testing.assert_allclose(got.numpy(), loop(name, p, q, beta, alpha), rtol=1e-12, atol=1e-12)


def test_kl_is_infinite_only_where_the_support_is_not_covered() -> None:
    p = np.array([[0.5, 0.5, 0.0]])
    q = np.array([[0.5, 0.0, 0.5]])
    assert divergence("forward_kl", log(p), log(q)).item() == INF
    assert divergence("reverse_kl", log(p), log(q)).item() == INF
    assert divergence("forward_kl", log(p), log(np.array([[0.25, 0.25, 0.5]]))).item() == pytest.approx(math.log(2))
    for name in BOUNDED:
        assert math.isfinite(divergence(name, log(p), log(q)).item())


@pytest.mark.parametrize("name", DIVERGENCES)
def test_zero_when_equal_and_nonnegative_otherwise(name: str) -> None:
    p = distributions(3)
    # Exactly 0 up to rounding: the mixtures log(a p + (1 - a) p) are p only to the last bit.
    torch.testing.assert_close(divergence(name, log(p), log(p)), torch.zeros(2, 3, dtype=torch.float64),
                               rtol=0, atol=1e-15)
    for seed in range(4, 8):
        assert (divergence(name, log(p), log(distributions(seed)), beta=0.3, alpha=0.2) >= 0).all()


def test_skew_kl_with_alpha_zero_is_plain_kl() -> None:
    p, q = distributions(9, zeros=0.0), distributions(10, zeros=0.0)
    forward = divergence("forward_kl", log(p), log(q))
    reverse = divergence("reverse_kl", log(p), log(q))
    torch.testing.assert_close(divergence("skew_forward_kl", log(p), log(q), alpha=0.0), forward)
    torch.testing.assert_close(divergence("skew_reverse_kl", log(p), log(q), alpha=0.0), reverse)
    assert (divergence("skew_forward_kl", log(p), log(q), alpha=0.5) < forward).all()


def test_tvd_is_in_zero_one_and_one_for_disjoint_supports() -> None:
    for seed in range(5):
        value = divergence("tvd", log(distributions(seed)), log(distributions(seed + 100)))
        assert ((value >= 0) & (value <= 1)).all()
    disjoint = divergence("tvd", log(np.array([[1.0, 0.0]])), log(np.array([[0.0, 1.0]])))
    assert disjoint.item() == 1.0


@pytest.mark.parametrize("name", BOUNDED + ("forward_kl",))
def test_dense_gradient_is_finite_when_both_sides_have_zeros(name: str) -> None:
    # Token 4 is impossible for both (-inf log-prob on both sides): the mixtures see log(0 + 0).
    teacher = log(np.concatenate([distributions(11, (2, 3, 4)), np.zeros((2, 3, 1))], -1))
    logits = torch.randn(2, 3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    logits[..., 4] = -INF
    logits.requires_grad_(True)
    student = logits.log_softmax(-1)
    divergence(name, teacher, student).sum().backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_unknown_name_and_bad_arguments_raise() -> None:
    p = log(distributions(1))
    with pytest.raises(ValueError, match="unknown divergence 'kl'.*forward_kl"):
        divergence("kl", p, p)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="same shape"):
        divergence("tvd", p, p[..., :4])
    with pytest.raises(ValueError, match="beta"):
        divergence("jsd", p, p, beta=1.5)
    with pytest.raises(ValueError, match="alpha"):
        divergence("skew_forward_kl", p, p, alpha=-0.1)


# --- agreement with TRL -------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_jsd_matches_trl_generalized_jsd_loss(monkeypatch: pytest.MonkeyPatch, temperature: float) -> None:
    monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "1")
    from trl.experimental.gkd.gkd_trainer import GKDTrainer  # trl 1.16: GKD lives in trl.experimental

    generator = torch.Generator().manual_seed(0)
    student_logits = torch.randn(2, 4, 7, dtype=torch.float64, generator=generator)
    teacher_logits = 2 * torch.randn(2, 4, 7, dtype=torch.float64, generator=generator)
    labels = torch.tensor([[5, 1, -100, 2], [-100, -100, 3, 6]])
    mask = labels != -100
    teacher = (teacher_logits / temperature).log_softmax(-1)
    student = (student_logits / temperature).log_softmax(-1)
    for beta, same_as in [(0.0, "forward_kl"), (1.0, "reverse_kl"), (0.5, "jsd"), (0.3, "jsd"), (0.9, "jsd")]:
        trl = GKDTrainer.generalized_jsd_loss(student_logits, teacher_logits, labels=labels, beta=beta,
                                              temperature=temperature, reduction="batchmean")
        ours = token_mean(divergence("jsd", teacher, student, beta=beta), mask)
        torch.testing.assert_close(ours, trl, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(token_mean(divergence(same_as, teacher, student, beta=beta), mask), trl,
                                   rtol=1e-12, atol=1e-12)


# --- sparse teacher -----------------------------------------------------------------------------


def full_top_k(teacher_logits: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All V ids, in a random order per position, with the teacher's log-probs."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.rand(teacher_logits.shape, generator=generator).argsort(-1)
    return ids, teacher_logits.log_softmax(-1).gather(-1, ids)


@pytest.mark.parametrize("name", ["forward_kl", "jsd", "skew_forward_kl", "skew_reverse_kl", "tvd"])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_sparse_with_full_vocab_equals_dense(name: str, temperature: float) -> None:
    generator = torch.Generator().manual_seed(1)
    student_logits = torch.randn(2, 3, 6, dtype=torch.float64, generator=generator)
    teacher_logits = torch.randn(2, 3, 6, dtype=torch.float64, generator=generator)
    ids, top = full_top_k(teacher_logits, 2)
    dense = divergence(name, (teacher_logits / temperature).log_softmax(-1),
                       (student_logits / temperature).log_softmax(-1))
    # Bucket at T != 1 tempers the teacher's tail as one outcome: here ~1e-16 of rounding, which T = 2
    # lifts to ~1e-8 (see sparse_distributions). Renormalize has no tail and is exact at any T.
    for tail in ("bucket", "renormalize") if temperature == 1 else ("renormalize",):
        sparse, valid = sparse_divergence(name, student_logits, ids, top, temperature=temperature, tail=tail)
        assert valid.all()
        torch.testing.assert_close(sparse, dense, rtol=1e-9, atol=1e-12)
    # Without a tail, reverse KL is exact too (bucket: the student's floored tail meets a teacher tail of ~0).
    sparse, _ = sparse_divergence("reverse_kl", student_logits, ids, top, temperature=temperature, tail="renormalize")
    torch.testing.assert_close(sparse, divergence("reverse_kl", (teacher_logits / temperature).log_softmax(-1),
                                                  (student_logits / temperature).log_softmax(-1)))


def test_bucket_holds_the_mass_outside_the_top_k() -> None:
    generator = torch.Generator().manual_seed(3)
    student_logits = torch.randn(2, 3, 8, dtype=torch.float64, generator=generator)
    teacher_logits = torch.randn(2, 3, 8, dtype=torch.float64, generator=generator)
    ids, top = full_top_k(teacher_logits, 4)
    ids, top = ids[..., :3], top[..., :3]
    teacher, student, valid = sparse_distributions(student_logits, ids, top)
    assert teacher.shape == student.shape == (2, 3, 4) and valid.all()
    torch.testing.assert_close(teacher[..., -1].exp(), 1 - top.exp().sum(-1))
    torch.testing.assert_close(teacher[..., :3], top)
    student_full = student_logits.log_softmax(-1)
    torch.testing.assert_close(student[..., :3], student_full.gather(-1, ids))
    torch.testing.assert_close(student[..., -1].exp(), 1 - student_full.gather(-1, ids).exp().sum(-1))
    torch.testing.assert_close(teacher.exp().sum(-1), torch.ones(2, 3, dtype=torch.float64))
    torch.testing.assert_close(student.exp().sum(-1), torch.ones(2, 3, dtype=torch.float64))


def test_renormalize_and_temperature_on_the_top_k() -> None:
    generator = torch.Generator().manual_seed(5)
    student_logits = torch.randn(1, 2, 7, dtype=torch.float64, generator=generator)
    ids = torch.tensor([[[3, 0, 6], [1, 2, 5]]])
    top = torch.tensor([[[-0.5, -1.5, -3.0], [-0.2, -2.5, -4.0]]], dtype=torch.float64)
    teacher, student, _ = sparse_distributions(student_logits, ids, top, temperature=2.0, tail="renormalize")
    torch.testing.assert_close(teacher, (top / 2).log_softmax(-1))
    torch.testing.assert_close(student, (student_logits / 2).gather(-1, ids).log_softmax(-1))
    teacher, student, _ = sparse_distributions(student_logits, ids, top, temperature=2.0, tail="bucket")
    with_tail = torch.cat([top, (1 - top.exp().sum(-1, keepdim=True)).log()], -1)
    torch.testing.assert_close(teacher, (with_tail / 2).log_softmax(-1))
    torch.testing.assert_close(student[..., :3], (student_logits / 2).log_softmax(-1).gather(-1, ids))


def test_float16_top_k_past_one_is_renormalised_with_an_empty_tail() -> None:
    top = torch.tensor([[[math.log(0.6), math.log(0.45)]]], dtype=torch.float16)
    teacher, _, _ = sparse_distributions(torch.zeros(1, 1, 4), torch.tensor([[[0, 1]]]), top)
    assert teacher.dtype == torch.float32 and teacher[0, 0, -1].item() == -INF
    torch.testing.assert_close(teacher.exp().sum(-1), torch.ones(1, 1))


@pytest.mark.parametrize("tail", ["bucket", "renormalize"])
def test_padding_is_ignored(tail: str) -> None:
    generator = torch.Generator().manual_seed(6)
    student_logits = torch.randn(2, 2, 6, dtype=torch.float64, generator=generator)
    ids = torch.tensor([[[2, 4], [0, 5]], [[1, 3], [5, 2]]])
    top = torch.tensor([[[-0.4, -1.9], [-1.0, -0.7]], [[-0.1, -3.0], [-2.0, -0.3]]], dtype=torch.float64)
    # The same with two padding slots (one with a stray finite log-prob) and a fully padded position.
    padded_ids = torch.cat([ids, torch.full((2, 2, 2), -1)], -1)[..., [0, 2, 1, 3]]
    padded_top = torch.cat([top, torch.tensor([-INF, 5.0], dtype=torch.float64).expand(2, 2, 2)], -1)[..., [0, 2, 1, 3]]
    padded_ids[1, 1], padded_top[1, 1] = -1, -INF
    for name in DIVERGENCES:
        plain, valid = sparse_divergence(name, student_logits, ids, top, tail=tail)
        padded, padded_valid = sparse_divergence(name, student_logits, padded_ids, padded_top, tail=tail)
        assert valid.all() and padded_valid.tolist() == [[True, True], [True, False]]
        assert padded[1, 1].item() == 0.0
        torch.testing.assert_close(padded[padded_valid], plain[padded_valid])


@pytest.mark.parametrize("tail", ["bucket", "renormalize"])
@pytest.mark.parametrize("name", BOUNDED + ("forward_kl",))
def test_gradient_is_finite_with_minus_inf_teacher_logprobs(name: str, tail: str) -> None:
    logits = torch.randn(2, 3, 9, generator=torch.Generator().manual_seed(7)).requires_grad_(True)
    ids = torch.tensor([[[0, 4, -1], [8, 1, 2], [-1, -1, -1]], [[3, -1, -1], [5, 6, 7], [2, 0, 1]]])
    top = torch.tensor([[[-0.3, -INF, -INF], [-0.1, -3.0, -INF], [-INF, -INF, -INF]],
                        [[-0.05, -INF, -INF], [-1.0, -1.0, -1.5], [-0.2, -INF, -2.0]]])
    per_position, valid = sparse_divergence(name, logits, ids, top, tail=tail, temperature=1.5)
    assert valid.tolist() == [[True, True, False], [True, True, True]]
    assert torch.isfinite(per_position).all()
    token_mean(per_position, valid, temperature=1.5, scale_t2=True).backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    assert logits.grad[valid].abs().sum() > 0
    assert logits.grad[0, 2].abs().sum() == 0  # the fully padded position passes nothing


def test_sparse_validation_errors() -> None:
    logits = torch.zeros(2, 3, 6)
    ids = torch.zeros(2, 3, 2, dtype=torch.long)
    ids[..., 1] = 1
    top = torch.full((2, 3, 2), -1.0)
    with pytest.raises(ValueError, match=r"id 9 is out of range for the student vocab of size 6"):
        sparse_divergence("forward_kl", logits, ids.clone().index_fill_(2, torch.tensor([1]), 9), top)
    with pytest.raises(ValueError, match=r"id -2"):
        sparse_divergence("forward_kl", logits, ids - 2, top)
    with pytest.raises(ValueError, match="k mismatch: 2 .* 3"):
        sparse_divergence("forward_kl", logits, ids, torch.full((2, 3, 3), -1.0))
    with pytest.raises(ValueError, match="leading"):
        sparse_divergence("forward_kl", logits[:, :2], ids, top)
    with pytest.raises(ValueError, match="repeat"):
        sparse_divergence("forward_kl", logits, torch.ones_like(ids), top)
    with pytest.raises(ValueError, match="integers"):
        sparse_divergence("forward_kl", logits, ids.float(), top)
    with pytest.raises(ValueError, match="unknown divergence"):
        sparse_divergence("kl", logits, ids, top)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown tail"):
        sparse_divergence("tvd", logits, ids, top, tail="drop")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="temperature"):
        sparse_divergence("tvd", logits, ids, top, temperature=0.0)


# --- reduction ----------------------------------------------------------------------------------


def test_token_mean_ignores_masked_positions_and_divides_once() -> None:
    per_position = torch.tensor([[1.0, 2.0, INF], [3.0, math.nan, 5.0]], dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    loss = token_mean(per_position, mask)
    assert loss.item() == 2.0  # (1 + 2 + 3) / 3, not further divided by the batch size
    loss.backward()
    assert per_position.grad is not None
    assert per_position.grad.tolist() == [[1 / 3, 1 / 3, 0.0], [1 / 3, 0.0, 0.0]]
    assert token_mean(per_position, mask, temperature=2.0, scale_t2=True).item() == 8.0
    assert token_mean(per_position, mask, num_tokens=12).item() == 0.5
    assert token_mean(per_position, torch.zeros_like(mask)).item() == 0.0
    with pytest.raises(ValueError, match="same shape"):
        token_mean(per_position, mask[:, :2])


# --- several teachers ---------------------------------------------------------------------------


def test_mix_teachers_weights_and_average() -> None:
    first, second = log(distributions(20)), log(distributions(21))
    assert torch.equal(mix_teachers([first, second], [1.0, 0.0]), first)
    expected = log(0.5 * distributions(20) + 0.5 * distributions(21))
    torch.testing.assert_close(mix_teachers([first, second]), expected, rtol=1e-12, atol=0)
    torch.testing.assert_close(mix_teachers([first, second], [2, 2]), expected, rtol=1e-12, atol=0)
    expected = log(0.25 * distributions(20) + 0.75 * distributions(21))
    torch.testing.assert_close(mix_teachers([first, second], [1, 3]), expected, rtol=1e-12, atol=0)
    for bad in ([1.0], [-1.0, 2.0], [0.0, 0.0], [math.nan, 1.0]):
        with pytest.raises(ValueError, match="weights"):
            mix_teachers([first, second], bad)
    with pytest.raises(ValueError, match="same shape"):
        mix_teachers([first, second[..., :4]])


def test_sparse_mix_with_every_id_listed_equals_dense_mix() -> None:
    generator = torch.Generator().manual_seed(8)
    logits = [torch.randn(2, 3, 6, dtype=torch.float64, generator=generator) for _ in range(2)]
    (ids_a, top_a), (ids_b, top_b) = full_top_k(logits[0], 9), full_top_k(logits[1], 10)
    ids, top = mix_sparse_teachers([ids_a, ids_b], [top_a, top_b], [0.3, 0.7])
    assert torch.equal(ids, torch.arange(6).expand(2, 3, 6))
    dense = mix_teachers([logits[0].log_softmax(-1), logits[1].log_softmax(-1)], [0.3, 0.7])
    torch.testing.assert_close(top, dense)
    student_logits = torch.randn(2, 3, 6, dtype=torch.float64, generator=generator)
    sparse, _ = sparse_divergence("forward_kl", student_logits, ids, top)
    torch.testing.assert_close(sparse, divergence("forward_kl", dense, student_logits.log_softmax(-1)))


def test_sparse_mix_takes_the_union_and_mixes_the_tails() -> None:
    ids_a = torch.tensor([[[0, 1], [2, -1], [0, 1]]])
    top_a = torch.tensor([[[math.log(0.5), math.log(0.3)], [math.log(0.9), -INF], [math.log(0.5), math.log(0.5)]]])
    ids_b = torch.tensor([[[1, 2, 4], [2, 3, -1], [-1, -1, -1]]])
    top_b = torch.tensor([[[math.log(0.6), math.log(0.1), -INF], [math.log(0.2), math.log(0.7), -INF],
                           [-INF, -INF, -INF]]])
    ids, top = mix_sparse_teachers([ids_a, ids_b], [top_a, top_b], [1, 3])
    assert ids.tolist() == [[[0, 1, 2], [2, 3, -1], [-1, -1, -1]]]  # id 4 has probability 0: not listed
    probs = top.exp()
    torch.testing.assert_close(probs[0, 0], torch.tensor([0.25 * 0.5, 0.25 * 0.3 + 0.75 * 0.6, 0.75 * 0.1]))
    torch.testing.assert_close(probs[0, 1, :2], torch.tensor([0.25 * 0.9 + 0.75 * 0.2, 0.75 * 0.7]))
    teacher, _, valid = sparse_distributions(torch.zeros(1, 3, 5), ids, top)
    assert valid.tolist() == [[True, True, False]]  # teacher b lists nothing at position 2: unknown mix
    torch.testing.assert_close(teacher[0, 0, -1].exp(), torch.tensor(0.25 * 0.2 + 0.75 * 0.3))
    torch.testing.assert_close(teacher[0, 1, -1].exp(), torch.tensor(0.25 * 0.1 + 0.75 * 0.1))
    # A teacher of weight 0 neither adds ids nor hides positions.
    ids, top = mix_sparse_teachers([ids_a, ids_b], [top_a, top_b], [1, 0])
    assert ids.tolist() == ids_a.tolist()
    torch.testing.assert_close(top, top_a)
