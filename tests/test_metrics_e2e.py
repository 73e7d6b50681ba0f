"""E2E metrics: conformance with e2e-metrics' printed scores, properties, file formats and the CLI."""
from __future__ import annotations

import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sacrebleu
from hypothesis import given, settings
from hypothesis import strategies as st

from peft_repro.metrics import _coco, _mteval
from peft_repro.metrics.e2e import METRICS, format_scores, load_files, main, score_e2e

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PEFT_REPRO_SHARED", REPO.parent / "shared"))
CONFORMANCE = SHARED / "conformance" / "e2e_metrics"
EXPECTED_KEYS = {"python": "printed_python_mteval_-p", "perl": "printed_default_perl_mteval"}
JAVA_METRICS = ("METEOR", "ROUGE_L", "CIDEr")
MTEVAL = ("BLEU", "NIST")

needs_conformance = pytest.mark.skipif(
    not CONFORMANCE.is_dir(), reason=f"no conformance vectors at {CONFORMANCE} (set PEFT_REPRO_SHARED)")
needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="java is not on PATH")
CASES = ["example", pytest.param("tgen_test", marks=pytest.mark.slow)]


def load_case(name: str) -> tuple[list[str], list[list[str]], dict]:
    folder = CONFORMANCE / name
    outputs, references = load_files(folder / "refs.txt", folder / "sys.txt")
    return outputs, references, json.loads((folder / "expected.json").read_text())


def printout(scores: dict) -> str:
    return format_scores({m: scores[m] for m in METRICS})


@pytest.fixture(scope="module")
def example():
    if not CONFORMANCE.is_dir():
        pytest.skip(f"no conformance vectors at {CONFORMANCE} (set PEFT_REPRO_SHARED)")
    return load_case("example")


# ---- conformance: every printed digit of measure_scores.py ----

@needs_conformance
@pytest.mark.parametrize("mode", ["python", "perl"])
@pytest.mark.parametrize("case", ["example", "tgen_test"])
def test_bleu_nist_print_as_e2e_metrics(case, mode):
    outputs, references, expected = load_case(case)
    scores = score_e2e(outputs, references, mode, metrics=MTEVAL)
    assert format_scores(scores) == format_scores({m: expected[EXPECTED_KEYS[mode]][m] for m in MTEVAL})


@needs_conformance
@needs_java
@pytest.mark.parametrize("case", CASES)
def test_all_scores_print_as_e2e_metrics_in_both_modes(case):
    outputs, references, expected = load_case(case)
    jar_dirs = [Path(p).parent for p in _coco.CLASSPATH.split(os.pathsep)] + [_coco.LAUNCHER.parent]
    before = [sorted(d.iterdir()) for d in jar_dirs]
    java_scores = score_e2e(outputs, references, metrics=JAVA_METRICS)
    assert [sorted(d.iterdir()) for d in jar_dirs] == before, "no files may appear next to the jars or the code"
    for mode, key in EXPECTED_KEYS.items():
        scores = {**score_e2e(outputs, references, mode, metrics=MTEVAL), **java_scores}
        assert printout(scores) == printout(expected[key])
    if "full_precision_default" in expected:
        stats = _mteval.corpus_stats(outputs, references, "perl")
        full = {"BLEU": _mteval.bleu(stats), "NIST": _mteval.nist(stats), **java_scores}
        assert full == pytest.approx(expected["full_precision_default"], rel=1e-11)


@needs_conformance
@pytest.mark.parametrize("case", ["example", "tgen_test"])
def test_perl_bleu_is_sacrebleu_13a_with_none_padding(case):
    outputs, references, _ = load_case(case)
    lower = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
    width = max(map(len, references))
    streams = [[refs[k].translate(lower) if k < len(refs) else None for refs in references] for k in range(width)]
    expected = sacrebleu.corpus_bleu([o.translate(lower) for o in outputs], streams, tokenize="13a").score / 100
    assert _mteval.bleu(_mteval.corpus_stats(outputs, references, "perl")) == pytest.approx(expected, rel=1e-12)


# ---- properties ----

def scores_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(math.isclose(a[k], b[k], rel_tol=1e-12) for k in a)


