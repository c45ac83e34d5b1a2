"""Token-level distillation losses between a student and a teacher (pure torch, no I/O).

Three layers, each usable on its own:

1. ``divergence``: a divergence between two distributions on the same support, both given as
   log-probabilities (last dim = support), one value per position. Zero-probability entries
   (log-prob ``-inf``) are exact: ``0 * log 0 = 0``, and they produce no NaN gradients.
2. ``sparse_distributions`` / ``sparse_divergence``: the teacher as stored by the feature method
   (``FEATURES`` in distill/records.py: top-k ids, -1 pads, and top-k log-probs at temperature 1,
   -inf pads) against the student's full logits, both put on a common support of k (+1) outcomes.
3. ``token_mean``: the mean over valid tokens (divided once), optionally scaled by T^2.

Several teachers: ``mix_teachers`` (dense, same vocabulary) and ``mix_sparse_teachers`` (top-k of
teachers sharing a tokenizer, merged per position into the union of their ids).

Naming: ``p`` is the teacher, ``q`` the student. Forward KL is KL(p || q) (mass-covering),
reverse KL is KL(q || p) (mode-seeking).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import reduce
from typing import Literal, get_args

import torch
from torch import Tensor

Divergence = Literal["forward_kl", "reverse_kl", "jsd", "skew_forward_kl", "skew_reverse_kl", "tvd"]
Tail = Literal["bucket", "renormalize"]
DIVERGENCES: tuple[str, ...] = get_args(Divergence)
TAILS: tuple[str, ...] = get_args(Tail)
NEG_INF = float("-inf")


# ---------------------------------------------------------------------------------------------
# Divergences on a shared support


def kl(log_p: Tensor, log_q: Tensor) -> Tensor:
    """KL(p || q) = sum p (log p - log q) over the last dim, with 0 log 0 = 0."""
    p = log_p.exp()
    # Mask the difference *before* multiplying: where p == 0 the difference may be -inf - x or
    # -inf + inf; 0 * inf would be NaN in the value and in the gradient of p.
    diff = torch.where(p > 0, log_p - log_q, 0.0)
    return (p * diff).sum(-1)


def log_mix(log_p: Tensor, log_q: Tensor, weight: float) -> Tensor:
    """log(weight * p + (1 - weight) * q), elementwise, for 0 <= weight <= 1."""
    dtype = torch.promote_types(log_p.dtype, log_q.dtype)
    log_w = torch.tensor(weight, dtype=dtype, device=log_p.device)
    a, b = log_p + log_w.log(), log_q + torch.log1p(-log_w)  # log(0) = -inf for weight 0 or 1
    # logaddexp(-inf, -inf) is -inf but its gradient is exp(nan) = NaN, which a later mask cannot
    # cancel (0 * NaN = NaN). Feed it finite stand-ins there and put the -inf back afterwards.
    both_zero = (a == NEG_INF) & (b == NEG_INF)
    mixed = torch.logaddexp(torch.where(both_zero, 0.0, a), torch.where(both_zero, 0.0, b))
    return torch.where(both_zero, NEG_INF, mixed)


def jsd(log_p: Tensor, log_q: Tensor, beta: float) -> Tensor:
    """Generalized JSD in TRL's convention (``GKDTrainer.generalized_jsd_loss``, trl 1.16).

    m = beta * p + (1 - beta) * q and JSD = beta * KL(p || m) + (1 - beta) * KL(q || m), except that
    beta = 0 is exactly forward KL(p || q) and beta = 1 exactly reverse KL(q || p), as TRL
    special-cases them: the mixture formula itself tends to 0 at both ends (for small beta it is
    about beta * KL(p || q), near 1 about (1 - beta) * KL(q || p)); beta = 0.5 is the symmetric JSD.
    """
    if beta == 0:
        return kl(log_p, log_q)
    if beta == 1:
        return kl(log_q, log_p)
    log_m = log_mix(log_p, log_q, beta)
    return beta * kl(log_p, log_m) + (1 - beta) * kl(log_q, log_m)


def tvd(log_p: Tensor, log_q: Tensor) -> Tensor:
    """Total variation distance 0.5 * sum |p - q| over the last dim, in [0, 1]."""
    return 0.5 * (log_p.exp() - log_q.exp()).abs().sum(-1)


def divergence(name: Divergence, teacher_logprobs: Tensor, student_logprobs: Tensor, *,
               beta: float = 0.5, alpha: float = 0.1) -> Tensor:
    """Per-position divergence between teacher p and student q (log-probs, same shape; reduces the last dim).

    - ``forward_kl``: KL(p || q); ``reverse_kl``: KL(q || p).
    - ``jsd``: generalized JSD with ``beta`` in TRL's convention (beta=0 forward KL, beta=1 reverse KL, see ``jsd``).
    - ``skew_forward_kl``: KL(p || alpha p + (1 - alpha) q); ``skew_reverse_kl``: KL(q || alpha q + (1 - alpha) p)
      (DistiLLM; alpha=0 gives plain KL; the skew keeps the loss finite where one side has zeros).
    - ``tvd``: 0.5 * sum |p - q|.

    KL and reverse KL are +inf where the reference side has mass and the other has none (e.g. reverse KL
    where the teacher gives a token probability 0): that is the divergence, not a numerical error.
    """
    if name not in DIVERGENCES:
        raise ValueError(f"unknown divergence {name!r}; expected one of {', '.join(DIVERGENCES)}")
    if teacher_logprobs.shape != student_logprobs.shape:
        raise ValueError(f"teacher log-probs {tuple(teacher_logprobs.shape)} and student log-probs "
                         f"{tuple(student_logprobs.shape)} must have the same shape")
    if not 0 <= beta <= 1:
        raise ValueError(f"beta={beta} must be in [0, 1]")
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha={alpha} must be in [0, 1]")
    p, q = teacher_logprobs, student_logprobs
    if name == "forward_kl":
        return kl(p, q)
    if name == "reverse_kl":
        return kl(q, p)
    if name == "jsd":
        return jsd(p, q, beta)
    if name == "skew_forward_kl":
        return kl(p, log_mix(p, q, alpha))
    if name == "skew_reverse_kl":
        return kl(q, log_mix(q, p, alpha))
    return tvd(p, q)


# ---------------------------------------------------------------------------------------------
# Sparse teacher: stored top-k against the student's full logits


def log1mexp(x: Tensor) -> Tensor:
    """log(1 - exp(x)) for x <= 0, accurate at both ends (Maechler 2012); -inf at x = 0."""
    # Near 0, 1 - exp(x) cancels: expm1 keeps the digits. Far below, log1p keeps them instead.
    return torch.where(x > -math.log(2), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def listed(top_ids: Tensor, top_logprobs: Tensor) -> Tensor:
    """Positions with at least one real (non-padding, finite log-prob) teacher entry: (..., k) -> (...)."""
    return ((top_ids >= 0) & (top_logprobs > NEG_INF)).any(-1)


def check_top_k(top_ids: Tensor, top_logprobs: Tensor, vocab_size: int | None = None) -> None:
    """ValueError unless ids and log-probs match in shape, ids are integers >= -1, below ``vocab_size``
    (when given) and distinct per position (a repeated id would count its student mass twice).
    Reads two scalars and one flag back from the device: a host sync per call."""
    if top_ids.shape[:-1] != top_logprobs.shape[:-1]:
        raise ValueError(f"teacher top-k ids {tuple(top_ids.shape)} and log-probs {tuple(top_logprobs.shape)} "
                         "must have the same shape")
    if top_ids.shape[-1:] != top_logprobs.shape[-1:]:
        raise ValueError(f"k mismatch: {top_ids.shape[-1]} teacher top-k ids but {top_logprobs.shape[-1]} log-probs "
                         "per position")
    if top_ids.dtype.is_floating_point or top_ids.dtype.is_complex or top_ids.dtype == torch.bool:
        raise ValueError(f"teacher top-k ids must be integers, got {top_ids.dtype}")
    if top_ids.numel() == 0:
        return
    low, high = int(top_ids.min()), int(top_ids.max())
    if low < -1:
        raise ValueError(f"teacher top-k id {low} is invalid: ids are >= 0, with -1 as padding")
    if vocab_size is not None and high >= vocab_size:
        raise ValueError(f"teacher top-k id {high} is out of range for the student vocab of size {vocab_size}")
    ids = top_ids.sort(-1).values
    if ((ids[..., 1:] == ids[..., :-1]) & (ids[..., 1:] >= 0)).any():
        raise ValueError("teacher top-k ids repeat an id at some position; each id may be listed once")


def sparse_distributions(student_logits: Tensor, top_ids: Tensor, top_logprobs: Tensor, *,
                         temperature: float = 1.0, tail: Tail = "bucket") -> tuple[Tensor, Tensor, Tensor]:
    """Teacher and student log-probs on a common support, and the mask of valid positions.

    Args: student logits (B, T, V); teacher top-k ids (B, T, k), -1 = padding; teacher top-k log-probs
    (B, T, k) taken at temperature 1, -inf on padding (log-probs of padding entries are ignored).
    Returns (teacher, student, valid): log-probs (B, T, k + 1) for ``tail="bucket"`` or (B, T, k) for
    ``"renormalize"`` (padding entries are -inf on both sides), and valid (B, T), True where the teacher
    lists at least one id with a finite log-prob. At invalid positions the teacher row is a detached copy
    of the student's, so every divergence there is 0 and finite.

    Mass outside the top-k (``tail``):

    - ``"bucket"``: one extra outcome "any other token". The teacher's is 1 - sum(top-k probs), clipped
      at 0 (what ``FEATURES.tail_mass`` stores); the student's is its mass outside those same ids,
      log(1 - sum q_topk), with the student's top-k log-sum-exp clamped to <= -eps of the dtype so that
      its tail is at least ~eps (float32: 1.2e-7; the cancellation cannot resolve less) and never
      log(0). Both are then proper distributions over k + 1 outcomes and the divergence is exact for
      that coarse-graining (at T = 1 a lower bound on the full-vocab divergence, by the data-processing
      inequality). If the stored top-k sums past 1 (float16 rounding) the teacher is renormalised.
      Temperature: the student is softmax(logits / T) over the full vocab. The teacher's k + 1
      outcomes (tail as a single outcome) are re-tempered as log_softmax(log p / T). Exact at T = 1;
      at T != 1 it is an approximation because the tail is really spread over many tokens: for T > 1
      it understates the teacher's tempered tail mass (sum p_j^(1/T) >= (sum p_j)^(1/T)), for T < 1
      it overstates it.
    - ``"renormalize"``: both sides renormalised over the k listed ids only (DistillKit-style), the
      teacher as log_softmax(log p / T), the student as log_softmax of its logits / T at those ids.
      Cheaper (no softmax over V) but blind to how much mass the student puts elsewhere.

    Divergences needing the teacher's support to cover the student's (reverse KL) are +inf at positions
    whose teacher tail is 0 under ``"bucket"``; the bounded ones (jsd with 0 < beta < 1, skew KL, tvd)
    stay finite.
    """
    if tail not in TAILS:
        raise ValueError(f"unknown tail {tail!r}; expected one of {', '.join(TAILS)}")
    if not temperature > 0:
        raise ValueError(f"temperature={temperature} must be > 0")
    if student_logits.shape[:-1] != top_ids.shape[:-1]:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher top-k ids "
                         f"{tuple(top_ids.shape)} must share their leading (B, T) dims")
    check_top_k(top_ids, top_logprobs, student_logits.shape[-1])

    # Softmax in at least float32: half-precision logits lose the small probabilities KD is about.
    dtype = torch.promote_types(student_logits.dtype, torch.float32)
    logits = student_logits.to(dtype) / temperature
    teacher = top_logprobs.detach().to(dtype)  # data, not a model output: no gradient to it
    valid = listed(top_ids, teacher)
    # Invalid rows (no real entry) would make every log-sum-exp below -inf - (-inf) = NaN. Give them
    # one real entry (id 0, log-prob 0) so all arithmetic stays finite; they are overwritten at the end.
    keep = top_ids >= 0
    keep[..., 0] |= ~valid
    ids = torch.where(top_ids >= 0, top_ids, 0).long()  # any index will do: padding is masked by keep
    teacher = torch.where(top_ids >= 0, teacher, NEG_INF)
    teacher[..., 0] = torch.where(valid, teacher[..., 0], 0.0)

    if tail == "renormalize":
        student = torch.where(keep, logits.gather(-1, ids), NEG_INF).log_softmax(-1)
        teacher = (teacher / temperature).log_softmax(-1)
    else:
        student_top = torch.where(keep, logits.log_softmax(-1).gather(-1, ids), NEG_INF)
        eps = torch.finfo(dtype).eps
        student_tail = log1mexp(student_top.logsumexp(-1, keepdim=True).clamp(max=-eps))
        student = torch.cat([student_top, student_tail], -1)
        teacher_sum = teacher.logsumexp(-1, keepdim=True)
        teacher_tail = log1mexp(teacher_sum.clamp(max=0))  # 1 - sum clipped at 0: -inf when sum >= 1
        # log_softmax is the temperature and also renormalises a top-k that float16 rounding took past 1.
        teacher = (torch.cat([teacher, teacher_tail], -1) / temperature).log_softmax(-1)
    # Invalid rows: teacher := student (detached), so every divergence there is exactly 0 and finite.
    teacher = torch.where(valid.unsqueeze(-1), teacher, student.detach())
    return teacher, student, valid


def sparse_divergence(name: Divergence, student_logits: Tensor, top_ids: Tensor, top_logprobs: Tensor, *,
                      temperature: float = 1.0, tail: Tail = "bucket", beta: float = 0.5,
                      alpha: float = 0.1) -> tuple[Tensor, Tensor]:
    """Per-position divergence (B, T) of the student from a stored top-k teacher, and the valid mask (B, T).

    See ``sparse_distributions`` for the support, ``tail`` and ``temperature``; ``divergence`` for
    ``name``, ``beta`` and ``alpha``. Invalid positions hold 0 and pass no gradient.
    """
    if name not in DIVERGENCES:  # before the softmax over V
        raise ValueError(f"unknown divergence {name!r}; expected one of {', '.join(DIVERGENCES)}")
    teacher, student, valid = sparse_distributions(student_logits, top_ids, top_logprobs,
                                                   temperature=temperature, tail=tail)
    per_position = divergence(name, teacher, student, beta=beta, alpha=alpha)
    return torch.where(valid, per_position, 0.0), valid


# ---------------------------------------------------------------------------------------------
# Reduction


def token_mean(per_position: Tensor, mask: Tensor, *, temperature: float = 1.0, scale_t2: bool = False,
               num_tokens: int | Tensor | None = None) -> Tensor:
    """Mean of ``per_position`` over the positions where ``mask`` is True: one sum, one division.

    ``num_tokens``: divide by this count instead (e.g. the valid tokens of the whole accumulated
    batch, like TRL's ``num_items_in_batch``, so that gradient accumulation weights every token once).
    ``scale_t2``: multiply by temperature**2 (Hinton et al. 2015): the gradient of a KL between
    softmaxes at temperature T shrinks like 1/T^2, so this keeps its scale comparable across T.
    An empty mask gives 0 (with a gradient path), not NaN.
    """
    if per_position.shape != mask.shape:
        raise ValueError(f"per-position losses {tuple(per_position.shape)} and mask {tuple(mask.shape)} "
                         "must have the same shape")
    mask = mask.bool()
    # where, not multiply: a masked position may hold inf or NaN filler, and 0 * inf = NaN.
    total = torch.where(mask, per_position, 0.0).sum()
    count = mask.sum().clamp_min(1) if num_tokens is None else num_tokens
    loss = total / count
    return loss * temperature**2 if scale_t2 else loss


# ---------------------------------------------------------------------------------------------
# Several teachers


def mixture_weights(weights: Sequence[float] | None, n: int) -> list[float]:
    """``weights`` normalised to sum 1 (uniform when None); ValueError unless n finite values >= 0 with sum > 0."""
    if n == 0:
        raise ValueError("no teachers to mix")
    if weights is None:
        return [1 / n] * n
    weights = [float(w) for w in weights]
    if len(weights) != n:
        raise ValueError(f"{len(weights)} weights for {n} teachers")
    if not all(math.isfinite(w) and w >= 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"teacher weights {weights} must be finite, >= 0 and not all 0")
    total = sum(weights)
    return [w / total for w in weights]


def mix_teachers(teacher_logprobs: Sequence[Tensor], weights: Sequence[float] | None = None) -> Tensor:
    """log(sum_i w_i p_i): the weighted mixture of dense teachers over the same vocabulary (same shapes).

    Weights are normalised to sum 1 (uniform when None). Computed with logsumexp; teachers of
    weight 0 are left out, so weights [1, 0] return the first teacher unchanged.
    """
    weights = mixture_weights(weights, len(teacher_logprobs))
    shapes = {tuple(t.shape) for t in teacher_logprobs}
    if len(shapes) > 1:
        raise ValueError(f"teacher log-probs must have the same shape, got {sorted(shapes)}")
    terms = [t + math.log(w) for t, w in zip(teacher_logprobs, weights, strict=True) if w > 0]
    return torch.stack(terms).logsumexp(0)


def mix_sparse_teachers(top_ids: Sequence[Tensor], top_logprobs: Sequence[Tensor],
                        weights: Sequence[float] | None = None) -> tuple[Tensor, Tensor]:
    """Merge several teachers' top-k (same tokenizer) into one top-K of the mixture sum_i w_i p_i.

    Per position, the result lists the union of the teachers' ids (K = the largest union size, -1 /
    -inf padded, ids in ascending order) with log(sum_i w_i p_i(id)), where a teacher that does not
    list an id contributes 0 for it. Its tail, 1 - sum over the union, is then exactly sum_i w_i tail_i:
    each teacher's unlisted mass goes to the mixture's tail bucket (``sparse_distributions``). A
    position that some teacher lists nothing for (``listed`` is False) is all padding in the result:
    a mixture with an unknown teacher is unknown. Teachers' log-probs are data: no gradient is kept.
    """
    if len(top_logprobs) != len(top_ids):
        raise ValueError(f"{len(top_ids)} teachers' ids but {len(top_logprobs)} teachers' log-probs")
    weights = mixture_weights(weights, len(top_ids))
    for ids, logprobs in zip(top_ids, top_logprobs, strict=True):
        check_top_k(ids, logprobs)
    leading = {tuple(ids.shape[:-1]) for ids in top_ids}
    if len(leading) > 1:
        raise ValueError(f"teachers' top-k must share their leading (B, T) dims, got {sorted(leading)}")

    # Teachers of weight 0 take no part: they neither add ids nor make a position missing.
    teachers = [(i, lp.detach(), w) for i, lp, w in zip(top_ids, top_logprobs, weights, strict=True) if w > 0]
    dtype = reduce(torch.promote_types, [lp.dtype for _, lp, _ in teachers], torch.float32)
    present = torch.stack([listed(i, lp) for i, lp, _ in teachers]).all(0)
    ids = torch.cat([i.long() for i, _, _ in teachers], -1)
    values = torch.cat([lp.to(dtype) + math.log(w) for _, lp, w in teachers], -1)
    # Padding, unlisted positions and zero-probability entries all become padding.
    drop = (ids < 0) | ~present.unsqueeze(-1) | (values == NEG_INF)
    ids = torch.where(drop, -1, ids)
    values = torch.where(drop, NEG_INF, values)

    # Sort so equal ids are adjacent, number the runs, then log-sum-exp within each run.
    ids, order = ids.sort(-1)
    values = values.gather(-1, order)
    starts = torch.ones_like(ids, dtype=torch.bool)
    starts[..., 1:] = ids[..., 1:] != ids[..., :-1]
    run = starts.long().cumsum(-1) - 1
    run_max = torch.full_like(values, NEG_INF).scatter_reduce(-1, run, values, "amax")
    run_max = torch.where(run_max > NEG_INF, run_max, 0.0)  # an all -inf run: exp(-inf - 0) = 0, no NaN
    sums = torch.zeros_like(values).scatter_add(-1, run, (values - run_max.gather(-1, run)).exp())
    merged = sums.log() + run_max
    merged_ids = torch.full_like(ids, -1).scatter(-1, run, ids)
    # The -1 run (sorted first) is padding, as are slots past the last run: keep -1 / -inf there.
    merged = torch.where(merged_ids >= 0, merged, NEG_INF)
    # Move real entries first (stable sort on "is padding"), then trim columns that are padding everywhere.
    pad_last = (merged_ids < 0).to(torch.int8).sort(dim=-1, stable=True).indices
    merged_ids, merged = merged_ids.gather(-1, pad_last), merged.gather(-1, pad_last)
    width = max(int((merged_ids >= 0).sum(-1).max()), 1) if merged_ids.numel() else 1
    return merged_ids[..., :width], merged[..., :width]
