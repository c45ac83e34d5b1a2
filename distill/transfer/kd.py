"""Offline-logit KD: the student learns the teacher's stored top-k log-probs (the feature method).

TRL distils from a *live* teacher (GKD / on-policy) but has no trainer for log-probs stored once
and reused for many students, and no skew KL or TVD: this module adds that, by hand, on top of
TRL's ``SFTTrainer`` (same config, logging, checkpointing). The loss per completion token is

    ce_weight * cross-entropy(answer token) + (1 - ce_weight) * divergence(teacher || student)

with the divergence, temperature and tail treatment of ``distill/transfer/divergences.py``. A row without
usable log-probs (another method's row, or an answer whose tokens are not the stored ones, e.g.
after chain-of-thought parsing) still trains on its cross-entropy; the count is in the metrics.

Ids in ``features.parquet`` are ids of ``generate.feature_tokenizer``: KD is refused unless that is
the student's own tokenizer (same tokenizer.json), checked before any training. The stored log-probs cover the
answer's tokens only, so KD trains on the answer: ``student.reasoning: keep`` with it is refused at load.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from distill import params as params_module
from distill import paths
from distill.chat import example_ids, frame_turns
from distill.entry import StageError
from distill.records import conform

IGNORE = -100  # label of a position that is not trained on (the prompt), as in transformers


def tokenizer_identity(student: str) -> str:
    """sha256 prefix of the student's tokenizer.json, as the feature method records it."""
    from transformers.utils import cached_file

    file = cached_file(student, "tokenizer.json", _raise_exceptions_for_missing_entries=False)
    if file is None:
        raise StageError(f"train.objective=kd: the student {student} has no tokenizer.json (a fast tokenizer), "
                         "so its ids cannot be matched with the stored teacher log-probs")
    return hashlib.sha256(Path(file).read_bytes()).hexdigest()[:16]


def check_tokenizer(features: pl.DataFrame, student: str) -> None:
    """Refuse KD when the stored ids belong to another tokenizer than the student's."""
    wanted = tokenizer_identity(student)
    stored = sorted(set(features["tokenizer"].to_list()))
    foreign = [name for name in stored if name.rsplit("@", 1)[-1] != wanted]
    if foreign:
        raise StageError(
            f"train.objective=kd: {paths.GENERATE_FEATURES} holds teacher log-probs by token ids of {foreign[0]}, "
            f"but the student {student} uses another tokenizer (tokenizer.json sha {wanted}): the ids would not "
            "mean the same tokens. Set generate.feature_tokenizer to the student and re-run generate, or use "
            "train.objective=sft")


@dataclass(frozen=True)
class KDExamples:
    examples: list[dict]  # input_ids, labels, teacher_ids (positions x k), teacher_logprobs
    with_teacher: int  # rows whose answer tokens are exactly the stored ones
    without_teacher: int  # rows trained on cross-entropy only


def examples(rows: pl.DataFrame, features: pl.DataFrame, template: str, tokenizer, max_length: int) -> KDExamples:
    """Tokenised kept rows with the teacher's top-k aligned to the answer tokens they predict."""
    kept = conform(rows.filter(pl.col("keep")), {name: pl.String for name in ("id", "instruction", "input", "context",
                                                                              "response")})
    joined = kept.join(features.select("id", "k", "token_ids", "top_ids", "top_logprobs"), on="id", how="left")
    k = int(features["k"].max()) if features.height else 1
    found, with_teacher = [], 0
    for row, turns in zip(joined.iter_rows(named=True), frame_turns(joined, template), strict=True):
        prompt, answer, eos = example_ids(tokenizer, turns, row["response"])  # eos: or the template's end of turn
        aligned = row["token_ids"] is not None and list(row["token_ids"]) == answer
        with_teacher += aligned
        blank = ([-1] * k, [float("-inf")] * k)
        teacher = [blank] * len(prompt)
        if aligned:
            ids, logprobs = row["top_ids"], row["top_logprobs"]
            teacher += [(ids[t * k:(t + 1) * k], logprobs[t * k:(t + 1) * k]) for t in range(len(answer))]
        else:
            teacher += [blank] * len(answer)
        teacher += [blank] * len(eos)  # the teacher gave no distribution for the end of the answer
        input_ids = (prompt + answer + eos)[:max_length]
        found.append({
            "input_ids": input_ids,
            "labels": ([IGNORE] * len(prompt) + answer + eos)[:max_length],
            "teacher_ids": [ids for ids, _ in teacher][:max_length],
            "teacher_logprobs": [logprobs for _, logprobs in teacher][:max_length],
        })
    return KDExamples(found, with_teacher, kept.height - with_teacher)


