"""METEOR, ROUGE_L and CIDEr as e2e-metrics gets them from pycocoevalcap, with one JVM for both Java tools.

pycocoevalcap starts a JVM per tokenizer call (references, then outputs) and another for METEOR, and writes its
temporary file next to the tokenizer jar (fails on a read-only install). Here ``E2EJvm.java`` (compiled once into
``~/.cache/peft_repro``) runs the same jars in one JVM: the PTB tokenizer on references and outputs together
(input file in a temporary directory) while METEOR loads, then METEOR. ROUGE_L and CIDEr are pycocoevalcap's own
Python classes, run while METEOR works.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor import meteor as _meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer import ptbtokenizer as _ptb

METRICS = ("METEOR", "ROUGE_L", "CIDEr")
LAUNCHER = Path(__file__).with_name("E2EJvm.java")
CLASSPATH = os.pathsep.join([
    str(Path(_ptb.__file__).with_name(_ptb.STANFORD_CORENLP_3_4_1_JAR)),
    str(Path(_meteor.__file__).with_name(_meteor.METEOR_JAR)),
])
# pycocoevalcap gives METEOR 2 GB; a 1 GB start and the parallel collector load its paraphrase table faster.
# Without the optimizing JIT (C2) the test set takes ~10% longer on 2 idle cores but ~20% less on 2 shared ones
# (pytest -n 2, a training job beside it), where the 20 s budget is at risk.
JVM_OPTIONS = ("-Xms1G", "-Xmx2G", "-XX:+UseParallelGC", "-XX:TieredStopAtLevel=1")
CACHE = Path("~/.cache/peft_repro")  # shared with the model conversion (conf/model)
PTB_DONE = "PTB-DONE"


@functools.cache
def java_command() -> tuple[str, ...]:
    """java and its arguments up to the launcher's own: the launcher compiled once (saves a second per run),
    or run as a source file where the cache cannot be made."""
    try:
        classes = _compiled_launcher()
    except (OSError, RuntimeError, subprocess.CalledProcessError):  # RuntimeError: no home directory
        return ("java", *JVM_OPTIONS, "-cp", CLASSPATH, str(LAUNCHER))
    return ("java", *JVM_OPTIONS, "-cp", CLASSPATH + os.pathsep + str(classes), LAUNCHER.stem)


def _compiled_launcher() -> Path:
    """The folder holding E2EJvm.class in the user's cache, compiled on first use for Java >= 11."""
    digest = hashlib.sha256(LAUNCHER.read_bytes()).hexdigest()[:16]
    cache = CACHE.expanduser()
    folder = cache / f"e2ejvm-{digest}"
    if not folder.is_dir():
        cache.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=cache, prefix=".compile-"))
        try:
            # the compiler module, not the javac binary, which Debian's JRE packages lack
            subprocess.run(["java", "-m", "jdk.compiler/com.sun.tools.javac.Main", "--release", "11",
                            "-cp", CLASSPATH, "-d", str(staging), str(LAUNCHER)], check=True, capture_output=True)
            with contextlib.suppress(OSError):  # a concurrent run may have renamed its copy first
                staging.rename(folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    if not folder.is_dir():
        raise OSError(f"cannot cache the compiled launcher in {folder}")
    return folder


TMP_PREFIX = "peft-repro-e2e-"  # + the owning pid: a run killed while scoring leaves its folder, the next one removes it


def remove_stale_dirs() -> None:
    for folder in Path(tempfile.gettempdir()).glob(TMP_PREFIX + "*"):
        pid = folder.name[len(TMP_PREFIX):].split("-")[0]
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except (ValueError, PermissionError):  # not ours to judge
            pass


class CocoScorer:
    """Starts the JVM at construction, so the caller can compute other metrics meanwhile; `scores` collects."""

    def __init__(self, hypotheses: list[str], references: list[list[str]], metrics=METRICS):
        self.metrics = [m for m in METRICS if m in metrics]
        self.group_sizes = [len(refs) for refs in references]
        remove_stale_dirs()
        self.tmp = tempfile.TemporaryDirectory(prefix=f"{TMP_PREFIX}{os.getpid()}-")
        # pycocoevalcap replaces "\n" by " "; Java also ends lines at \r, \f, \v, \x85, \u2028 and \u2029,
        # which would shift every later sentence, so all of Python's line boundaries become spaces
        sentences = [" ".join(s.splitlines()) for refs in references for s in refs]
        sentences += [" ".join(h.splitlines()) for h in hypotheses]
        self.n_sentences = len(sentences)
        path = Path(self.tmp.name, "sentences.txt")
        path.write_text("\n".join(sentences), encoding="utf-8")  # no final newline, as pycocoevalcap writes it
        self.stderr = open(Path(self.tmp.name, "stderr.txt"), "w+b")
        try:
            self.proc = subprocess.Popen([*java_command(), str(path), str("METEOR" in self.metrics).lower()],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr)
        except FileNotFoundError:
            self.close()
            raise RuntimeError("METEOR, ROUGE_L and CIDEr need Java >= 11 (java on PATH)") from None

    def __enter__(self) -> CocoScorer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if hasattr(self, "proc"):
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self.proc.stdout.close()
            with contextlib.suppress(OSError):  # input the killed JVM did not read
                self.proc.stdin.close()
        self.stderr.close()
        self.tmp.cleanup()

    def scores(self) -> dict[str, float]:
        gts, res = self._tokenized()
        feeder = None
        if "METEOR" in self.metrics:
            feeder = threading.Thread(target=self._feed, args=(_meteor_lines(gts, res),), daemon=True)
            feeder.start()
        else:
            self.proc.stdin.close()
        scores = {}
        if "ROUGE_L" in self.metrics:
            scores["ROUGE_L"] = float(Rouge().compute_score(gts, res)[0])
        if "CIDEr" in self.metrics:
            scores["CIDEr"] = float(Cider().compute_score(gts, res)[0])
        if feeder:
            scores["METEOR"] = float(self._read_line())
            feeder.join()
        self._check_exit()
        return {m: scores[m] for m in self.metrics}

    def _tokenized(self) -> tuple[dict[int, list[str]], dict[int, list[str]]]:
        """pycocoevalcap's gts/res dicts: PTB-tokenized, lowercased, punctuation tokens dropped."""
        lines = []
        while (line := self._read_line()) != PTB_DONE:
            lines.append(" ".join(w for w in line.rstrip().split(" ") if w not in _ptb.PUNCTUATIONS))
        if len(lines) != self.n_sentences:
            raise RuntimeError(f"PTBTokenizer returned {len(lines)} lines for {self.n_sentences} sentences")
        gts, start = {}, 0
        for i, size in enumerate(self.group_sizes):
            gts[i] = lines[start:start + size]
            start += size
        res = {i: [hyp] for i, hyp in enumerate(lines[start:])}
        return gts, res

    def _read_line(self) -> str:
        line = self.proc.stdout.readline()
        if not line:
            self._check_exit()
            raise RuntimeError("the E2E metrics JVM closed its output early")
        return line.decode("utf-8").rstrip("\n")

    def _feed(self, lines: list[str]) -> None:
        try:
            with self.proc.stdin:
                self.proc.stdin.write("".join(f"{line}\n" for line in lines).encode("utf-8"))
        except BrokenPipeError:
            pass  # the JVM died; _check_exit reports why

    def _check_exit(self) -> None:
        if self.proc.wait() != 0:
            self.stderr.seek(0)
            # the first line says what went wrong (exception, compiler or VM error); skip the tokenizer's report
            lines = [line for line in self.stderr.read().decode("utf-8", "replace").splitlines()
                     if line.strip() and not line.startswith("PTBTokenizer tokenized")]
            reason = lines[0] if lines else "no message"
            raise RuntimeError(f"the E2E metrics JVM failed (exit {self.proc.returncode}): {reason}")


def _meteor_lines(gts: dict[int, list[str]], res: dict[int, list[str]]) -> list[str]:
    """The lines pycocoevalcap's Meteor._stat sends."""
    lines = []
    for i, refs in gts.items():
        hyp = res[i][0].replace("|||", "").replace("  ", " ")
        lines.append(" ||| ".join(("SCORE", " ||| ".join(refs), hyp)))
    return lines
