"""E2E NLG metrics exactly as tuetschek/e2e-metrics (``measure_scores.py``) prints them.

BLEU and NIST follow mteval-v13a in one of e2e-metrics' two modes: ``python`` (``measure_scores.py -p``, used by
the prefix-tuning and LoRA papers; the default) or ``perl`` (its default, whose 4-decimal output it re-reads).
METEOR, ROUGE_L and CIDEr come from pycocoevalcap after Stanford PTB tokenization, all Java work in one JVM.
See docs/metrics.md for the formats and the semantics.

CLI: ``python -m peft_repro.metrics.e2e REFS SYS [--nist-mode python|perl] [--metrics NAME ...] [--json]``
"""
from __future__ import annotations

import argparse
import csv
import json
import re
from contextlib import nullcontext
from pathlib import Path

from . import _mteval
from ._coco import METRICS as COCO_METRICS
from ._coco import CocoScorer

METRICS = ("BLEU", "NIST", "METEOR", "ROUGE_L", "CIDEr")
# measure_scores.py's CSV/TSV header patterns (matched at the start of a field, case-insensitive)
HEADER_SRC = r"(mr|src|source|meaning(?:[_ .-]rep(?:resentation)?)?|da|dial(?:ogue)?[_ .-]act)s?"
HEADER_SYS = r"(out(?:put)?|ref(?:erence)?|sys(?:tem)?(?:[_ .-](?:out(?:put)?|ref(?:erence)?))?)s?"
HEADER_REF = r"(trg|tgt|target|ref(?:erence)?|human(?:[_ .-](?:ref(?:erence)?))?)s?"
# measure_scores.py repairs these mis-encodings in CSV/TSV files
MOJIBAKE = {"Ł": "£", "Â£": "£", "Ã©": "é", "ã©": "é"}


def score_e2e(hypotheses: list[str], references: list[list[str]], nist_mode: str = "python",
              metrics=None) -> dict[str, float]:
    """Corpus scores of one output per MR against that MR's references, keyed by `METRICS` names.

    BLEU is a fraction (0.7203, not 72.03). ``nist_mode="perl"`` returns BLEU and NIST rounded to 4 decimals, as
    measure_scores.py reads them from mteval's output. ``metrics`` picks a subset (default: all five); BLEU and
    NIST alone need no Java. CIDEr's document frequencies come from the MRs scored, so it depends on the whole set.
    """
    metrics = METRICS if metrics is None else tuple(metrics)
    _check_inputs(hypotheses, references, nist_mode, metrics)
    coco_metrics = [m for m in metrics if m in COCO_METRICS]
    # the JVM starts first and tokenizes while Python computes BLEU and NIST
    with CocoScorer(hypotheses, references, coco_metrics) if coco_metrics else nullcontext() as coco:
        scores = _mteval_scores(hypotheses, references, nist_mode, metrics)
        if coco:
            scores.update(coco.scores())
    return {m: scores[m] for m in METRICS if m in metrics}


def _check_inputs(hypotheses, references, nist_mode, metrics) -> None:
    if nist_mode not in _mteval.MODES:
        raise ValueError(f"nist_mode must be one of {_mteval.MODES}, not {nist_mode!r}")
    unknown = set(metrics) - set(METRICS)
    if unknown or not metrics:
        raise ValueError(f"metrics must be a non-empty subset of {METRICS}, got {metrics!r}")
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} system outputs for {len(references)} MRs")
    if not references:
        raise ValueError("nothing to score: no MRs")
    empty = [i for i, refs in enumerate(references) if not refs]
    if empty:
        raise ValueError(f"MR #{empty[0] + 1} has no references")


def _mteval_scores(hypotheses, references, nist_mode, metrics) -> dict[str, float]:
    if not {"BLEU", "NIST"} & set(metrics):
        return {}
    stats = _mteval.corpus_stats(hypotheses, references, nist_mode)
    scores = {"BLEU": _mteval.bleu(stats), "NIST": _mteval.nist(stats)}
    if nist_mode == "perl":
        # mteval prints "%.4f" and measure_scores.py parses that text
        scores = {name: float(f"{value:.4f}") for name, value in scores.items()}
    return scores


# ---- files, as measure_scores.py reads them ----

def read_lines(path: str | Path, multi_ref: bool = False) -> list:
    """Stripped lines; with ``multi_ref``, groups of lines separated by blank lines."""
    try:
        lines = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 ({err.reason} at byte {err.start})") from None
    if not multi_ref:
        return lines
    groups = [[]]
    for line in lines:
        if line:
            groups[-1].append(line)
        else:
            groups.append([])
    if not groups[-1]:
        del groups[-1]
    return groups


