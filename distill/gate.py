"""Data-quality gates: Great Expectations suites on a stage's output tables.

A gate is one module per stage, ``stages/gates/<stage>.py`` (DVC stage ``gate@<stage>``,
thresholds ``params.gates.<stage>``, report ``reports/gates/<stage>.json``), exposing

- ``STAGE``: the stage it gates;
- ``TABLES``: table name -> file (parquet, or CSV for plot tables) the stage writes;
- ``SCHEMAS``: table name -> its column contract from ``distill.records``;
- ``checks(gate, frames) -> list[Check]``: from the loaded polars frames and the gate's
  params, the frames (the table itself or a view derived with polars, e.g. per-system
  counts) and the Great Expectations expectations to run on each.

This module runs a gate: the schema part (columns and dtypes, built here once for all
stages) first, then the content checks; it writes the report on every run, pass or fail
(per expectation: type, kwargs, success, observed value, failing ids). ``validate()`` is the
file-free core (frames in, result out) that the tests call; ``main()`` is what each gate's
``python -m stages.gates.<stage>`` runs. It exits 0 with a one-line summary when every
expectation holds, otherwise 1 with one line per failed expectation on stderr, each naming
the stage, table, expectation, what was observed and the first failing row ids, then a line with the Data Docs page(s).

``main()`` also stores GX's validation results, one suite per checked frame (``<stage>.<frame>``), in the file-based
GX project ``gx/`` and rebuilds their Data Docs in ``reports/gx/`` (``distill/gate_docs.py``; ``--no-data-docs``
skips it); the report's ``data_docs`` gives the index and the suites (``gate_docs.current_page`` finds a suite's
page). ``validate()`` writes no files.

Great Expectations is imported inside the functions only: it costs seconds and ~250 MB, and
listing a gate's tables must stay cheap.
"""

from __future__ import annotations

import argparse
import html
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import polars as pl
from pydantic import BaseModel

from distill.io import write_json
from distill.params import PARAMS_FILE, ParamsError, load

if TYPE_CHECKING:
    from great_expectations.core.expectation_validation_result import (
        ExpectationSuiteValidationResult,
        ExpectationValidationResult,
    )
    from great_expectations.expectations import Expectation

# Before any great_expectations import in this process: no usage statistics leave the machine.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

REPORT_DIR = Path("reports/gates")
MAX_IDS = 20  # failing ids kept per expectation, in the report and the message
SAMPLE = 5  # unexpected values kept per expectation
MAX_CHARS = 200  # characters kept of a failing value (report, message, Data Docs); the rest is only counted


@dataclass
class Check:
    """Expectations to run on one frame; ``index`` names the column that identifies failing rows."""

    name: str  # table name ("rows") or derived view ("rows.dtypes", "predictions.per_system")
    frame: pl.DataFrame  # polars; converted to pandas at the gate (GX rejects polars frames)
    expectations: list[Expectation] = field(default_factory=list)
    index: str | None = "id"  # None: table-level expectations only (the frame may lack "id")


def marked_rows() -> tuple[list[Expectation], object]:
    """For tables that mark rows instead of deleting them (score, dedupe, select): every row has a unique id
    and a keep mark, a dropped row says why and a kept one does not. Also the ``keep == True`` condition."""
    import great_expectations as gx
    from great_expectations.expectations.row_conditions import Column

    gxe = gx.expectations
    kept = Column("keep") == True  # noqa: E712 -- builds a GX condition, not a Python comparison
    dropped = Column("keep") == False  # noqa: E712
    return [
        gxe.ExpectColumnValuesToNotBeNull(column="id"),
        gxe.ExpectColumnValuesToBeUnique(column="id"),
        gxe.ExpectColumnValuesToNotBeNull(column="keep"),
        gxe.ExpectColumnValuesToBeNull(column="drop_reason", row_condition=kept),
        gxe.ExpectColumnValuesToNotBeNull(column="drop_reason", row_condition=dropped),
    ], kept