@given(order=st.permutations(range(10)))
@settings(max_examples=20, deadline=None)
@pytest.mark.parametrize("mode", ["python", "perl"])
def test_bleu_nist_ignore_mr_order(example, mode, order):
    outputs, references, _ = example
    shuffled = score_e2e([outputs[i] for i in order], [references[i] for i in order], mode, metrics=MTEVAL)
    assert scores_equal(shuffled, score_e2e(outputs, references, mode, metrics=MTEVAL))


@given(seed=st.integers(0, 2**32 - 1))
@settings(max_examples=20, deadline=None)
@pytest.mark.parametrize("mode", ["python", "perl"])
def test_bleu_nist_ignore_case(example, mode, seed):
    outputs, references, _ = example
    rng = random.Random(seed)

    def recase(text: str) -> str:  # ASCII only: mteval-v13a.pl folds A-Z alone (see below)
        return "".join(c.swapcase() if c.isascii() and rng.random() < 0.5 else c for c in text)

    recased = score_e2e([recase(o) for o in outputs], [[recase(r) for r in refs] for refs in references], mode,
                        metrics=MTEVAL)
    assert scores_equal(recased, score_e2e(outputs, references, mode, metrics=MTEVAL))


def test_only_python_mode_folds_non_ascii_case():
    references = [["the café is in the centre"]]
    assert score_e2e(["THE CAFÉ IS IN THE CENTRE"], references, "python", MTEVAL)["BLEU"] == 1.0
    # mteval-v13a.pl lowercases with tr/A-Z/a-z/: "É" stays upper case and "café" does not match
    assert score_e2e(["THE CAFÉ IS IN THE CENTRE"], references, "perl", MTEVAL)["BLEU"] < 0.7


def test_empty_output_follows_each_mode():
    outputs = ["the cat sat on the mat", ""]
    references = [["the cat sat on the mat"], ["a dog barks"]]
    # perl: the empty output has no words; all 6/5/4/3 n-grams match; closest reference lengths 6 + 3
    assert score_e2e(outputs, references, "perl", ["BLEU"])["BLEU"] == pytest.approx(math.exp(-0.5), abs=5e-5)
    # python: it is one empty token, and pymteval adds len - n + 1 n-grams even when negative: 7/5/3/1 n-grams,
    # closest reference lengths 6 + 3 against 7 words
    expected = (6 / 7 * 5 / 5 * 4 / 3 * 3 / 1) ** 0.25 * math.exp(1 - 9 / 7)
    assert score_e2e(outputs, references, "python", ["BLEU"])["BLEU"] == pytest.approx(expected, rel=1e-12)


def test_nist_empty_output_follows_each_mode():
    outputs, references = ["a b", ""], [["a b"], ["c"]]
    # the matched unigrams carry log2(3) each (3 reference words), the bigram log2(1 / 1) = 0
    # perl: 2 words against 3 reference words per reference set, so the length penalty applies
    perl = math.log2(3) * math.exp(-_mteval.NIST_BETA * math.log(2 / 3) ** 2)
    assert score_e2e(outputs, references, "perl", ["NIST"])["NIST"] == pytest.approx(perl, abs=5e-5)
    # python: the empty token makes 3 unigrams, and 3 words match the summed mean reference length 2 + 1
    python = 2 * math.log2(3) / 3
    assert score_e2e(outputs, references, "python", ["NIST"])["NIST"] == pytest.approx(python, rel=1e-12)


@needs_java
def test_java_metrics_ignore_case(example):
    outputs, references, _ = example
    swapped = score_e2e([o.swapcase() for o in outputs], [[r.swapcase() for r in refs] for refs in references],
                      metrics=("ROUGE_L", "CIDEr"))
    # METEOR reads the same lowercased PTB tokens, so it cannot see case either
    assert scores_equal(swapped, score_e2e(outputs, references, metrics=("ROUGE_L", "CIDEr")))


@pytest.fixture
def jvm_starts(monkeypatch) -> list:
    """The commands of the processes the scorer starts from now on; the process's JVM is closed first."""
    starts, real_popen = [], _coco.subprocess.Popen
    monkeypatch.setattr(_coco.subprocess, "Popen",
                        lambda command, **kw: starts.append(command) or real_popen(command, **kw))
    _coco.close_jvm()
    return starts