def read_table(path: str | Path, text_header: str) -> tuple[list[str], list[str]]:
    """(MRs, texts) from an E2E CSV/TSV file: a header naming an MR column and a text column, or two columns."""
    lines = read_lines(path)
    if lines:
        lines[0] = lines[0].replace("\ufeff", "")
    lines = [_fix_mojibake(line) for line in lines if line]
    if not lines:
        raise ValueError(f"{path}: empty file")
    rows = list(csv.reader(lines, delimiter="\t" if "\t" in lines[0] else ","))
    n_cols = len(rows[0])
    src_cols = [i for i, name in enumerate(rows[0]) if re.match(HEADER_SRC, name, re.I)]
    text_cols = [i for i, name in enumerate(rows[0]) if re.match(text_header, name, re.I)]
    if len(src_cols) == len(text_cols) == 1:
        (src_col,), (text_col,), rows = src_cols, text_cols, rows[1:]
    elif not src_cols and not text_cols and n_cols == 2:
        src_col, text_col = 0, 1
    else:
        raise ValueError(f"{path}: need one MR column and one text column (by header), or exactly two columns")
    bad = [n for n, row in enumerate(rows, start=1) if len(row) != n_cols]
    if bad:
        raise ValueError(f"{path}: wrong number of columns on data rows {bad[:10]}")
    return [row[src_col] for row in rows], [row[text_col] for row in rows]


def _fix_mojibake(line: str) -> str:
    for wrong, right in MOJIBAKE.items():
        line = line.replace(wrong, right)
    return line


def group_references(mrs: list[str], refs: list[str], sys_mrs: list[str]) -> list[list[str]]:
    """References per MR: in the system file's MR order if it names MRs, else consecutive identical MRs."""
    if any(sys_mrs):
        by_mr: dict[str, list[str]] = {}
        for mr, ref in zip(mrs, refs):
            by_mr.setdefault(mr, []).append(ref)
        missing = [mr for mr in sys_mrs if mr not in by_mr]
        if missing:
            raise ValueError(f"no references for the MR {missing[0]!r}")
        return [by_mr[mr] for mr in sys_mrs]
    groups, previous = [], None
    for mr, ref in zip(mrs, refs):
        if mr != previous:
            groups.append([])
        groups[-1].append(ref)
        previous = mr
    return groups


def load_files(ref_file: str | Path, sys_file: str | Path) -> tuple[list[str], list[list[str]]]:
    """(system outputs, references per MR) from measure_scores.py's input formats."""
    if _is_table(sys_file):
        sys_mrs, outputs = read_table(sys_file, HEADER_SYS)
    else:
        outputs = read_lines(sys_file)
        sys_mrs = [""] * len(outputs)
    if _is_table(ref_file):
        references = group_references(*read_table(ref_file, HEADER_REF), sys_mrs)
    else:
        references = read_lines(ref_file, multi_ref=True)
        if len(references) == 1:  # no blank lines: one reference per MR
            references = [[ref] for ref in references[0]]
        if any(not refs for refs in references):
            raise ValueError(f"{ref_file}: an MR without references (two blank lines in a row?)")
    if len(outputs) != len(references):
        raise ValueError(f"{sys_file} has {len(outputs)} outputs but {ref_file} has {len(references)} MRs")
    return outputs, references


def _is_table(path: str | Path) -> bool:
    return re.search(r"\.[ct]sv$", str(path), re.I) is not None


def format_scores(scores: dict[str, float]) -> str:
    """measure_scores.py's printout."""
    return "SCORES:\n==============\n" + "".join(f"{name}: {value:.4f}\n" for name, value in scores.items())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m peft_repro.metrics.e2e", description=__doc__.split("\n")[0])
    parser.add_argument("ref_file", help="references: blank-line separated groups per MR, or an E2E CSV/TSV")
    parser.add_argument("sys_file", help="system outputs: one per line, or a CSV/TSV with MR and output columns")
    parser.add_argument("--nist-mode", choices=_mteval.MODES, default="python",
                        help="BLEU/NIST as measure_scores.py -p (python, default) or with mteval-v13a.pl (perl)")
    parser.add_argument("--metrics", nargs="+", choices=METRICS, default=METRICS, metavar="NAME",
                        help=f"score only these of {', '.join(METRICS)} (BLEU and NIST need no Java)")
    parser.add_argument("--json", action="store_true", help="print the scores as one JSON object")
    args = parser.parse_args(argv)
    try:
        outputs, references = load_files(args.ref_file, args.sys_file)
        scores = score_e2e(outputs, references, args.nist_mode, args.metrics)
    except OSError as err:  # input errors exit 2, as argparse's own and the project's other commands
        parser.exit(2, f"{parser.prog}: error: {err.filename}: {err.strerror}\n")
    except ValueError as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    except RuntimeError as err:  # the scorer itself failed (e.g. Java)
        parser.exit(1, f"{parser.prog}: error: {err}\n")
    print(json.dumps(scores) if args.json else format_scores(scores))


if __name__ == "__main__":
    main()
