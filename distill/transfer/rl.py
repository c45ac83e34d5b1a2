"""RL from the teacher's feedback (``train.objective: rl``): a reward model from the preference pairs, then policy
optimisation against it, all of it TRL's.

The feedback method (``generate.elicit: [feedback]``) gives preference pairs: the teacher's correction is *chosen*,
the student's own answer *rejected*. Two steps, both inside ``make_trainer``:

1. Reward model: TRL ``RewardTrainer`` (``RewardConfig``) trains a Bradley-Terry scorer on the pairs for
   ``train.rl.reward_steps`` steps: an ``AutoModelForSequenceClassification`` with one label, built from the
   starting model's config and weights (its body; the score head is new, seeded by ``train.seed``), so it reads
   text exactly as the student does and shares its tokenizer. Its pairwise accuracy on the pairs (chosen scored above
   rejected, in [0, 1]) is ``trainer.reward_accuracy`` on the returned trainer and a ``{"reward_accuracy",
   "reward_pairs"}`` entry of its log history (what stages.train.train returns), for the train stage's metrics. It is
   measured on the pairs the reward model was trained on, so it says whether the reward model learnt the teacher's
   preferences at all (near 0.5 = it did not, and RL would chase noise), not how well it generalises.
2. Policy: TRL ``GRPOTrainer`` (``GRPOConfig``; Shao et al., "DeepSeekMath") or, with ``train.rl.algorithm: rloo``,
   ``RLOOTrainer`` (``RLOOConfig``; Ahmadian et al., "Back to Basics"): the student samples
   ``train.rl.num_generations`` answers of at most ``max_new_tokens`` tokens per prompt, the reward model scores
   them, each answer's advantage is its reward against the others' of the same prompt, and ``train.rl.beta`` is the
   KL penalty to the reference, the starting model (by default the plain-SFT baseline, ``train.start_from_sft``).
   Generation is ``model.generate`` (no vLLM), so it runs on CPU with ``use_cpu``.

As in dpo, ``student.reasoning`` does not reach the pairs: the reward model learns from the answers as the feedback
method stored them (with keep, only the SFT start learns the teacher's reasoning).

The prompts are the distinct prompts of the preference pairs, not those of ``data.pairs``: the reward model has
been trained on answers to exactly these prompts, so its scores are most trustworthy there, and they are the
inputs the teacher found the student answering wrongly (among those it was least confident on,
``generate.feedback.focus_fraction``); the teacher's answers to ``data.pairs`` are already learnt by the SFT start.

Written by hand, and only this:

* building the reward model from the in-memory starting model (TRL only loads one from a path, which a
  config-only student lacks), and its pairwise accuracy (a short loop with TRL's own collator);
* the reward pairs are tokenised here as GRPO/RLOO score a completion: prompt + answer text, no special tokens
  and no EOS (TRL decodes completions with ``skip_special_tokens`` and scores them with
  ``add_special_tokens=False``), instead of letting RewardTrainer append EOS: otherwise the reward model would learn
  to score at an EOS token that it never sees during RL;
* the batch size adapted to whole groups of ``num_generations`` (see ``policy_batch_size``);
* the reference model: GRPO/RLOO take no ``ref_model``; they reload the starting model from
  ``model.config._name_or_path``, which fails for a config-only student (no weights, no ``architectures``), so such
  a start is saved once into the run's checkpoint folder and TRL loads it from there;
* the trained reward model is saved in the run's checkpoint folder (``reward/model``), so a killed run resumes
  against the same reward model rather than training a new one;
* a callback that writes the reward accuracy into the log history.

With ``train.lora.enabled`` both the reward model (LoRA on its body, the score head trained fully, merged after
reward training) and the policy train adapters; the policy's reference is then the adapter switched off.
"""

from __future__ import annotations

from pathlib import Path

from distill import params as params_module
from distill.entry import StageError
from distill.transfer.data import TrainData
from distill.transfer.dpo import check_preferences