class Collator:
    """Right-pads a batch: ids with the pad id, labels with IGNORE, the teacher with -1 / -inf."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, batch: list[dict]) -> dict:
        import torch

        width = max(len(example["input_ids"]) for example in batch)
        k = len(batch[0]["teacher_ids"][0])

        def pad(key: str, fill: object) -> list:
            return [example[key] + [fill] * (width - len(example[key])) for example in batch]

        return {
            "input_ids": torch.tensor(pad("input_ids", self.pad_id)),
            "attention_mask": torch.tensor([[1] * len(e["input_ids"]) + [0] * (width - len(e["input_ids"]))
                                            for e in batch]),
            "labels": torch.tensor(pad("labels", IGNORE)),
            "teacher_ids": torch.tensor(pad("teacher_ids", [-1] * k)),
            "teacher_logprobs": torch.tensor(pad("teacher_logprobs", [float("-inf")] * k), dtype=torch.float32),
        }


def kd_loss(logits, labels, teacher_ids, teacher_logprobs, settings: params_module.KDParams, total=None):
    """(loss, cross-entropy, divergence): position t's logits predict token t + 1, as in the LM loss.
    ``total``: sums a count over every training process (distill/transfer/parallel.py); the means are then
    divided by the whole step's tokens, so this process's share, summed over the processes, is the loss one
    process would compute on the whole batch."""
    import torch

    from distill.transfer.divergences import sparse_divergence, token_mean

    logits, targets = logits[:, :-1], labels[:, 1:]
    answer = targets != IGNORE
    per_position, valid = sparse_divergence(settings.divergence, logits, teacher_ids[:, 1:], teacher_logprobs[:, 1:],
                                            temperature=settings.temperature, tail=settings.tail,
                                            beta=settings.beta, alpha=settings.alpha)
    counts = torch.stack([answer.sum(), (valid & answer).sum()])  # answer tokens; those with a teacher
    counts = (total(counts) if total is not None else counts).clamp_min(1)
    ce = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=IGNORE,
                                           reduction="sum") / counts[0]
    divergence = token_mean(per_position, valid & answer, temperature=settings.temperature,
                            scale_t2=settings.scale_t2, num_tokens=counts[1])
    return settings.ce_weight * ce + (1 - settings.ce_weight) * divergence, ce, divergence


def local_teachers(settings: params_module.KDParams, student: str, seed: int) -> list:
    """The extra KD teachers (frozen), refused unless each shares the student's tokenizer."""
    from distill.student import load_model
    from distill.transfer.guards import frozen_copy

    wanted = tokenizer_identity(student)
    for teacher in settings.teachers:
        if tokenizer_identity(teacher.model) != wanted:
            raise StageError(f"train.kd.teachers: {teacher.model} uses another tokenizer than the student {student}: "
                             "a mixture of distributions needs one vocabulary")
    return [frozen_copy(load_model(teacher.model, seed)) for teacher in settings.teachers]