@needs_java
def test_java_metrics_ignore_mr_order_in_one_jvm(example, jvm_starts):
    outputs, references, expected = example
    commands = jvm_starts  # this test's evaluation starts the process's JVM
    order = [3, 7, 0, 9, 5, 1, 8, 2, 6, 4]
    shuffled = score_e2e([outputs[i] for i in order], [references[i] for i in order], metrics=JAVA_METRICS)
    assert [c[0] for c in commands] == ["java"]
    # the same set of MRs gives the same CIDEr document frequencies; sums only change in the last bits
    for name in JAVA_METRICS:
        assert f"{shuffled[name]:.4f}" == f"{expected[EXPECTED_KEYS['python']][name]:.4f}"


@needs_java
def test_copying_a_held_out_reference_scores_high_but_not_perfect(example):
    _, references, _ = example
    held_out, others = [refs[0] for refs in references], [refs[1:] for refs in references]
    human = score_e2e(held_out, others, metrics=("BLEU", "CIDEr"))
    wrong_mr = score_e2e(held_out[1:] + held_out[:1], others, metrics=("BLEU", "CIDEr"))
    assert 2 * wrong_mr["BLEU"] < human["BLEU"] < 1
    assert 2 * wrong_mr["CIDEr"] < human["CIDEr"] < 10
    # a reference that stays among the references is a perfect BLEU match, but CIDEr is a consensus over all
    kept = score_e2e(held_out, references, metrics=("BLEU", "CIDEr"))
    assert kept["BLEU"] == 1.0 and kept["CIDEr"] < 10


@needs_java
def test_empty_outputs_keep_the_tokenized_lines_aligned(example):
    outputs, references, _ = example
    outputs = outputs[:4] + [""] + outputs[5:-1] + [""]  # one inside, one last (no final newline for PTB)
    scores = score_e2e(outputs, references, metrics=("ROUGE_L", "CIDEr"))
    # ROUGE_L is a mean over MRs and an empty output scores 0 on it: tokenized lines still line up
    rest = score_e2e(outputs[:4] + outputs[5:-1], references[:4] + references[5:-1], metrics=["ROUGE_L"])
    assert scores["ROUGE_L"] * 10 == pytest.approx(rest["ROUGE_L"] * 8, rel=1e-12)


# ---- one JVM per process ----

def jvm_pid() -> int:
    return _coco._jvm.proc.pid


def running(pid: int) -> bool:
    """A live process (a zombie waiting for a reparented parent's wait counts as ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_until(condition, seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.1)
    return condition()


@needs_conformance
@needs_java
def test_evaluations_in_one_process_share_one_jvm_and_score_as_fresh_ones(example, jvm_starts):
    outputs, references, _ = example
    other = ([o.upper() for o in outputs[5:]] + outputs[:2], references[5:] + references[:2])
    fresh = []
    for data in ((outputs, references), other):
        _coco.close_jvm()
        fresh.append(score_e2e(*data))
    commands = jvm_starts
    commands.clear()
    _coco.close_jvm()
    reused = [score_e2e(*data) for data in ((outputs, references), other, (outputs, references))]
    assert len(commands) == 1, "three evaluations, one JVM"
    assert reused == [fresh[0], fresh[1], fresh[0]], "every score equals a fresh JVM's to the last bit"
    assert _coco._jvm.alive()


@needs_java
def test_a_failed_evaluation_ends_the_jvm_and_the_next_one_starts_anew(monkeypatch):
    score_e2e(["a cat"], [["a cat"]], metrics=["ROUGE_L"])
    first = _coco._jvm
    monkeypatch.setattr(_coco, "_meteor_lines", lambda gts, res: 1 / 0)  # fails while the JVM holds work
    with pytest.raises(ZeroDivisionError):
        score_e2e(["a cat"], [["a cat"]], metrics=["METEOR"])
    assert _coco._jvm is None and not running(first.proc.pid) and not first.folder.exists()
    assert score_e2e(["a cat"], [["a dog"]], metrics=["ROUGE_L"]) == {"ROUGE_L": 0.5}


CHILD = """
import os, sys, time
from peft_repro.metrics import _coco
from peft_repro.metrics.e2e import score_e2e
assert score_e2e(["a cat"], [["a cat"]], metrics=["ROUGE_L"]) == {"ROUGE_L": 1.0}
print(_coco._jvm.proc.pid, _coco._jvm.folder, flush=True)
if sys.argv[1] == "wait":
    time.sleep(600)