def dtype_view(frame: pl.DataFrame, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """One row per contract column present in ``frame``: its actual and its contract dtype."""
    present = [name for name in schema if name in frame.columns]
    return pl.DataFrame(
        {
            "column": present,
            "dtype": [str(frame.schema[name]) for name in present],
            "expected": [str(schema[name]) for name in present],
        },
        schema={"column": pl.String, "dtype": pl.String, "expected": pl.String},
    )


def conforms(frame: pl.DataFrame, schema: dict[str, pl.DataType]) -> bool:
    """Same column set and dtypes as the contract: the content checks may rely on the columns."""
    if set(frame.columns) != set(schema):
        return False
    view = dtype_view(frame, schema)
    return view["dtype"].to_list() == view["expected"].to_list()


def schema_checks(table: str, frame: pl.DataFrame, schema: dict[str, pl.DataType]) -> list[Check]:
    """Exact column set on the table itself, and dtypes on a (column, dtype, expected) view."""
    import great_expectations as gx

    return [
        Check(table, frame, [gx.expectations.ExpectTableColumnsToMatchSet(
            column_set=list(schema), exact_match=True,
            description=f"columns of the {table} contract in distill/records.py")], index=None),
        Check(f"{table}.dtypes", dtype_view(frame, schema), [gx.expectations.ExpectColumnPairValuesToBeEqual(
            column_A="dtype", column_B="expected",
            description="dtype of each contract column (failing ids are column names)")], index="column"),
    ]


class GateInputError(RuntimeError):
    """A stage table that is missing or unreadable; the message names the file."""


@dataclass
class Outcome:
    """The result of one expectation, reduced to plain JSON-able values."""

    table: str
    type: str
    kwargs: dict[str, Any]
    success: bool
    description: str | None = None
    observed: Any = None  # aggregate expectations: the observed value
    details: Any = None  # e.g. missing/unexpected columns
    element_count: int | None = None  # row expectations: rows checked
    unexpected_count: int | None = None
    sample: list[Any] = field(default_factory=list)  # first unexpected values
    failing_ids: list[Any] = field(default_factory=list)  # first MAX_IDS distinct ids
    more_ids: int = 0  # distinct failing ids beyond failing_ids
    error: str | None = None  # GX raised instead of evaluating (e.g. a missing column)

    def label(self) -> str:
        """``type(column)`` plus the row condition, if any."""
        kwargs = self.kwargs
        columns = kwargs.get("column") or kwargs.get("column_list")
        if columns is None and "column_A" in kwargs:
            columns = [kwargs["column_A"], kwargs["column_B"]]
        if isinstance(columns, list):
            columns = ", ".join(map(str, columns))
        text = f"{self.type}({columns or ''})"
        condition = kwargs.get("row_condition")
        return f"{text} where {describe_condition(condition)}" if condition else text

    def title(self) -> str:
        """The label, the bound and the suite's description: what the Data Docs page names the expectation by,
        as the gate's messages do (``expect_column_sum_to_be_between(keep), expected >= 100: kept rows``)."""
        expected = expected_text(self.kwargs)
        text = self.label() + (f", expected {expected}" if expected else "")
        return text + (f": {self.description}" if self.description else "")

    def why(self) -> str:
        if self.error:
            return f"error: {self.error}"
        mismatched = (self.details or {}).get("mismatched") if isinstance(self.details, dict) else None
        if mismatched:
            return "; ".join(f"{key} columns {value}" for key, value in mismatched.items())
        expected = expected_text(self.kwargs)
        if self.unexpected_count is None:
            observed = f"{self.observed:.4g}" if isinstance(self.observed, float) else repr(self.observed)
            return f"observed {observed}" + (f", expected {expected}" if expected else "")
        text = f"{self.unexpected_count} of {self.element_count} rows unexpected"
        text += f" (expected {expected})" if expected else ""
        if self.sample and not self.type.endswith("_not_be_null"):  # a sample of nulls says nothing
            text += f", e.g. {self.sample[:3]!r}"
        return text

    def line(self, stage: str, report: Path) -> str:
        ids = f"; failing ids: {self.failing_ids!r}" if self.failing_ids else ""
        ids += f" (+{self.more_ids} more)" if self.more_ids else ""
        return f"gate {stage} failed: {self.table}: {self.label()}: {self.why()}{ids} (report: {report})"


@dataclass
class GateResult:
    stage: str
    outcomes: list[Outcome]
    rows: dict[str, int]  # rows per input table
    skipped: str | None = None  # why content checks did not run (schema mismatch)
    validations: dict[str, Any] = field(default_factory=dict, repr=False)  # suite -> GX's result, for Data Docs
    data_docs: dict[str, Any] | None = None  # set by main(): index and page paths, or the error that stopped them

    @property
    def success(self) -> bool:
        return self.skipped is None and all(outcome.success for outcome in self.outcomes)

    @property
    def failures(self) -> list[Outcome]:
        return [outcome for outcome in self.outcomes if not outcome.success]

    def to_json(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "success": self.success,
            "rows": self.rows,
            "evaluated": len(self.outcomes),
            "failed": len(self.failures),
            "skipped": self.skipped,
            "expectations": [plain(asdict(outcome)) for outcome in self.outcomes],
            **({"data_docs": self.stable_docs()} if self.data_docs else {}),
        }

    def message(self, report: Path) -> str:
        lines = [outcome.line(self.stage, report) for outcome in self.failures]
        if self.skipped:
            lines.append(f"gate {self.stage}: {self.skipped}")
        if self.data_docs:  # the pages of the failed suites, each listing the failing expectations and rows
            failed = {f"{self.stage}.{outcome.table}" for outcome in self.failures}
            pages = [page for suite, page in self.data_docs.get("pages", {}).items() if suite in failed]
            lines.append(f"gate {self.stage}: " + (f"Data Docs: {', '.join(pages)}" if pages else self.docs_note()))
        return "\n".join(lines)

    def stable_docs(self) -> dict[str, Any]:
        """The report's ``data_docs``: the index and the suites, not the pages, whose paths hold the run's time (a
        rerun on the same data must write the same report, or every stage after the gate would run again);
        ``distill.gate_docs.current_page(suite)`` finds a suite's page."""
        docs = dict(self.data_docs or {})
        if "pages" in docs:
            docs["suites"] = sorted(docs.pop("pages"))
        return docs

    def docs_note(self) -> str:
        """``Data Docs: reports/gx/index.html``, or why they were not built; empty when not asked for."""
        if not self.data_docs:
            return ""
        if "error" in self.data_docs:
            return f"Data Docs not built: {self.data_docs['error']}"
        return f"Data Docs: {self.data_docs['index']}"


def describe_condition(condition: Any) -> str:
    """``keep == True`` from the serialised GX row condition."""
    if isinstance(condition, dict) and condition.get("type") == "comparison":
        return f"{condition['column']['name']} {condition['operator']} {condition['parameter']!r}"
    if isinstance(condition, dict) and condition.get("type") == "nullity":
        return f"{condition['column']['name']} IS {'NULL' if condition['is_null'] else 'NOT NULL'}"
    return str(condition)


def number(value: Any) -> str:
    """100 rather than 100.0 (GX stores bounds as floats); inf as JSON wrote it."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def expected_text(kwargs: dict[str, Any]) -> str:
    """``>= 0 and < inf``, ``<= 1``, ``in [...]`` from the expectation's kwargs."""
    bounds = []
    if kwargs.get("min_value") is not None:
        bounds.append(f"{'>' if kwargs.get('strict_min') else '>='} {number(kwargs['min_value'])}")
    if kwargs.get("max_value") is not None:
        bounds.append(f"{'<' if kwargs.get('strict_max') else '<='} {number(kwargs['max_value'])}")
    if bounds:
        return " and ".join(bounds)
    if "value_set" in kwargs:
        return f"in {kwargs['value_set']}"
    return ""


def plain(value: Any) -> Any:
    """JSON-able copy: numpy scalars to Python, NaN/inf to strings (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [plain(item) for item in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()  # numpy scalar
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def clipped(value: Any) -> Any:
    """``value`` with every string over MAX_CHARS cut to its start and its length: GX copies failing values whole
    into its results, and a 5 MB seed must not land whole in the report, on stderr and in the Data Docs."""
    if isinstance(value, str) and len(value) > MAX_CHARS:
        return f"{value[:MAX_CHARS]}... ({len(value)} chars)"
    if isinstance(value, dict):
        return {key: clipped(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(clipped(item) for item in value)
    return value


def error_text(result: ExpectationValidationResult) -> str | None:
    info = result.exception_info or {}
    if "raised_exception" in info:  # one flat record
        return info.get("exception_message") if info["raised_exception"] else None
    messages = [item.get("exception_message") for item in info.values()
                if isinstance(item, dict) and item.get("raised_exception")]
    return "; ".join(str(message) for message in messages) or None


def outcome(check: Check, result: ExpectationValidationResult) -> Outcome:
    config = result.expectation_config
    details = result.result or {}
    ids: list[Any] = []
    for row in details.get("unexpected_index_list") or []:
        key = plain(row.get(check.index) if isinstance(row, dict) else row)
        if key not in ids:  # a duplicated value lists every copy; name each row once
            ids.append(key)
    return Outcome(
        table=check.name,
        type=config.type,
        kwargs=plain({key: value for key, value in config.kwargs.items() if key != "batch_id"}),
        success=bool(result.success),
        description=config.description,
        observed=plain(details.get("observed_value")),
        details=plain(details.get("details")),
        element_count=details.get("element_count") if "unexpected_count" in details else None,
        unexpected_count=details.get("unexpected_count"),
        sample=plain((details.get("partial_unexpected_list") or [])[:SAMPLE]),
        failing_ids=ids[:MAX_IDS],
        more_ids=max(0, len(ids) - MAX_IDS),
        error=error_text(result),
    )


def merged(checks: list[Check]) -> list[Check]:
    """One suite per frame: the schema and content checks of a table share its batch."""
    by_name: dict[str, Check] = {}
    for check in checks:
        if check.name not in by_name:
            by_name[check.name] = Check(check.name, check.frame, list(check.expectations), check.index)
            continue
        into = by_name[check.name]
        clash = None not in (into.index, check.index) and into.index != check.index
        if into.frame is not check.frame or clash:
            raise ValueError(f"two different frames (or row indexes) named {check.name!r}")
        into.index = into.index or check.index
        into.expectations.extend(check.expectations)
    return list(by_name.values())


def run_checks(checks: list[Check], stage: str) -> tuple[list[Outcome], dict[str, ExpectationSuiteValidationResult]]:
    """Validate every check in one ephemeral GX context: the outcomes in suite order, and GX's result per suite
    (``<stage>.<frame>``, e.g. ``select.rows``) for the Data Docs."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)  # no tqdm noise in logs
    source = context.data_sources.add_pandas("gate")
    outcomes: list[Outcome] = []
    results: dict[str, ExpectationSuiteValidationResult] = {}
    for check in merged(checks):
        asset = source.add_dataframe_asset(check.name)
        # GX takes pandas only: a polars frame fails with a misleading BuildBatchRequestError.
        batch = asset.add_batch_definition_whole_dataframe("whole").get_batch(
            batch_parameters={"dataframe": check.frame.to_pandas()})
        suite = gx.ExpectationSuite(name=f"{stage}.{check.name}")
        for order, expectation in enumerate(check.expectations):
            # GX returns results grouped by metric, not in suite order; restore it for the report.
            expectation.meta = {**(expectation.meta or {}), "gate_order": order}
            suite.add_expectation(expectation)
        result_format: dict[str, Any] = {"result_format": "COMPLETE"}
        if check.index:  # failing rows are reported by this column's values
            result_format["unexpected_index_column_names"] = [check.index]
        result = results[suite.name] = batch.validate(suite, result_format=result_format)
        ordered = sorted(result.results, key=lambda item: item.expectation_config.meta.get("gate_order", 0))
        for item in ordered:
            item.result = clipped(item.result)  # before the outcome and the Data Docs read the values
            outcomes.append(done := outcome(check, item))
            # Data Docs show the description in place of GX's sentence, and insert it into the HTML as is
            item.expectation_config.description = html.escape(done.title(), quote=False)
    return outcomes, results


def validate(suite: ModuleType, gate: BaseModel, frames: dict[str, pl.DataFrame]) -> GateResult:
    """Run the gate ``suite`` (a ``stages/gates/<stage>.py`` module) with thresholds ``gate``
    (``params.gates.<stage>``) on ``frames``.

    ``frames`` maps each table name in the suite's ``TABLES`` to its polars frame. Content
    checks run only when every table matches its column contract; otherwise the result
    holds the schema failures and says the rest was skipped.
    """
    stage = suite.STAGE
    missing = [table for table in suite.TABLES if table not in frames]
    if missing:
        raise ValueError(f"gate {stage}: no frame for table(s) {missing}; expected {list(suite.TABLES)}")
    checks: list[Check] = []
    for table, schema in suite.SCHEMAS.items():
        checks.extend(schema_checks(table, frames[table], schema))
    off = [name for name, schema in suite.SCHEMAS.items() if not conforms(frames[name], schema)]
    skipped = None
    if off:  # content checks would fail on missing or mistyped columns in confusing ways
        skipped = f"content checks not run: {', '.join(off)} do not match the contract in distill/records.py"
    else:
        checks.extend(suite.checks(gate, frames))
    rows = {table: frames[table].height for table in suite.TABLES}
    outcomes, results = run_checks(checks, stage)
    return GateResult(stage=stage, outcomes=outcomes, rows=rows, skipped=skipped, validations=results)


def read_tables(suite: ModuleType) -> dict[str, pl.DataFrame]:
    """The suite's tables from their files: parquet, or CSV read with the contract's dtypes."""
    frames = {}
    for table, path in suite.TABLES.items():
        if not Path(path).exists():
            raise GateInputError(f"missing input {path} (table {table!r}; run the {suite.STAGE} stage first)")
        try:
            if path.endswith(".csv"):
                frames[table] = pl.read_csv(path, schema_overrides=suite.SCHEMAS.get(table))
            else:
                frames[table] = pl.read_parquet(path)
        except Exception as error:  # noqa: BLE001 -- any unreadable file is the same gate failure
            raise GateInputError(f"cannot read {path}: {error}") from None
    return frames


def main(suite: ModuleType, argv: list[str] | None = None) -> int:
    """``python -m stages.gates.<stage> [--params params.yaml]``: run the gate, write its report."""
    stage: str = suite.STAGE
    parser = argparse.ArgumentParser(prog=f"python -m stages.gates.{stage}",
                                     description=(suite.__doc__ or "").splitlines()[0])
    parser.add_argument("--params", type=Path, default=PARAMS_FILE)
    parser.add_argument("--no-data-docs", action="store_true",
                        help="do not store the results in gx/ nor rebuild their pages in reports/gx/")
    args = parser.parse_args(argv)
    report = REPORT_DIR / f"{stage}.json"
    started = time.perf_counter()
    try:
        gate = getattr(load(args.params).gates, stage)
        result = validate(suite, gate, read_tables(suite))
    except (ParamsError, GateInputError) as error:
        write_json({"stage": stage, "success": False, "error": str(error), "expectations": []}, report)
        print(f"gate {stage} failed: {error} (report: {report})", file=sys.stderr)
        return 1
    if not args.no_data_docs:
        result.data_docs = data_docs(stage, result.validations)
    write_json(result.to_json(), report)
    if not result.success:
        print(result.message(report), file=sys.stderr)
        return 1
    tables = ", ".join(f"{table} ({rows} rows)" for table, rows in result.rows.items())
    print(f"gate {stage} OK: {len(result.outcomes)} expectations passed on {tables} "
          f"in {time.perf_counter() - started:.1f}s (report: {report}"
          f"{'; ' + result.docs_note() if result.data_docs else ''})")
    return 0


def data_docs(stage: str, validations: dict[str, Any]) -> dict[str, Any]:
    """Publish the run's results to the Data Docs; a failure to do so is recorded, never the gate's verdict."""
    from distill.gate_docs import publish

    try:
        return publish(stage, validations)
    except Exception as error:  # noqa: BLE001 -- the checks ran; the report and the exit code must still come out
        return {"error": f"{type(error).__name__}: {error}"}
