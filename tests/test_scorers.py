"""Built-in scorers, pass@k and the task seam's verifiers and metrics, against values computed by hand."""

from __future__ import annotations

import time

import polars as pl
import pytest

from distill import task
from distill.curate.checks import score, verified
from distill.elicit.self_knowledge import load_verifier
from distill.measure import code_check
from distill.measure.scorers import SCORERS, pass_at_k, scorer
from distill.params import ScoreParams, TaskParams

DEFAULT = TaskParams()


def built_in(name: str, **options: object):
    return scorer(name, TaskParams(**options))


def test_exact_match_normalises_unicode_and_whitespace_but_not_case() -> None:
    exact = built_in("exact_match")
    assert exact(" The  answer\n is\u00a042 ", "The answer is 42") == 1.0  # NBSP folds to a space (NFKC)
    assert exact("\uff14\uff12", "42") == 1.0  # full-width digits fold too
    assert exact("the answer", "The answer") == 0.0 and exact(None, "x") == 0.0
    assert task.exact_match is exact and task.normalise("  a \t b ") == "a b"  # re-exported by the seam


@pytest.mark.parametrize(("prediction", "reference", "expected"), [
    ("The answer is 42.", "42", 1.0),
    ("Natalia sold 48/2 = 24 clips in May.\n#### 72", "#### 72", 1.0),  # GSM8K: after the last ####
    ("so x = 3, hence \\boxed{17} (checked with 5)", "17", 1.0),  # boxed wins over a later number
    ("\\boxed{\\frac{3}{4}}", "0.75", 1.0),  # LaTeX fraction: 3/4
    ("3/4 of the cake", "0.75", 1.0),  # simple fraction
    ("It costs $1,234,567.50 in total", "1234567.5", 1.0),  # thousands separators
    ("The change is -12", "-12", 1.0),
    ("The change is \u221212", "-12", 1.0),  # a typographic minus
    ("About 45% of them", "45", 1.0),  # trailing % ignored
    ("The answer is 7", "8", 0.0),
    ("no number here", "8", 0.0),
    ("the 12/25/2023 deadline", "12", 0.0),  # a date is not a number
    ("1/0", "1", 0.0),  # zero denominator: no number
    (None, "8", 0.0),
])
def test_numeric_reads_the_final_number(prediction: str | None, reference: str, expected: float) -> None:
    assert built_in("numeric")(prediction, reference) == expected


def test_numeric_tolerance_boundaries() -> None:
    loose = built_in("numeric", tolerance=0.01)
    # relative: |101 - 100| = 1 <= 0.01 * max(101, 100) = 1.01; |102 - 100| = 2 > 0.01 * 102 = 1.02
    assert loose("101", "100") == 1.0 and loose("102", "100") == 0.0
    tight = built_in("numeric")  # 1e-6
    # near zero the relative bound vanishes; the absolute one holds: 5e-7 <= 1e-6, but 2e-6 > 1e-6
    assert tight("0.0000005", "0") == 1.0 and tight("0.000002", "0") == 0.0
    # 100.001 vs 100: 1e-3 > 1e-6 * 100.001 ~ 1e-4
    assert tight("100.001", "100") == 0.0 and tight("100.000", "100") == 1.0


@pytest.mark.parametrize(("prediction", "letter"), [
    ("B", "B"), ("(B)", "B"), ("B.", "B"), ("B) Paris is the capital", "B"), ("Answer: B", "B"),
    ("The answer is (C)", "C"), ("**D**", "D"), ("b", "B"), ("I would pick (E) here.", "E"),
    ("Thinking... A is wrong, so the answer is J", "J"),
])
def test_choice_reads_the_letter(prediction: str, letter: str) -> None:
    choice = built_in("choice")
    assert choice(prediction, letter) == 1.0
    assert choice(prediction, f"({letter})") == 1.0 and choice(prediction, letter.lower()) == 1.0
    assert choice(prediction, "A" if letter != "A" else "B") == 0.0


def test_choice_ignores_prose_and_letters_past_j() -> None:
    choice = built_in("choice")
    assert choice("A dog is an animal", "A") == 0.0  # a leading article is not a choice
    assert choice("K", "K") == 0.0 and choice("answer: Bob", "B") == 0.0 and choice(None, "A") == 0.0


