"""Metrics, one module per task family: `e2e.score_e2e`, `rouge.score_rouge`, `classification.accuracy`,
`wikisql.logical_form_accuracy`. Tasks call them from their `score` method (peft_repro/tasks/)."""
