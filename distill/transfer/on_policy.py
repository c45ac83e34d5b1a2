"""On-policy distillation from a live local teacher (``train.objective: on_policy``), all of it TRL's.

The student samples answers to the training prompts, a local Hugging Face teacher (``train.local_teacher``) scores
every token of them, and the student learns the teacher's next-token distribution on its own answers under the
generalized Jensen-Shannon divergence (``train.on_policy.beta``: 0 = forward KL, 1 = reverse KL) at ``temperature``:
GKD, Agarwal et al., "On-Policy Distillation of Language Models". ``lmbda`` is the share of batches on the student's
sampled answers; the rest train on the teacher's stored answers (the ``completion`` column of the pairs, its
reasoning in think tags first with ``student.reasoning: keep``).

Which TRL trainer:

* ``trl.DistillationTrainer`` when the teacher shares the student's tokenizer (and embedding size) and ``lmbda`` is 1.
  In TRL 1.16 this trainer is on-policy only: it has no ``lmbda`` and reads the ``prompt`` column alone.
* ``trl.experimental.gold.GOLDTrainer`` otherwise. With the same tokenizer it is GKD's lmbda mixture with the same
  JSD loss; with another tokenizer (a different vocabulary) it trains on GOLD's Universal Logit Distillation loss,
  which compares the two models' sorted distributions over the same text tokenised by each (``beta`` is unused there).

Written by hand, and only this: the choice of trainer and the mapping of ``train.on_policy`` onto its config. Extended
ULD (byte-offset alignment of the two tokenizations) is on only when both tokenizers are ByteLevel BPE (Llama-3, Qwen,
SmolLM...): TRL refuses any other tokenizer there (NotImplementedError), so e.g. the char-level demo student
distils with positional ULD, the original ULD paper's alignment.

The rows stay plain text (TRL's standard prompt-completion format), so the student needs no chat template:
DistillationTrainer tokenises the prompt as is and GOLD the prompt + completion text (plus EOS). Generation is
``model.generate`` (no vLLM), so it runs on CPU with ``use_cpu``.
"""

from __future__ import annotations

from distill import params as params_module
from distill.entry import StageError
from distill.transfer.data import TrainData


def shares_vocabulary(student_model, student_tokenizer, teacher_model, teacher_tokenizer) -> bool:
    """Same token -> id map and the same logit width: the teacher's distribution can be compared id by id."""
    return (
        student_tokenizer.get_vocab() == teacher_tokenizer.get_vocab()
        and student_model.config.get_text_config().vocab_size == teacher_model.config.get_text_config().vocab_size
    )


def load_teacher(local_teacher: str | None, seed: int):
    """The teacher model and tokenizer; a config-only folder is initialised from ``seed``, like the student."""
    from distill.student import load_model, load_tokenizer

    if local_teacher is None:
        raise StageError(
            "train.objective=on_policy needs a live local teacher: set train.local_teacher to a Hugging Face "
            "model id or path (a larger model, ideally sharing the student's tokenizer)"
        )
    try:
        return load_model(local_teacher, seed), load_tokenizer(local_teacher)
    except (OSError, ValueError) as error:
        raise StageError(
            f"train.local_teacher={local_teacher!r}: cannot load the teacher model and tokenizer: {error}"
        ) from None


def make_trainer(model, tokenizer, params: params_module.TrainParams, args: dict, data: TrainData):
    """A ready TRL ``DistillationTrainer`` (same tokenizer, lmbda 1) or ``GOLDTrainer`` (lmbda < 1, or another
    tokenizer) on ``data.pairs`` against ``data.local_teacher``: the method contract of distill/transfer/data.py."""
    from datasets import Dataset

    from distill.transfer.arguments import lora_config

    settings = params.on_policy
    if settings.max_new_tokens >= params.max_length:
        raise StageError(
            f"train.on_policy.max_new_tokens ({settings.max_new_tokens}) must be below train.max_length "
            f"({params.max_length}): a sampled answer and its prompt must fit in max_length"
        )
    teacher, teacher_tokenizer = load_teacher(data.local_teacher, params.seed)
    shared = shares_vocabulary(model, tokenizer, teacher, teacher_tokenizer)
    config = {
        **args,
        "activation_checkpointing": params.activation_checkpointing,
        "beta": settings.beta,
        "temperature": settings.temperature,
        "max_completion_length": settings.max_new_tokens,
        "use_vllm": False,
    }
    common = {
        "model": model,
        "teacher_model": teacher,
        "train_dataset": Dataset.from_list(data.pairs),
        "processing_class": tokenizer,
        "peft_config": lora_config(params.lora) if params.lora.enabled else None,
    }
    if shared and settings.lmbda == 1.0:
        from trl import DistillationConfig, DistillationTrainer

        return DistillationTrainer(args=DistillationConfig(**config), **common)

    from trl.experimental.gold import GOLDConfig, GOLDTrainer
    from trl.experimental.utils import is_byte_level_tokenizer

    byte_level = all(is_byte_level_tokenizer(t.backend_tokenizer) for t in (tokenizer, teacher_tokenizer))
    gold = GOLDConfig(
        **config,
        lmbda=settings.lmbda,
        top_p=1.0,
        top_k=0,  # plain sampling at temperature, as DistillationTrainer
        max_length=params.max_length,
        use_uld_loss=not shared,
        use_extended_uld=byte_level,
        teacher_tokenizer_name_or_path=data.local_teacher,
        uld_student_temperature=settings.temperature,
        uld_teacher_temperature=settings.temperature,
    )
    return GOLDTrainer(args=gold, **common)