REWARD_DIR = "reward"  # under the run's checkpoint folder: the reward trainer's output; the reward model in model/
START_DIR = "start"  # under the run's checkpoint folder: a config-only starting model, saved for TRL's reference
REWARD_NAME = "reward_model"  # how TRL names the reward in the logs: rewards/reward_model/mean


def distinct_prompts(preferences: list[dict]) -> list[str]:
    """The prompts of the pairs, each once, in first-seen order."""
    return list(dict.fromkeys(row["prompt"] for row in preferences))


def reward_rows(preferences: list[dict], tokenizer, max_length: int) -> list[dict]:
    """TRL's pre-tokenised preference rows (chosen_ids, rejected_ids), tokenised as GRPO/RLOO score a completion;
    pairs longer than ``max_length`` are left out (RewardTrainer would drop them too)."""
    def ids(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    rows = [{"chosen_ids": ids(row["prompt"] + row["chosen"]), "rejected_ids": ids(row["prompt"] + row["rejected"])}
            for row in preferences]
    kept = [row for row in rows if max(len(row["chosen_ids"]), len(row["rejected_ids"])) <= max_length]
    if not kept:
        raise StageError(f"train.objective=rl: all {len(rows)} preference pairs are longer than train.max_length "
                         f"({max_length} tokens, prompt + answer): raise train.max_length")
    return kept


def reward_model_from(policy, pad_token_id: int, seed: int):
    """A one-label sequence classifier with the policy's config and body weights (a new, seeded score head)."""
    import copy

    import torch
    from transformers import AutoModelForSequenceClassification

    config = copy.deepcopy(policy.config)
    config.num_labels = 1
    config.pad_token_id = pad_token_id  # the classifier scores the last non-pad token
    torch.manual_seed(seed)
    reward = AutoModelForSequenceClassification.from_config(config)
    reward.base_model.load_state_dict(policy.base_model.state_dict())
    return reward.to(dtype=policy.dtype)


def pairwise_accuracy(reward, rows: list[dict], pad_token_id: int, batch_size: int) -> float:
    """Share of pairs whose chosen answer the reward model scores above the rejected one."""
    import torch
    from trl.trainer.reward_trainer import DataCollatorForPreference

    collate = DataCollatorForPreference(pad_token_id=pad_token_id)  # chosen rows first, then the rejected ones
    reward.eval()
    wins = 0
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            batch = collate(rows[start:start + batch_size])
            scores = reward(input_ids=batch["input_ids"].to(reward.device),
                            attention_mask=batch["attention_mask"].to(reward.device)).logits[:, 0]
            chosen, rejected = scores.float().chunk(2)
            wins += int((chosen > rejected).sum())
    return wins / len(rows)


def train_reward_model(policy, tokenizer, params: params_module.TrainParams, rows: list[dict], folder: Path):
    """The reward model trained with TRL's RewardTrainer on ``rows``, or the one a killed run already trained."""
    import dataclasses

    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification
    from trl import RewardConfig, RewardTrainer

    from distill.student import has_weights, pretrained
    from distill.transfer.arguments import common_args, lora_config

    saved = folder / "model"
    if has_weights(saved):
        print(f"train: rl reuses the reward model this run already trained, {saved}")
        return pretrained(AutoModelForSequenceClassification.from_pretrained, str(saved), weights=True)
    reward = reward_model_from(policy, tokenizer.pad_token_id, params.seed)
    # the supervised learning rate: fitting the reward model is a supervised fit of a student-sized model, like SFT
    args = common_args(params, folder, max_steps=params.rl.reward_steps, learning_rate=params.learning_rate)
    config = RewardConfig(**{**args, "save_strategy": "no"}, activation_checkpointing=params.activation_checkpointing,
                          max_length=params.max_length)
    lora = dataclasses.replace(lora_config(params.lora), task_type="SEQ_CLS") if params.lora.enabled else None
    trainer = RewardTrainer(model=reward, args=config, train_dataset=Dataset.from_list(rows),
                            processing_class=tokenizer, peft_config=lora)  # SEQ_CLS: PEFT trains the score head too
    trainer.train()
    reward = trainer.model.merge_and_unload() if hasattr(trainer.model, "merge_and_unload") else trainer.model
    reward.save_pretrained(saved, safe_serialization=True)
    return reward


def policy_batch_size(batch_size: int, num_generations: int, prompts: int) -> int:
    """GRPO/RLOO's per_device_train_batch_size counts completions, and the generation batch (that x processes x
    steps_per_generation, which is gradient accumulation = 1 here) must hold whole groups of num_generations
    completions of one prompt, so train.batch_size is rounded up to a multiple of num_generations; and TRL's sampler
    drops a last partial batch of prompts, so one step never asks for more prompts than there are (on one process)."""
    groups = min(max(1, -(-batch_size // num_generations)), prompts)
    return groups * num_generations


def reward_accuracy_entry(accuracy: float, pairs: int):
    """A callback that puts ``{"reward_accuracy", "reward_pairs"}`` into the trainer's log history (once, also
    when a run resumes), so that it is in what stages.train.train returns."""
    from transformers import TrainerCallback

    class RewardAccuracy(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            if not any("reward_accuracy" in entry for entry in state.log_history):
                state.log_history.append({"reward_accuracy": accuracy, "reward_pairs": pairs,
                                          "step": state.global_step})

    return RewardAccuracy()


def make_trainer(model, tokenizer, params: params_module.TrainParams, args: dict, data: TrainData):
    """A ready TRL ``GRPOTrainer`` or ``RLOOTrainer`` against a reward model trained here on ``data.preferences``,
    with that reward model's pairwise accuracy as ``trainer.reward_accuracy`` and as a ``reward_accuracy`` entry
    of the log history: the method contract of distill/transfer/data.py."""
    from datasets import Dataset

    from distill.student import has_weights
    from distill.transfer.arguments import common_args, lora_config

    check_preferences(data, "rl")
    settings = params.rl
    output_dir = Path(args["output_dir"])
    rows = reward_rows(data.preferences, tokenizer, params.max_length)
    reward = train_reward_model(model, tokenizer, params, rows, output_dir / REWARD_DIR)
    accuracy = pairwise_accuracy(reward, rows, tokenizer.pad_token_id, params.batch_size)
    reward.config._name_or_path = REWARD_NAME
    print(f"train: rl reward model ranks {accuracy:.1%} of {len(rows)} preference pairs right")

    prompts = distinct_prompts(data.preferences)
    common = common_args(params, output_dir, max_steps=settings.max_steps, learning_rate=settings.learning_rate)
    # this process's share of train.batch_size (all of it in one process; distill/transfer/parallel.py)
    common["per_device_train_batch_size"] = policy_batch_size(common["per_device_train_batch_size"],
                                                              settings.num_generations, len(prompts))
    config = {**common, "activation_checkpointing": params.activation_checkpointing, "beta": settings.beta,
              "num_generations": settings.num_generations, "max_completion_length": settings.max_new_tokens,
              "use_vllm": False}
    if settings.algorithm == "rloo":
        from trl import RLOOConfig as Config
        from trl import RLOOTrainer as Trainer
    else:
        from trl import GRPOConfig as Config
        from trl import GRPOTrainer as Trainer

    lora = params.lora.enabled
    start = model.name_or_path
    config_only = Path(start).is_dir() and not has_weights(Path(start))
    if settings.beta > 0 and not lora and config_only:  # TRL reloads the reference from the model's path
        model.save_pretrained(output_dir / START_DIR, safe_serialization=True)
        model.config._name_or_path = str(output_dir / START_DIR)
    try:
        trainer = Trainer(model=model, reward_funcs=reward, args=Config(**config),
                          train_dataset=Dataset.from_list([{"prompt": prompt} for prompt in prompts]),
                          processing_class=tokenizer, reward_processing_classes=tokenizer,
                          peft_config=lora_config(params.lora) if lora else None)
    finally:
        model.config._name_or_path = start
    trainer.reward_accuracy = accuracy
    trainer.add_callback(reward_accuracy_entry(accuracy, len(rows)))
    return trainer
