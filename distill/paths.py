"""Every path a stage reads or writes, in one place; ``dvc.yaml`` repeats them and
``tests/test_dvc_yaml.py`` checks that the two agree."""

from pathlib import Path

INGEST_TRAIN = Path("data/ingest/train.parquet")
INGEST_EVAL = Path("data/ingest/eval.parquet")

GENERATE_ROWS = Path("data/generate/rows.parquet")
GENERATE_REJECTS = Path("data/generate/rejects.parquet")
GENERATE_FEATURES = Path("data/generate/features.parquet")
GENERATE_PREFERENCES = Path("data/generate/preferences.parquet")
GENERATE_STORE = Path("data/store/generate.jsonl")

SCORE_ROWS = Path("data/score/rows.parquet")
SCORE_STORE = Path("data/store/score.jsonl")
DEDUPE_ROWS = Path("data/dedupe/rows.parquet")
SELECT_ROWS = Path("data/select/rows.parquet")

TRAIN_MODEL = Path("data/train/model")
TRAIN_BASELINE = Path("data/train/baseline")  # the plain-SFT baseline beside a KD run (a marker file with sft)
TRAIN_LOG = Path("data/train/log.parquet")
TRAIN_LOSS_PLOT = Path("reports/plots/train_loss.csv")

SWEEP_PLOTS = {"selected": Path("reports/plots/sweep_selected.csv"), "random": Path("reports/plots/sweep_random.csv")}
SWEEP_CHART = Path("reports/sweep.png")
SWEEP_REPORT = Path("reports/sweep.md")

EVALUATE_PREDICTIONS = Path("data/evaluate/predictions.parquet")
EVALUATE_STORE = Path("data/store/evaluate.jsonl")
EVALUATE_REPORT = Path("reports/eval.md")
EVALUATE_BY_GROUP_PLOT = Path("reports/plots/eval_by_group.csv")
EVALUATE_CHART = Path("reports/eval.png")

BENCHMARK_SAMPLES = Path("data/benchmark/samples.parquet")
BENCHMARK_STORE = Path("data/store/benchmark")  # lm-eval's request cache of the teacher, a file per teacher
BENCHMARK_REPORT = Path("reports/benchmark.md")

GATE_REPORTS = Path("reports/gates")

REPORT_PAGE = Path("reports/index.html")
MODEL_CARD = Path("reports/model_card.md")


def metrics(stage: str) -> Path:
    """metrics/<stage>.json; the eval stage's is metrics/eval.json."""
    return Path(f"metrics/{'eval' if stage == 'evaluate' else stage}.json")
