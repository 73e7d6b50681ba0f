"""METEOR, ROUGE_L and CIDEr as e2e-metrics gets them from pycocoevalcap, with one JVM for both Java tools.

pycocoevalcap starts a JVM per tokenizer call (references, then outputs) and another for METEOR, and writes its
temporary file next to the tokenizer jar (fails on a read-only install). Here ``E2EJvm.java`` (compiled once into
``~/.cache/peft_repro``) runs the same jars in one JVM per Python process, started on the first evaluation and kept
for the next ones (a sweep's worker process evaluates many runs; METEOR's paraphrase table loads once): the PTB
tokenizer on references and outputs together (input file in a temporary directory) while METEOR loads, then
METEOR. ROUGE_L and CIDEr are pycocoevalcap's own Python classes, run while METEOR works. The JVM ends with its
process: at interpreter exit, or when its input ends because the process died.
"""
from __future__ import annotations

import atexit
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
METEOR_END = "METEOR-END"


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


class Jvm:
    """One E2EJvm process (commands on its stdin, see E2EJvm.java) and its temporary folder.

    The folder's name holds this Python process's pid: the JVM removes it when its stdin ends (this process closed
    it or died); if both were killed, the next `Jvm` of any process removes it (`remove_stale_dirs`)."""

    def __init__(self, command: tuple[str, ...]):
        self.command = command
        remove_stale_dirs()
        self.folder = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.getpid()}-"))
        self.stderr = open(self.folder / "stderr.txt", "w+b")
        try:
            self.proc = subprocess.Popen([*command, str(self.folder)], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=self.stderr)
        except BaseException as err:
            self.close()
            if isinstance(err, FileNotFoundError):
                raise RuntimeError("METEOR, ROUGE_L and CIDEr need Java >= 11 (java on PATH)") from None
            raise

    def alive(self) -> bool:
        return self.proc.poll() is None

    def send(self, lines: list[str]) -> None:
        try:
            self.proc.stdin.write("".join(f"{line}\n" for line in lines).encode("utf-8"))
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass  # the JVM ended: read_line reports why

    def read_line(self) -> str:
        line = self.proc.stdout.readline()
        if not line:
            raise self.failure()
        return line.decode("utf-8").rstrip("\n")

    def failure(self) -> RuntimeError:
        """Why the JVM ended (it only ends on an error while this process holds it)."""
        if self.proc.wait() == 0:
            return RuntimeError("the E2E metrics JVM closed its output early")
        self.stderr.seek(0)
        # the first line says what went wrong (exception, compiler or VM error); skip the tokenizer's reports
        lines = [line for line in self.stderr.read().decode("utf-8", "replace").splitlines()
                 if line.strip() and not line.startswith("PTBTokenizer tokenized")]
        reason = lines[0] if lines else "no message"
        return RuntimeError(f"the E2E metrics JVM failed (exit {self.proc.returncode}): {reason}")

    def close(self, kill: bool = False) -> None:
        """End of input: the JVM exits and removes the folder (removed here too); `kill` when it may be busy."""
        if hasattr(self, "proc"):
            if kill and self.alive():
                self.proc.kill()
            with contextlib.suppress(OSError):  # input a killed JVM did not read
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout=CLOSE_SECONDS)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc.stdout.close()
        self.stderr.close()
        shutil.rmtree(self.folder, ignore_errors=True)


CLOSE_SECONDS = 10
_lock = threading.Lock()  # one evaluation at a time talks to the process's JVM
_jvm: Jvm | None = None


def _shared_jvm() -> Jvm:
    """This process's JVM, started on first use (or after a failure, or when `java_command` changed)."""
    global _jvm
    command = java_command()
    if _jvm is not None and (_jvm.command != command or not _jvm.alive()):
        close_jvm()
    if _jvm is None:
        _jvm = Jvm(command)
    return _jvm


def close_jvm(kill: bool = False) -> None:
    """Ends this process's JVM, if any (at interpreter exit; a later evaluation starts a new one)."""
    global _jvm
    jvm, _jvm = _jvm, None
    if jvm is not None:
        jvm.close(kill)


