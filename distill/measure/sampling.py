"""Answers from the student: greedy or sampled, batched, with the model's confidence in each.

Used by eval (greedy answers) and by the feedback and self_knowledge elicitation methods
(the student answers seed inputs; the teacher grades them, or a filter keeps the good ones). An answer is the whole
generated text, the student's reasoning included (its think tags kept even where its tokenizer marks them special);
what is scored of it is distill.reasoning.answer_of's part.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from tqdm import tqdm

from distill import params as params_module
from distill.device import for_inference, use_all_cores
from distill.student import load_model, load_tokenizer


@dataclass(frozen=True)
class Sample:
    text: str
    mean_logprob: float  # mean log-probability of the generated tokens: the student's confidence


def sample_answers(
    model_path: str,
    prompts: list[str],
    seed: int,
    max_new_tokens: int,
    batch_size: int = 64,
    samples: int = 1,
    temperature: float = 0.0,
    device: str = "auto",
    think_tags: tuple[str, ...] = (),
) -> list[list[Sample]]:
    """``samples`` answers per prompt (greedy when ``temperature`` is 0), left-padded batches;
    seeded, so the same call gives the same answers. ``think_tags`` stay in the text (decode)."""
    import torch

    use_all_cores()
    tokenizer = load_tokenizer(model_path)
    tokenizer.padding_side = "left"
    model = for_inference(load_model(model_path, seed), device)
    sampling = {"do_sample": True, "temperature": temperature, "top_k": 0} if temperature > 0 else {"do_sample": False}
    generator_seed = torch.Generator().manual_seed(seed)
    answers: list[list[Sample]] = []
    progress = tqdm(total=len(prompts), unit="prompt", desc="student", file=sys.stderr, mininterval=1.0,
                    disable=len(prompts) <= batch_size)  # one batch: nothing worth a bar
    for start in range(0, len(prompts), batch_size):
        batch = tokenizer(prompts[start : start + batch_size], return_tensors="pt", padding=True).to(model.device)
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator_seed)))
        with torch.no_grad():
            output = model.generate(
                **batch, max_new_tokens=max_new_tokens, num_return_sequences=samples, output_scores=True,
                pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, return_dict_in_generate=True,
                **sampling,
            )
        new_tokens = output.sequences[:, batch["input_ids"].shape[1] :]
        logprobs = model.compute_transition_scores(output.sequences, output.scores, normalize_logits=True)
        texts = decode(tokenizer, new_tokens.tolist(), think_tags)
        generated = new_tokens != tokenizer.pad_token_id
        means = (logprobs.masked_fill(~generated, 0).sum(1) / generated.sum(1).clamp(min=1)).tolist()
        flat = [Sample(text.strip(), round(float(mean), 6)) for text, mean in zip(texts, means, strict=True)]
        answers += [flat[i : i + samples] for i in range(0, len(flat), samples)]
        progress.update(min(batch_size, len(prompts) - start))
    progress.close()
    return answers


def decode(tokenizer, sequences: list[list[int]], keep: tuple[str, ...] = ()) -> list[str]:
    """The generated texts without special tokens (padding, eos), but for those in ``keep``: think tags a tokenizer
    marks special (added with add_special_tokens) would vanish with them, and so would where the answer starts."""
    kept = {tokenizer.convert_tokens_to_ids(token) for token in keep if token in tokenizer.all_special_tokens}
    if not kept:
        return tokenizer.batch_decode(sequences, skip_special_tokens=True)
    dropped = set(tokenizer.all_special_ids) - kept
    return [tokenizer.decode([i for i in ids if i not in dropped]) for ids in sequences]


def greedy_answers(model_path: str, prompts: list[str], seed: int, max_new_tokens: int, batch_size: int = 64,
                   device: str = "auto") -> list[str]:
    """One greedy answer per prompt (eval and the data sweep score these)."""
    return [samples[0].text for samples in sample_answers(model_path, prompts, seed, max_new_tokens, batch_size,
                                                          device=device)]


def student_answers(model_path: str, prompts: list[str], student: params_module.StudentParams, samples: int = 1,
                    temperature: float = 0.0) -> list[list[str]]:
    """``samples`` answers per prompt of the model at ``model_path`` (the student before or after training), greedy
    at temperature 0, batched with left padding, as ``student`` sets them (seed, max_new_tokens, batch_size,
    device, think_tags)."""
    drawn = sample_answers(model_path, prompts, student.seed, student.max_new_tokens, student.batch_size, samples,
                           temperature, student.device, student.think_tags)
    return [[sample.text for sample in answers] for answers in drawn]
