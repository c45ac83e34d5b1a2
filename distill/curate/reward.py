"""Reward-model score of each row: any Hugging Face sequence-classification model with one label.

The score is the model's logit for (prompt, answer): higher = the reward model prefers the answer. Its scale
is the reward model's own (a Bradley-Terry reward such as TRL's RewardTrainer writes is meaningful in
differences between answers, not in absolute value), so compare rows with each other, not with a fixed bar
carried over from another reward model.

The text is a user/assistant conversation through the tokenizer's chat template when it has one, else
``prompt + answer``; sequences are right-truncated at ``max_length`` tokens (a cut answer is scored on what
is left). The pad token falls back to eos and is written into ``model.config.pad_token_id``, which is how
sequence classification finds each row's last real token in a padded batch.

Cost: one forward pass over every row. On a 2-core CPU a reward model the size of the tiny-char student
(4 layers, 192 wide) scores about 450 demo rows/s on one thread, 50-220 rows/s on two when another process
holds a core; a real one (hundreds of millions of parameters) is hundreds of times slower per row, so give
the score stage a GPU or a small reward model.
"""

from __future__ import annotations

from collections.abc import Sequence

from distill.device import for_inference, use_all_cores
from distill.student import pretrained


def reward_text(tokenizer, prompt: str, answer: str) -> str:
    """What the reward model reads for one row."""
    if tokenizer.chat_template:
        conversation = [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
        return tokenizer.apply_chat_template(conversation, tokenize=False)
    return prompt + answer


def reward_scores(model_path: str, prompts: Sequence[str], answers: Sequence[str], batch_size: int = 32,
                  max_length: int = 512, device: str = "auto") -> list[float]:
    """The reward model's logit per (prompt, answer) row, batched; deterministic."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    if len(prompts) != len(answers):
        raise ValueError(f"reward_scores got {len(prompts)} prompts and {len(answers)} answers: they pair up row by "
                         "row")
    use_all_cores()
    tokenizer = pretrained(AutoTokenizer.from_pretrained, model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.pad_token_id is None:
        raise ValueError(f"the reward model's tokenizer at {model_path} has neither a pad nor an eos token: batches "
                         "need one to pad with; set pad_token in its tokenizer_config.json")
    tokenizer.padding_side = "right"
    config = pretrained(AutoConfig.from_pretrained, model_path)
    if config.num_labels != 1:
        raise ValueError(f"the reward model at {model_path} has num_labels={config.num_labels}: a reward model "
                         "gives one score per row (num_labels=1, as TRL's RewardTrainer saves it)")
    model = for_inference(pretrained(AutoModelForSequenceClassification.from_pretrained, model_path, weights=True,
                                     config=config), device)
    model.config.pad_token_id = tokenizer.pad_token_id
    chat = bool(tokenizer.chat_template)  # the template writes its own special tokens
    texts = [reward_text(tokenizer, prompt, answer) for prompt, answer in zip(prompts, answers, strict=True)]
    scores: list[float] = []
    for begin in range(0, len(texts), batch_size):
        batch = tokenizer(texts[begin : begin + batch_size], return_tensors="pt", padding=True, truncation=True,
                          max_length=max_length, add_special_tokens=not chat).to(model.device)
        with torch.no_grad():
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        scores += [float(value) for value in logits[:, 0].float()]
    return scores