"""


@needs_java
@pytest.mark.parametrize("end", ["exit", "SIGKILL"])
def test_the_jvm_and_its_folder_end_with_their_process(end):
    child = subprocess.Popen([sys.executable, "-c", CHILD, "wait" if end == "SIGKILL" else "exit"],
                             stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        pid, folder = child.stdout.readline().split()
        assert running(int(pid)) or end == "exit"
        if end == "SIGKILL":
            child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
    assert wait_until(lambda: not running(int(pid))), "the JVM outlived its process"
    assert wait_until(lambda: not Path(folder).exists()), "the JVM's folder outlived it"


@needs_java
def test_a_folder_left_by_killed_processes_is_removed_by_the_next_jvm(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    left = Path(_coco.tempfile.gettempdir(), f"{_coco.TMP_PREFIX}{dead.pid}-left")
    left.mkdir()
    (left / "sentences.txt").write_text("a cat")
    _coco.close_jvm()
    score_e2e(["a cat"], [["a cat"]], metrics=["ROUGE_L"])
    assert not left.exists()
    assert _coco._jvm.folder.name.startswith(f"{_coco.TMP_PREFIX}{os.getpid()}-")


@needs_java
@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork")
def test_a_forked_child_starts_its_own_jvm_and_leaves_the_parents_alone():
    score_e2e(["a cat"], [["a cat"]], metrics=["ROUGE_L"])
    parent_jvm = jvm_pid()
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        code = 1
        try:
            ok = score_e2e(["a cat"], [["a dog"]], metrics=["ROUGE_L"]) == {"ROUGE_L": 0.5}
            os.write(write, f"{jvm_pid()}".encode())
            _coco.close_jvm()
            code = 0 if ok else 1
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as pipe:
        child_jvm = int(pipe.read() or 0)
    assert os.waitpid(child, 0)[1] == 0
    assert child_jvm not in (0, parent_jvm)
    assert jvm_pid() == parent_jvm and _coco._jvm.alive()
    assert score_e2e(["a cat"], [["a cat"]], metrics=["ROUGE_L"]) == {"ROUGE_L": 1.0}
    assert jvm_pid() == parent_jvm


# ---- arguments ----

def test_mismatched_counts_are_a_value_error():
    with pytest.raises(ValueError, match="2 system outputs for 3 MRs"):
        score_e2e(["a", "b"], [["a"], ["b"], ["c"]])


@pytest.mark.parametrize("kwargs", [{"nist_mode": "mteval"}, {"metrics": ["BLEU", "TER"]}, {"metrics": []}])
def test_bad_options_are_value_errors(kwargs):
    with pytest.raises(ValueError):
        score_e2e(["a"], [["a"]], **kwargs)


def test_mr_without_references_is_a_value_error():
    with pytest.raises(ValueError, match="MR #2 has no references"):
        score_e2e(["a", "b"], [["a"], []], metrics=["BLEU"])


def test_missing_java_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(_coco, "java_command", lambda: ("no-such-java", "E2EJvm"))
    with pytest.raises(RuntimeError, match="need Java"):
        score_e2e(["a"], [["a"]], metrics=["ROUGE_L"])


@needs_java
def test_failing_jvm_reports_its_error(monkeypatch):
    monkeypatch.setattr(_coco, "java_command", lambda: ("java", "-XX:+NoSuchOption"))
    with pytest.raises(RuntimeError, match="JVM failed"):
        score_e2e(["a"], [["a"]], metrics=["ROUGE_L"])


@needs_java
def test_launcher_runs_as_a_source_file_where_the_cache_cannot_be_written(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    monkeypatch.setattr(_coco, "CACHE", tmp_path / "file" / "cache")
    _coco.java_command.cache_clear()
    try:
        assert _coco.java_command()[-1] == str(_coco.LAUNCHER)
        assert score_e2e(["the cat"], [["the cat"]], metrics=["ROUGE_L"]) == {"ROUGE_L": 1.0}
    finally:
        _coco.java_command.cache_clear()


# ---- files and CLI ----

def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_text_files(tmp_path):
    refs = write(tmp_path / "refs.txt", "A one.\nA two.\n\nB one.\n")
    outputs, references = load_files(refs, write(tmp_path / "sys.txt", "A.\n\n"))
    assert outputs == ["A.", ""] and references == [["A one.", "A two."], ["B one."]]
    # without blank lines, every line is the single reference of its own MR
    assert load_files(write(tmp_path / "single.txt", "x\ny\n"), tmp_path / "sys.txt")[1] == [["x"], ["y"]]


def test_csv_references_group_consecutive_mrs(tmp_path):
    refs = write(tmp_path / "refs.csv", '\ufeffmr,ref\n"name[A], food[B]",A1\n"name[A], food[B]",A2\nname[C],C£1\n')
    outputs, references = load_files(refs, write(tmp_path / "sys.txt", "a\nc\n"))
    assert references == [["A1", "A2"], ["C£1"]]


def test_tsv_system_outputs_pick_references_by_mr(tmp_path):
    refs = write(tmp_path / "refs.tsv", "mr\tref\nA\tA1\nB\tB1\nA\tA2\n")
    outputs, references = load_files(refs, write(tmp_path / "out.tsv", "MR\toutput\nB\tb\nA\ta\n"))
    assert outputs == ["b", "a"] and references == [["B1"], ["A1", "A2"]]


def test_cli_prints_like_measure_scores(example, capsys):
    main([str(CONFORMANCE / "example" / "refs.txt"), str(CONFORMANCE / "example" / "sys.txt"),
          "--nist-mode", "perl", "--metrics", "BLEU", "NIST"])
    assert capsys.readouterr().out == "SCORES:\n==============\nBLEU: 0.7203\nNIST: 7.8212\n\n"


def test_cli_json(example, capsys):
    main([str(CONFORMANCE / "example" / "refs.txt"), str(CONFORMANCE / "example" / "sys.txt"),
          "--metrics", "BLEU", "--json"])
    assert json.loads(capsys.readouterr().out) == {"BLEU": pytest.approx(0.7202928494322162, rel=1e-12)}


@pytest.mark.parametrize("problem", ["missing file", "count mismatch", "double blank line"])
def test_cli_bad_input_is_one_line_and_nonzero(tmp_path, capsys, problem):
    refs = write(tmp_path / "refs.txt", "a\nb\n\nc\n")
    sys_file = write(tmp_path / "sys.txt", "a\nc\n")
    if problem == "missing file":
        sys_file = tmp_path / "missing.txt"
    elif problem == "count mismatch":
        write(sys_file, "a\nb\nc\n")
    else:
        write(refs, "a\n\n\nc\n")
    with pytest.raises(SystemExit) as exit_info:
        main([str(refs), str(sys_file), "--metrics", "BLEU"])
    assert exit_info.value.code == 2  # bad input, as argparse's own errors
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error:" in err


def test_bleu_of_summed_item_counts_is_corpus_bleu():
    """The claims' item bootstrap sums per-MR n-gram counts: that must give corpus BLEU in both modes."""
    import numpy as np

    outputs = ["the cat sat on the mat", "a dog", "", "the the the"]
    references = [["the cat sat on a mat", "a cat sat"], ["a dog barked", "the dog"], ["x y"], ["the cat"]]
    for mode in _mteval.MODES:
        rows = np.array(_mteval.item_counts(outputs, references, mode), dtype=float)
        expected = _mteval.bleu(_mteval.corpus_stats(outputs, references, mode))
        assert _mteval.bleu_from_counts(rows.sum(0), mode) == pytest.approx(expected, rel=1e-12)
        assert _mteval.bleu_from_counts(rows[[0, 0, 1]].sum(0), mode) == pytest.approx(
            _mteval.bleu(_mteval.corpus_stats([outputs[0], outputs[0], outputs[1]],
                                              [references[0], references[0], references[1]], mode)), rel=1e-12)