def _forget_in_child() -> None:
    """A forked child starts its own JVM: it drops its copies of the parent's pipes (so the parent's JVM still
    sees the end of its input when the parent dies) without ending the parent's JVM."""
    global _jvm, _lock
    jvm, _jvm, _lock = _jvm, None, threading.Lock()
    if jvm is not None:
        for stream in (jvm.proc.stdin, jvm.proc.stdout, jvm.stderr):
            with contextlib.suppress(OSError):
                stream.close()
        jvm.proc.returncode = 0  # not this process's child: nothing to wait for


atexit.register(close_jvm)
os.register_at_fork(after_in_child=_forget_in_child)


class CocoScorer:
    """Sends the work to the process's JVM at construction, so the caller can compute other metrics meanwhile;
    `scores` collects. Holds the JVM until closed; a JVM left with unread work (an error) is ended."""

    def __init__(self, hypotheses: list[str], references: list[list[str]], metrics=METRICS):
        self.metrics = [m for m in METRICS if m in metrics]
        self.group_sizes = [len(refs) for refs in references]
        # pycocoevalcap replaces "\n" by " "; Java also ends lines at \r, \f, \v, \x85, \u2028 and \u2029,
        # which would shift every later sentence, so all of Python's line boundaries become spaces
        sentences = [" ".join(s.splitlines()) for refs in references for s in refs]
        sentences += [" ".join(h.splitlines()) for h in hypotheses]
        self.n_sentences = len(sentences)
        self.lock, self.jvm, self.finished = _lock, None, False
        self.lock.acquire()
        try:
            self.jvm = _shared_jvm()
            path = self.jvm.folder / "sentences.txt"
            path.write_text("\n".join(sentences), encoding="utf-8")  # no final newline, as pycocoevalcap writes it
            self.jvm.send((["LOAD-METEOR"] if "METEOR" in self.metrics else []) + [f"TOKENIZE {path}"])
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> CocoScorer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.lock is None:
            return
        try:
            if not self.finished and self.jvm is not None and self.jvm is _jvm:
                close_jvm(kill=True)
        finally:
            self.lock.release()
            self.lock = None

    def scores(self) -> dict[str, float]:
        gts, res = self._tokenized()
        feeder = None
        if "METEOR" in self.metrics:
            lines = ["METEOR", *_meteor_lines(gts, res), METEOR_END]
            feeder = threading.Thread(target=self.jvm.send, args=(lines,), daemon=True)
            feeder.start()
        scores = {}
        if "ROUGE_L" in self.metrics:
            scores["ROUGE_L"] = float(Rouge().compute_score(gts, res)[0])
        if "CIDEr" in self.metrics:
            scores["CIDEr"] = float(Cider().compute_score(gts, res)[0])
        if feeder:
            scores["METEOR"] = float(self.jvm.read_line())
            feeder.join()
        self.finished = True
        return {m: scores[m] for m in self.metrics}

    def _tokenized(self) -> tuple[dict[int, list[str]], dict[int, list[str]]]:
        """pycocoevalcap's gts/res dicts: PTB-tokenized, lowercased, punctuation tokens dropped."""
        lines = []
        while (line := self.jvm.read_line()) != PTB_DONE:
            lines.append(" ".join(w for w in line.rstrip().split(" ") if w not in _ptb.PUNCTUATIONS))
        if len(lines) != self.n_sentences:
            raise RuntimeError(f"PTBTokenizer returned {len(lines)} lines for {self.n_sentences} sentences")
        gts, start = {}, 0
        for i, size in enumerate(self.group_sizes):
            gts[i] = lines[start:start + size]
            start += size
        res = {i: [hyp] for i, hyp in enumerate(lines[start:])}
        return gts, res


def _meteor_lines(gts: dict[int, list[str]], res: dict[int, list[str]]) -> list[str]:
    """The lines pycocoevalcap's Meteor._stat sends."""
    lines = []
    for i, refs in gts.items():
        hyp = res[i][0].replace("|||", "").replace("  ", " ")
        lines.append(" ||| ".join(("SCORE", " ||| ".join(refs), hyp)))
    return lines
