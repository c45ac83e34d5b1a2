"""Feature distillation: the student matches a local teacher's hidden states (train.objective: similarity).

TRL has no trainer for this (its GKD / GOLD trainers match output distributions, not hidden states),
so it is written here by hand on top of TRL's ``SFTTrainer``, as ``distill/transfer/kd.py`` does for offline
logits: same config (``distill.transfer.arguments.sft_config``: completion-only loss), logging and checkpointing.
The loss of a batch is

    cross-entropy on the answer tokens (TRL's own loss) + weight * similarity(project(student), teacher)

where the similarity is taken over the positions that hold answer tokens (labels != -100) of the
teacher's hidden states for the same token ids, hence the teacher must use the student's tokenizer
(``train.objective: on_policy`` distils across tokenizers, with TRL's GOLD). ``train.similarity``:

- ``loss``: ``l2`` (mean squared error per token), ``l1`` (mean absolute error per token), ``cosine``
  (1 - cosine per token), or ``mmd``: the squared maximum mean discrepancy between the *set* of the
  batch's answer-token vectors of the student and that of the teacher, with the Gaussian kernel
  ``exp(-|a - b|^2 / h)`` and the median heuristic for ``h``: the median squared distance between
  two distinct vectors of the pooled set (without gradient). MMD matches distributions, not tokens.
  Its cost is quadratic in the number of answer tokens of a batch.
- ``layers``: ``last`` matches the final hidden states (after the final norm); ``all`` matches each
  student layer i of n (1..n) to the teacher layer round(i * m / n) of m (at least 1: never the embeddings),
  the mean over layers.
- ``weight``: of the similarity beside the cross-entropy.

When the widths differ, a learned linear projection (one per matched layer) maps the student's
hidden states to the teacher's width; with equal widths it is the identity. The projection is not
part of the student: it lives on the trainer, its parameters are an extra group of the trainer's
optimizer (``create_optimizer``), it is written beside each resumable checkpoint and read back when
a run resumes (``save_model`` / ``train``), and the saved student holds no trace of it.

TRL's SFTTrainer computes its loss with a fused LM head that keeps no hidden states, and its
``return_outputs`` re-runs the model without gradient, so the student's hidden states are taken
from the one training forward itself: a forward hook on the student's backbone, which TRL's fused
forward calls with ``output_hidden_states=True``.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from distill import params as params_module
from distill.entry import StageError

IGNORE = -100  # label of a position that is not trained on (the prompt, padding), as in transformers
PROJECTION_FILE = "similarity_projection.safetensors"  # beside a checkpoint: the projection's weights


# --- the losses (pure torch) ---------------------------------------------------------------------------------------


def _empty(student):
    """A zero that stays connected to the graph: a batch without answer tokens trains nothing."""
    return student.sum() * 0.0


def l2_loss(student, teacher, mask):
    """Mean over the masked positions of the mean squared error per token; (batch, seq, dim) and (batch, seq)."""
    if not mask.any():
        return _empty(student)
    return (student - teacher).pow(2).mean(-1)[mask].mean()


def l1_loss(student, teacher, mask):
    """Mean over the masked positions of the mean absolute error per token."""
    if not mask.any():
        return _empty(student)
    return (student - teacher).abs().mean(-1)[mask].mean()


def cosine_loss(student, teacher, mask):
    """Mean over the masked positions of 1 - cos(student, teacher)."""
    import torch

    if not mask.any():
        return _empty(student)
    return (1 - torch.nn.functional.cosine_similarity(student, teacher, dim=-1, eps=1e-8))[mask].mean()


def squared_distances(points):
    """|a - b|^2 for every pair of rows of ``points`` (n, dim), without the (n, n, dim) difference tensor."""
    norms = points.pow(2).sum(-1)
    return (norms[:, None] + norms[None, :] - 2 * points @ points.T).clamp_min(0)


def median_bandwidth(distances):
    """The median heuristic: the median squared distance between two distinct points (no gradient), > 0."""
    import torch

    n = distances.shape[0]
    upper = torch.triu(torch.ones(n, n, dtype=torch.bool, device=distances.device), diagonal=1)
    pairs = distances.detach()[upper]
    bandwidth = pairs.median() if pairs.numel() else distances.new_tensor(1.0)
    return bandwidth.clamp_min(1e-6)


def mmd_loss(student, teacher, mask):
    """Squared MMD (biased estimator) between the sets of masked student and teacher vectors, Gaussian kernel
    exp(-|a - b|^2 / h) with h the median squared distance over the pooled set. 0 for identical sets."""
    import torch

    if not mask.any():
        return _empty(student)
    x, y = student[mask], teacher[mask]
    n = x.shape[0]
    distances = squared_distances(torch.cat([x, y]))
    kernel = torch.exp(-distances / median_bandwidth(distances))
    kxx, kyy, kxy = kernel[:n, :n], kernel[n:, n:], kernel[:n, n:]
    return (kxx.mean() + kyy.mean() - 2 * kxy.mean()).clamp_min(0)


LOSSES = {"l2": l2_loss, "l1": l1_loss, "cosine": cosine_loss, "mmd": mmd_loss}


def layer_pairs(student_layers: int, teacher_layers: int, layers: str) -> list[tuple[int, int]]:
    """(student index, teacher index) into ``hidden_states`` (index 0 = the embeddings, n = the last layer). A
    student layer is never matched to the teacher's embeddings (a teacher under half the student's depth)."""
    if layers == "last":
        return [(student_layers, teacher_layers)]
    return [(i, max(1, round(i * teacher_layers / student_layers))) for i in range(1, student_layers + 1)]


def similarity(kind: str, student_states, teacher_states, pairs, projections, mask):
    """Mean over the matched layers of LOSSES[kind](projected student layer, teacher layer), in float32."""
    total = 0.0
    for (s, t), project in zip(pairs, projections, strict=True):
        total = total + LOSSES[kind](project(student_states[s].float()), teacher_states[t].float(), mask)
    return total / len(pairs)


# --- the teacher ---------------------------------------------------------------------------------------------------


def check_teacher(local_teacher: str | None, tokenizer, probes: list[str]) -> None:
    """Refuse a missing teacher, or one whose tokenizer differs from the student's, before loading any weights."""
    from distill.student import load_tokenizer

    if local_teacher is None:
        raise StageError("train.objective=similarity needs a local Hugging Face teacher: set train.local_teacher to a "
                         "model id or path (a larger model sharing the student's tokenizer)")
    try:
        theirs = load_tokenizer(local_teacher)
    except (OSError, ValueError) as error:
        raise StageError(f"train.objective=similarity: train.local_teacher {local_teacher} has no loadable tokenizer "
                         f"({error})") from error
    same = theirs.get_vocab() == tokenizer.get_vocab() and all(
        theirs(text)["input_ids"] == tokenizer(text)["input_ids"] for text in probes)
    if not same:
        raise StageError(
            f"train.objective=similarity matches hidden states position by position, so train.local_teacher "
            f"{local_teacher} must use the student's tokenizer, but it has another ({len(theirs.get_vocab())} "
            f"tokens against the student's {len(tokenizer.get_vocab())}, or other ids for the same text). Use a "
            "teacher of the student's family, or train.objective=on_policy, which distils across tokenizers (GOLD)")