def test_regex_takes_group_one_of_the_last_match() -> None:
    default = built_in("regex")  # (?im)^\s*(?:final\s+)?answer\s*[:=]\s*(.+?)\s*$
    text = "Answer: 41\nwait, let me redo it.\n  Final Answer =  Paris \nThanks"
    assert default(text, "Paris") == 1.0 and default(text, "41") == 0.0
    assert default("The answer is Paris", "Paris") == 0.0  # no "answer:" line: no match
    assert default(None, "Paris") == 0.0
    tagged = built_in("regex", pattern=r"<ans>(.*?)</ans>")
    assert tagged("<ans>x</ans> then <ans> New  York </ans>", "New York") == 1.0  # normalised compare
    with pytest.raises(ValueError, match=r"task\.pattern='\(unclosed' is not a regular expression"):
        built_in("regex", pattern="(unclosed")


def test_rouge_l_by_hand() -> None:
    rouge = built_in("rouge_l")
    # LCS of "the cat sat on the mat" / "the cat lay on the mat" is "the cat on the mat": 5 of 6 and 6 tokens,
    # P = R = 5/6, F = 2PR / (P + R) = 5/6 = 0.8333
    assert rouge("the cat lay on the mat", "the cat sat on the mat") == pytest.approx(5 / 6)
    # reference "the cat sat" (3), prediction "the cat" (2): LCS 2, P = 2/2 = 1, R = 2/3, F = 2 * 2/3 / (5/3) = 0.8
    assert rouge("the cat", "the cat sat") == pytest.approx(0.8)
    assert rouge("The CAT!", "the cat") == 1.0  # its tokenizer lowercases and drops punctuation
    assert rouge(None, "the cat") == 0.0


def test_chrf_by_hand() -> None:
    chrf = built_in("chrf")
    # "ab" vs "abc", character n-grams 1..6, spaces removed, beta 2 (recall weighs 4x):
    #   1-grams: hyp {a, b} 2, ref {a, b, c} 3, matched 2 -> P 1, R 2/3
    #   2-grams: hyp {ab} 1, ref {ab, bc} 2, matched 1 -> P 1, R 1/2
    #   3-grams: hyp none; orders 3..6 are left out of the averages (sacrebleu's effective order)
    #   mean P = 1, mean R = (2/3 + 1/2) / 2 = 7/12; F2 = 5 P R / (4 P + R) = (35/12) / (55/12) = 7/11
    assert chrf("ab", "abc") == pytest.approx(7 / 11)
    assert chrf("a b", "ab") == pytest.approx(1.0)  # spaces do not count
    assert chrf("xyz", "abc") == 0.0 and chrf(None, "abc") == 0.0


TESTS = "assert add(2, 3) == 5\nassert add(-1, 1) == 0"


def test_code_runs_the_answer_against_the_tests() -> None:
    code = built_in("code")
    assert code("def add(a, b):\n    return a + b", TESTS) == 1.0
    assert code("def add(a, b):\n    return a - b", TESTS) == 0.0  # a failing assert
    assert code("def add(a, b) return a + b", TESTS) == 0.0  # a syntax error
    assert code(None, TESTS) == 0.0
    fenced = ("Here is a draft:\n```python\ndef add(a, b):\n    return 0\n```\nFixed:\n```python\n"
              "def add(a, b):\n    return a + b\n```\nThis adds the numbers.")
    assert code(fenced, TESTS) == 1.0  # the last fenced block, prose around it ignored
    assert code_check.extract_code("```\nx = 1\n```") == "x = 1\n"  # a bare fence, when no python one


def test_code_is_isolated_from_the_caller(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("DISTILL_SECRET", "1")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "helper.py").write_text("VALUE = 1\n")
    code = built_in("code")
    assert code("import os", "assert 'DISTILL_SECRET' not in os.environ") == 1.0  # an empty environment
    assert code("import helper", "") == 0.0  # nor the caller's working directory
    assert code("print('noise' * 1000)", "") == 1.0  # output discarded


def test_code_timeout_kills_an_infinite_loop() -> None:
    code = built_in("code", timeout_s=1)
    start = time.monotonic()
    assert code("while True:\n    pass", "") == 0.0
    assert time.monotonic() - start < 10


def test_pass_at_k_by_hand() -> None:
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)  # 1 - C(3,1)/C(5,1) = 1 - 3/5
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)  # 1 - C(3,2)/C(5,2) = 1 - 3/10
    assert pass_at_k(5, 0, 3) == 0.0  # none pass
    assert pass_at_k(5, 3, 3) == 1.0  # n - c = 2 < k = 3: every draw of 3 holds a pass
    with pytest.raises(ValueError, match="0 <= c <= n"):
        pass_at_k(5, 6, 1)


