"""WikiSQL (Zhong et al. 2017): question + table header -> SQL, scored by logical-form exact match.

Offline there are the first 1,000 official train questions and the full dev set (8,421), with table headers but
no table rows, so we report logical-form accuracy (as the LoRA paper does), not execution accuracy. WikiSQL's
splits are table-disjoint; we keep it so: the training pool is the 1,000 train questions plus the dev questions
whose table falls in buckets 0-4 of crc32(table_id) % 10; model selection uses bucket 5; evaluation buckets 6-9.

Prompt: "Columns: h1 | h2 | ...\nQuestion: q\nSQL:"; target " SELECT agg(col) FROM table WHERE col op 'value' AND ...",
the human-readable form of WikiSQL's lib/query.py with the table called `table`.
"""
from __future__ import annotations

import re
import zlib

from .base import EvalItem, Example, Task, read_jsonl, require

AGG_OPS = ["", "MAX", "MIN", "COUNT", "SUM", "AVG"]
COND_OPS = ["=", ">", "<", "OP"]
BUCKETS = {"train": range(0, 5), "dev": range(5, 6), "test": range(6, 10)}
_MLX = re.compile(r"table: (?P<table>\S+)\ncolumns: .*\nQ: (?P<question>.*)\nA: SELECT (?P<select>.+?) FROM \S+"
                  r"(?: WHERE (?P<where>.*))?", re.S)


def to_sql(header: list[str], sql: dict) -> str:
    column = header[sql["sel"]]
    select = f"{AGG_OPS[sql['agg']]}({column})" if sql["agg"] else column
    conditions = [f"{header[c]} {COND_OPS[op]} '{value}'" for c, op, value in sql["conds"]]
    return f"SELECT {select} FROM table" + (" WHERE " + " AND ".join(conditions) if conditions else "")


def mlx_to_sql(header: list[str], select: str, where: str | None) -> str:
    """The MLX subset writes `SELECT COUNT col FROM <id> WHERE ...`; rewrite it in our form."""
    agg = next((a for a in AGG_OPS[1:] if select.startswith(a + " ") and select[len(a) + 1:] in header), "")
    column = select[len(agg) + 1:] if agg else select
    head = f"{agg}({column})" if agg else column
    return f"SELECT {head} FROM table" + (f" WHERE {where.strip()}" if where else "")


class WikiSQLTask(Task):
    kind = "generation"
    primary_metric = "logical_form_accuracy"
    document_field = "columns"   # a very wide table loses columns, never the question or the "SQL:" cue

    def _tables(self, name: str) -> dict[str, list[str]]:
        path = require(self.root / self.cfg.folder / name, f"WikiSQL tables file {name}")
        return {t["id"]: t["header"] for t in read_jsonl(path, ("id", "header"))}

    def rows(self, split: str) -> list[tuple[list[str], str, str]]:
        """(header, question, sql) for the split."""
        def local():
            tables = self._tables("dev.tables.jsonl")
            path = require(self.root / self.cfg.folder / "dev.jsonl", "WikiSQL dev file")
            dev = read_jsonl(path, ("table_id", "question", "sql"))
            rows = [(tables[r["table_id"]], r["question"].strip(), to_sql(tables[r["table_id"]], r["sql"]))
                    for r in dev if zlib.crc32(r["table_id"].encode()) % 10 in BUCKETS[split]]
            if split == "train":
                rows = self._official_train() + rows
            return rows

        def hub():
            import datasets

            ds = datasets.load_dataset("Salesforce/wikisql", split={"train": "train", "dev": "validation",
                                                                    "test": "test"}[split])
            return [(r["table"]["header"], r["question"], to_sql(r["table"]["header"], r["sql"])) for r in ds]

        return self.load(local, hub)

    def _official_train(self) -> list[tuple[list[str], str, str]]:
        tables = self._tables("train.tables.first1000q.jsonl")
        path = require(self.root / self.cfg.folder / "mlx_lora_subset" / "train.jsonl", "WikiSQL train subset")
        rows = []
        for n, record in enumerate(read_jsonl(path, ("text",)), 1):
            m = _MLX.fullmatch(record["text"])
            if not m:
                raise ValueError(f"{path}: record {n}: not in the MLX 'table/columns/Q/A' format")
            header = tables[m["table"]]
            rows.append((header, m["question"].strip(), mlx_to_sql(header, m["select"], m["where"])))
        return rows

    def source(self, header: list[str], question: str) -> tuple[str, tuple[int, int]]:
        return self.render(columns=" | ".join(header), question=question)

    def example(self, row) -> Example:
        header, question, sql = row
        text, span = self.source(header, question)
        return Example(text, " " + sql, span=span)

    def items(self, rows) -> list[EvalItem]:
        return [EvalItem(text, [sql], span=span) for text, span, sql in ((*self.source(h, q), sql) for h, q, sql in rows)]

    def score(self, predictions: list[str], items: list[EvalItem], full: bool = True) -> dict:
        from ..metrics.wikisql import logical_form_accuracy

        return {"logical_form_accuracy": logical_form_accuracy(predictions, [it.references[0] for it in items])}

    @classmethod
    def item_stats(cls, predictions: list[str], items: list[EvalItem]) -> list[list[float]]:
        from ..metrics.wikisql import item_matches

        return [[float(m), 1] for m in item_matches(predictions, [it.references[0] for it in items])]
