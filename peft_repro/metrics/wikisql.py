"""WikiSQL logical-form accuracy: exact match of normalized SQL, WHERE conditions in any order.

Queries look like WikiSQL's human-readable form, ``SELECT count(col) FROM table WHERE col1 = v1 AND col2 > v2``.
Both sides are lowercased; whitespace is collapsed (also around operators and parentheses); quotes around values
and column names are dropped, curly quotes included; trailing ``;`` and ``.`` are stripped; and the WHERE
conditions are compared as a multiset. Values are unquoted in WikiSQL, so an `` and `` inside a value is told apart
from the conjunction by the operator that every condition has. A query that does not parse as
SELECT ... FROM ... [WHERE ...] is compared as the normalized string.
"""
from __future__ import annotations

import re

QUOTES = "\"'`\u2018\u2019\u201c\u201d"
_OPERATOR = re.compile(r"\s*(<=|>=|!=|=|<|>)\s*")
_QUERY = re.compile(r"select (?P<select>.+?) from (?P<table>\S+)(?: where (?P<where>.+))?", re.S)
_CONDITION = re.compile(r"(?P<column>.+?) (?P<op><=|>=|!=|=|<|>) (?P<value>.*)", re.S)


def item_matches(pred_sql: list[str], gold_sql: list[str]) -> list[bool]:
    """Whether each prediction is the gold query's logical form."""
    return [canonical(p) == canonical(g) for p, g in zip(pred_sql, gold_sql)]


def logical_form_accuracy(pred_sql: list[str], gold_sql: list[str]) -> float:
    """Fraction of predicted queries equal to the gold query after normalization."""
    if len(pred_sql) != len(gold_sql):
        raise ValueError(f"{len(pred_sql)} predicted queries for {len(gold_sql)} gold queries")
    if not gold_sql:
        raise ValueError("nothing to score")
    return sum(item_matches(pred_sql, gold_sql)) / len(gold_sql)


def canonical(sql: str):
    """A comparable form: (select, table, sorted conditions), or the normalized text if it does not parse."""
    text = normalize(sql)
    query = _QUERY.fullmatch(text)
    if not query:
        return text
    conditions = _conditions(query["where"]) if query["where"] else []
    return _unquote(query["select"]), query["table"], tuple(sorted(conditions))


def normalize(sql: str) -> str:
    text = " ".join(sql.lower().split()).rstrip(" ;.")
    text = _OPERATOR.sub(r" \1 ", text)
    text = re.sub(r"\s*\(\s*", "(", text)
    text = re.sub(r"\s*\)", ")", text)
    return " ".join(text.split())


def _conditions(where: str) -> list[tuple[str, str, str]]:
    # a piece without an operator is the tail of the previous value ("tom and jerry")
    conditions: list[str] = []
    for piece in where.split(" and "):
        if conditions and not _OPERATOR.search(piece):
            conditions[-1] += " and " + piece
        else:
            conditions.append(piece)
    parsed = []
    for condition in conditions:
        match = _CONDITION.fullmatch(condition)
        parsed.append((_unquote(match["column"]), match["op"], _unquote(match["value"])) if match
                      else (condition, "", ""))
    return parsed


def _unquote(text: str) -> str:
    text = re.sub(rf"\([{QUOTES}](.*)[{QUOTES}]\)$", r"(\1)", text.strip())  # count(`col`)
    if len(text) >= 2 and text[0] in QUOTES and text[-1] in QUOTES:
        text = text[1:-1].strip()
    return text