def test_a_scorer_as_verifier_accepts_at_min_score() -> None:
    numeric = task.load(TaskParams(module="tests.task_plugins", verifier="numeric"))
    assert numeric.verify("2 + 40?", "#### 42", "42") is True
    assert numeric.verify("2 + 40?", "41", "42") is False
    assert numeric.verify("2 + 40?", "42", None) is None and numeric.verify("2 + 40?", "42", " ") is None
    # rouge_l 5/6 = 0.833 (test_rouge_l_by_hand): accepted at min_score 0.8, not at 0.9
    answer, reference = "the cat lay on the mat", "the cat sat on the mat"
    assert task.load(TaskParams(verifier="rouge_l", min_score=0.8)).verify("", answer, reference) is True
    assert task.load(TaskParams(verifier="rouge_l", min_score=0.9)).verify("", answer, reference) is False


def test_module_and_function_verifiers_take_the_reference() -> None:
    module = task.load(TaskParams(module="tests.task_plugins"))  # its two-argument verify, wrapped
    assert module.verify("q", "x", "ignored") is True and module.verify("q", " ", None) is False
    demo = task.load("demo.words")  # the demo's verifier ignores the reference
    assert demo.verify("reverse cat", "tac", None) is True and demo.verify("reverse cat", "tac", "zzz") is True
    assert demo.verify("reverse cat", "cat", "cat") is False and demo.verify("hello", "x", None) is None
    three = task.load(TaskParams(module="demo.words", verifier="tests.task_plugins:contains_reference"))
    assert three.verify("q", "it is 42", "42") is True and three.verify("q", "it is 42", None) is None
    assert three.metric_name == "exact_match" and three.group("upper cat") == "upper"  # the module's


def test_metric_names_and_defaults() -> None:
    generic = task.load(None)
    assert (generic.name, generic.verify, generic.metric_name, generic.group("x")) == ("generic", None,
                                                                                    "exact_match", "all")
    rouge = task.load(TaskParams(metric="rouge_l"))
    assert rouge.metric_name == "rouge_l" and rouge.metric("the cat", "the cat sat") == pytest.approx(0.8)
    user = task.load(TaskParams(module="demo.words", metric="tests.task_plugins:length_ratio"))
    assert user.metric_name == "length_ratio" and user.metric("abc", "abcdef") == 0.5  # 3 / 6
    assert set(SCORERS) == {"exact_match", "numeric", "choice", "regex", "rouge_l", "chrf", "code"}


@pytest.mark.parametrize(("options", "message"), [
    ({"metric": "rouge"}, r"task\.metric='rouge': not a built-in scorer \(exact_match, numeric"),
    ({"metric": "tests.task_plugins:missing"}, r"task\.metric='tests\.task_plugins:missing' cannot be loaded"),
    ({"metric": "no_such_module:f"}, r"task\.metric='no_such_module:f' cannot be loaded"),
    ({"metric": "tests.task_plugins:NOT_A_FUNCTION"}, r"task\.metric='tests\.task_plugins:NOT_A_FUNCTION' is not a"),
    ({"verifier": "exactmatch"}, r"task\.verifier='exactmatch': not a built-in scorer"),
    ({"module": "demo.nothing"}, r"task 'demo\.nothing' cannot be loaded \(task\.module\)"),
])
def test_bad_names_are_clear_errors(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        task.load(TaskParams(**options))


def test_score_passes_each_rows_reference(generated) -> None:
    rows = generated(("right", "2 + 40?", "#### 42"), ("wrong", "2 + 40?", "41"), ("none", "2 + 40?", "42"))
    verify = task.load(TaskParams(verifier="numeric")).verify
    params = ScoreParams(min_response_chars=1, max_response_chars=100)
    with_reference = rows.with_columns(reference=rows["id"].replace_strict({"none": None}, default="42"))
    scored = score(with_reference, params, verify=verify)
    assert dict(scored.select("id", "verified").iter_rows()) == {"right": True, "wrong": False, "none": None}
    # a null reference, or rows without the column: the verifier cannot tell
    nulls = rows.with_columns(reference=pl.lit(None, dtype=pl.String))
    assert score(nulls, params, verify=verify)["verified"].to_list() == [None, None, None]
    bare = rows.drop("reference", strict=False)
    assert bare.select(verified(bare, verify))["instruction"].to_list() == [None, None, None]


def test_self_knowledge_checkers_take_two_or_three_arguments() -> None:
    assert load_verifier("tests.task_plugins:verify")("q", "x", "ref") is True
    assert load_verifier("tests.task_plugins:contains_reference")("q", "x", "y") is False