def frozen_teacher(local_teacher: str, seed: int, device):
    from distill.student import load_model

    teacher = load_model(local_teacher, seed).to(device).eval()
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    return teacher


def backbone(model):
    """The transformer body of a causal LM (the module TRL's fused forward calls), under PEFT too."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.base_model


def width_and_depth(model) -> tuple[int, int]:
    config = model.config.get_text_config()
    return config.hidden_size, config.num_hidden_layers


# --- the trainer ---------------------------------------------------------------------------------------------------


def clear_after_each_step(projection):
    """A callback that clears the projection's gradients after each optimizer step. transformers clears only the
    model's (``model.zero_grad()``); without it each step would apply the sum of every earlier step's gradient, and
    a run resumed from a checkpoint (starting that sum afresh) would train another projection."""
    from transformers import TrainerCallback

    class ClearProjectionGradients(TrainerCallback):
        def on_optimizer_step(self, args, state, control, **kwargs):
            projection.zero_grad(set_to_none=True)

    return ClearProjectionGradients()


def trainer_class():
    """TRL's SFTTrainer plus the hidden-state similarity (imported lazily: TRL costs seconds to import)."""
    import torch
    from trl import SFTTrainer

    from distill.transfer.guards import ReferenceKL

    class SimilarityTrainer(ReferenceKL, SFTTrainer):
        def __init__(self, *args, teacher, similarity: params_module.SimilarityParams, reference_kl: float = 0.0,
                     **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.teacher = teacher
            self.similarity = similarity
            self.setup_reference(reference_kl)
            student_width, student_depth = width_and_depth(self.model)
            teacher_width, teacher_depth = width_and_depth(teacher)
            self.pairs = layer_pairs(student_depth, teacher_depth, similarity.layers)
            self.projection = torch.nn.ModuleList(
                torch.nn.Linear(student_width, teacher_width, bias=False) if student_width != teacher_width
                else torch.nn.Identity() for _ in self.pairs).to(self.model.device)
            self.add_callback(clear_after_each_step(self.projection))

        # The projection trains with the student: an extra param group, so the scheduler (made after this, from
        # every group) drives its learning rate too. It is outside the model, so the gradient clipping (on the
        # model's parameters) leaves it alone.
        def create_optimizer(self, model=None):
            optimizer = super().create_optimizer(model)
            extra = [parameter for parameter in self.projection.parameters() if parameter.requires_grad]
            if extra and not any(parameter is extra[0] for group in optimizer.param_groups
                                 for parameter in group["params"]):
                optimizer.add_param_group({"params": extra, "weight_decay": 0.0})
            return optimizer

        # A checkpoint holds the optimizer state of the projection (its param group), so it holds its weights too,
        # and a resumed run reads them back before training (the optimizer state is loaded later, by transformers).
        def save_model(self, output_dir=None, _internal_call=False):
            super().save_model(output_dir, _internal_call)
            if _internal_call and self.args.should_save and list(self.projection.parameters()):
                from safetensors.torch import save_file

                folder = Path(output_dir or self.args.output_dir)
                save_file({name: tensor.detach().contiguous().cpu()
                           for name, tensor in self.projection.state_dict().items()}, folder / PROJECTION_FILE)

        def train(self, resume_from_checkpoint=None, *args, **kwargs):
            from transformers.trainer_utils import get_last_checkpoint

            checkpoint = (get_last_checkpoint(self.args.output_dir) if resume_from_checkpoint is True
                          else resume_from_checkpoint or None)
            if checkpoint and list(self.projection.parameters()):
                file = Path(checkpoint) / PROJECTION_FILE
                if not file.exists():
                    raise StageError(f"train.objective=similarity: checkpoint {checkpoint} has no {PROJECTION_FILE} "
                                     "(the student-to-teacher projection); delete it to start afresh")
                from safetensors.torch import load_file

                self.projection.load_state_dict(load_file(file, device=str(self.model.device)))
            return super().train(resume_from_checkpoint, *args, **kwargs)

        @contextmanager
        def captured(self, model):
            """The student backbone's outputs during the block (the first call is the training forward)."""
            found = []
            hook = backbone(self.accelerator.unwrap_model(model)).register_forward_hook(
                lambda module, args, output: found.append(output))
            try:
                yield found
            finally:
                hook.remove()

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            teacher_inputs = {key: value for key, value in inputs.items()
                              if key not in ("labels", "use_cache", "output_hidden_states")}
            with torch.no_grad():
                teacher_states = self.teacher.base_model(**teacher_inputs, use_cache=False,
                                                         output_hidden_states=True).hidden_states
            inputs["output_hidden_states"] = True
            with self.captured(model) as found:
                result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            ce, outputs = result if return_outputs else (result, None)
            student_states = found[0].hidden_states
            mask = inputs["labels"] != IGNORE
            distance = similarity(self.similarity.loss, student_states, teacher_states, self.pairs, self.projection,
                                  mask)
            # Like TRL's MoE aux loss: with num_items_in_batch the CE is already a share of the accumulated batch,
            # and transformers does not divide by the accumulation steps, so this per-micro-batch mean is divided.
            steps = self.current_gradient_accumulation_steps if num_items_in_batch is not None else 1
            loss = ce + self.similarity.weight * distance / steps
            if self.reference is not None:
                # TRL's fused head builds no logits: the student's, from its final state through its LM head (a
                # plain head, as in Llama, Qwen or Mistral; no logit soft-capping or scaling)
                head = self.accelerator.unwrap_model(model).get_output_embeddings()
                loss = loss + self.reference_penalty(model, inputs, head(found[0].last_hidden_state))
            mode = "train" if self.model.training else "eval"
            self._metrics[mode].setdefault("ce", []).append(float(ce.detach()))
            self._metrics[mode].setdefault("similarity", []).append(float(distance.detach()))
            return (loss, outputs) if return_outputs else loss

    return SimilarityTrainer


def make_trainer(model, tokenizer, params: params_module.TrainParams, args: dict, data):
    """The similarity trainer on ``data.pairs`` with the teacher ``data.local_teacher``: the contract of
    distill/transfer/data.py."""
    from datasets import Dataset

    from distill.transfer.arguments import lora_config, sft_config

    check_teacher(data.local_teacher, tokenizer, [pair["prompt"] + pair["completion"] for pair in data.pairs[:8]])
    teacher = frozen_teacher(data.local_teacher, params.seed, model.device)
    return trainer_class()(model=model, args=sft_config(params, args), processing_class=tokenizer,
                           train_dataset=Dataset.from_list(data.pairs), teacher=teacher,
                           similarity=params.similarity, reference_kl=params.reference_kl,
                           peft_config=lora_config(params.lora) if params.lora.enabled else None)
