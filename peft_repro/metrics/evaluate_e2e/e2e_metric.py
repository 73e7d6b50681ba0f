"""`evaluate` wrapper of `peft_repro.metrics.e2e.score_e2e`, loadable offline from this file:

    evaluate.load("path/to/peft_repro/metrics/evaluate_e2e/e2e_metric.py")
        .compute(predictions=[...], references=[[...], ...], nist_mode="python", metrics=None)

evaluate copies this file into its module cache, so peft_repro itself must be importable.
"""
import datasets
import evaluate

from peft_repro.metrics.e2e import score_e2e

_DESCRIPTION = """E2E NLG challenge metrics (BLEU, NIST, METEOR, ROUGE_L, CIDEr) exactly as tuetschek/e2e-metrics
prints them; BLEU and NIST in its Python (-p, default) or Perl mteval mode."""
_KWARGS_DESCRIPTION = """
Args:
    predictions: one system output per MR.
    references: the references of each MR (any number, at least one).
    nist_mode: "python" (measure_scores.py -p) or "perl" (mteval-v13a.pl, 4-decimal BLEU and NIST).
    metrics: names to compute (default all); BLEU and NIST alone need no Java.
Returns:
    dict with BLEU (a fraction), NIST, METEOR, ROUGE_L, CIDEr.
"""
_CITATION = """@article{dusek2020evaluating, title={Evaluating the state-of-the-art of End-to-End Natural Language
Generation: The {E2E} {NLG} challenge}, author={Du{\\v{s}}ek, Ond{\\v{r}}ej and Novikova, Jekaterina and Rieser,
Verena}, journal={Computer Speech \\& Language}, volume={59}, pages={123--156}, year={2020}}"""


class E2EMetric(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({
                "predictions": datasets.Value("string"),
                "references": datasets.Sequence(datasets.Value("string")),
            }),
            codebase_urls=["https://github.com/tuetschek/e2e-metrics"],
        )

    def _compute(self, predictions, references, nist_mode="python", metrics=None):
        return score_e2e(list(predictions), [list(refs) for refs in references], nist_mode, metrics)