def mixed_teacher(input_ids, attention_mask, teacher_ids, teacher_logprobs, teachers: list,
                  settings: params_module.KDParams):
    """The stored top-k mixed with each local teacher's top-k (same k) at every position: sum_i w_i p_i. TRL
    has no multi-teacher distillation: written here.
    A position the stored teacher has nothing for stays without a teacher unless stored_weight is 0."""
    import torch

    from distill.transfer.divergences import mix_sparse_teachers

    k = teacher_ids.shape[-1]
    ids, logprobs = [teacher_ids], [teacher_logprobs]
    with torch.no_grad():
        for teacher in teachers:
            logits = teacher(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits.float()
            top = logits[:, :-1].log_softmax(-1).topk(k, dim=-1)
            # stored entry t is the distribution of token t, which logits at t - 1 predict: shift by one
            ids.append(torch.nn.functional.pad(top.indices, (0, 0, 1, 0), value=-1))
            logprobs.append(torch.nn.functional.pad(top.values, (0, 0, 1, 0), value=float("-inf")))
    weights = [settings.stored_weight] + [teacher.weight for teacher in settings.teachers]
    return mix_sparse_teachers(ids, logprobs, weights)


def trainer_class():
    """TRL's SFTTrainer with the KD loss (imported lazily: TRL costs seconds to import)."""
    from trl import SFTTrainer

    from distill.transfer.guards import ReferenceKL

    class KDTrainer(ReferenceKL, SFTTrainer):
        # kd_loss is a mean over this micro-batch's tokens, not a share of num_items_in_batch: the Trainer must
        # divide it by the gradient accumulation steps (transformers would assume it already was)
        loss_is_scaled_for_ga = False

        def __init__(self, *args, kd: params_module.KDParams, reference_kl: float = 0.0, student: str = "",
                     **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.kd = kd
            self.setup_reference(reference_kl)
            self.teachers = [t.to(self.model.device) for t in local_teachers(kd, student, self.args.seed)] \
                if kd.teachers else []

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            import torch

            teacher_ids, teacher_logprobs = inputs.pop("teacher_ids"), inputs.pop("teacher_logprobs")
            if self.teachers:
                teacher_ids, teacher_logprobs = mixed_teacher(inputs["input_ids"], inputs["attention_mask"],
                                                              teacher_ids, teacher_logprobs, self.teachers, self.kd)
            outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False)
            # Several processes (distill/transfer/parallel.py): each computes its share of the whole batch's
            # token means; DDP averages the gradients, so the share is scaled by the process count.
            processes = self.accelerator.num_processes
            total = (lambda count: self.accelerator.reduce(count, "sum")) if processes > 1 else None
            loss, ce, divergence = kd_loss(outputs.logits, inputs["labels"], teacher_ids, teacher_logprobs, self.kd,
                                           total)
            loss = processes * loss + self.reference_penalty(model, inputs, outputs.logits)
            mode = "train" if model.training else "eval"
            shares = torch.stack([ce.detach(), divergence.detach()])
            ce, divergence = self.accelerator.reduce(shares, "sum") if processes > 1 else shares
            self._metrics[mode].setdefault("ce", []).append(float(ce))
            self._metrics[mode].setdefault("kd", []).append(float(divergence))
            return (loss, outputs) if return_outputs else loss

    return KDTrainer


def make_trainer(model, tokenizer, params: params_module.TrainParams, args: dict, data):
    """The KD trainer on ``data.kd`` (stages.train.kd_examples): the method contract of distill/transfer/data.py."""
    from datasets import Dataset

    from distill.transfer.arguments import lora_config, sft_config

    if data.kd is None:
        raise StageError("train.objective=kd needs the teacher's log-probs (distill.transfer.kd.examples)")
    return trainer_class()(model=model, args=sft_config(params, args), processing_class=tokenizer,
                           train_dataset=Dataset.from_list(data.kd.examples),
                           data_collator=Collator(tokenizer.pad_token_id), kd=params.kd,
                           reference_kl=params.reference_kl, student=params.student,
                           peft_config=lora_config(params.lora) if params.lora.enabled else None)
