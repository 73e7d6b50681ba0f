"""Discrete-prompt selection (`discrete_prompt.select_prompt`): the best dev score wins, ties follow the stated rule,
every candidate is in the result, and the experiment's worked examples are E2E training pairs."""
import re

import pytest
from omegaconf import OmegaConf

from peft_repro.decoding import DecodeConfig
from peft_repro.methods import discrete_prompt
from peft_repro.tasks import build_task
from peft_repro.evaluation import Evaluator

from .conftest import DATA, CopyTask, conf, needs_data, tiny_model

DECODE = DecodeConfig(max_new_tokens=4)
CANDIDATES = list(conf("experiment/prompt_vs_emb_vs_prefix.yaml").prompt_candidates)
MR_LINE = re.compile(r"^name\[[^\]]*\](, \w[\w ]*\[[^\]]*\])*$")


def select_with_scores(tokenizer, monkeypatch, scores: dict[str, float]):
    """select_prompt over the prompts of `scores` with an evaluator that gives each its score; also returns the
    (split, prompt length) of every evaluation, in call order."""
    task = CopyTask()
    evaluator = Evaluator(task, tokenizer, task.cfg, eval_batch_size=8)
    pending = list(scores.values())
    calls = []

    def evaluate(model, split, decode, full, desc):
        calls.append((split, model.num_virtual_tokens))
        return {"exact": pending.pop(0)}, ["an output", ""], []

    monkeypatch.setattr(evaluator, "evaluate", evaluate)
    return discrete_prompt.select_prompt(lambda: tiny_model("llama"), list(scores), evaluator, DECODE), calls


def n_tokens(tokenizer, text):
    return len(tokenizer(text, add_special_tokens=False).input_ids)


@pytest.mark.parametrize("scores, best", [
    ({"table-to-text:": 0.1, "summarize": 0.7, "keep": 0.3}, "summarize"),
    ({"a": 0.2, "bb": 0.2, "the longest prompt wins": 0.9}, "the longest prompt wins"),
])
def test_the_highest_dev_score_wins_and_every_candidate_is_recorded(tokenizer, monkeypatch, scores, best):
    out, calls = select_with_scores(tokenizer, monkeypatch, scores)
    assert out["prompt"] == best and out["score"] == scores[best]
    assert out["metric"] == "exact" and out["split"] == "dev"
    assert out["rule"] == discrete_prompt.SELECTION_RULE.format(split="dev", metric="exact")
    assert out["candidates"] == [{"prompt": p, "tokens": n_tokens(tokenizer, p), "dev": {"exact": s},
                                  "empty_predictions": 1} for p, s in scores.items()]
    assert calls == [("dev", n_tokens(tokenizer, p)) for p in scores]


@pytest.mark.parametrize("scores, best", [
    ({"a longer prompt": 0.5, "short": 0.5, "x": 0.4}, "short"),  # fewer tokens beat list order
    ({"abc": 0.5, "xyz": 0.5, "pq": 0.1}, "abc"),                 # as many tokens: the earlier one
    ({"xyz": 0.5, "abc": 0.5}, "xyz"),
    ({"zero": 0.0, "one": 0.0, "two": 0.0}, "one"),               # all degenerate: still the rule, not list order
])
def test_ties_go_to_fewer_tokens_then_to_the_earlier_candidate(tokenizer, monkeypatch, scores, best):
    out, _ = select_with_scores(tokenizer, monkeypatch, scores)
    assert out["prompt"] == best and out["score"] == scores[best]


def test_empty_candidates_stop_before_any_evaluation(tokenizer):
    task = CopyTask()
    evaluator = Evaluator(task, tokenizer, task.cfg, eval_batch_size=8)

    def no_model():
        raise AssertionError("the model was loaded")

    for candidates in (["copy:", ""], []):
        with pytest.raises(ValueError):
            discrete_prompt.select_prompt(no_model, candidates, evaluator, DECODE)


class OutputLengthTask(CopyTask):
    """Scores the mean output length, so that a random model gives each prompt its own score."""
    primary_metric = "chars"

    def score(self, predictions, items, full=True):
        return {"chars": sum(map(len, predictions)) / len(predictions)}


def test_recorded_scores_are_each_prompts_own_evaluation(tokenizer):
    task = OutputLengthTask()
    evaluator = Evaluator(task, tokenizer, task.cfg, eval_batch_size=8)
    candidates = ["x", "say it", "repeat the word:", "copy:"]  # the last two tie (4.0 chars): the shorter wins
    model = tiny_model("llama")
    out = discrete_prompt.select_prompt(lambda: model, candidates, evaluator, DECODE)
    own = [evaluator.evaluate(discrete_prompt.apply(model, discrete_prompt.DiscretePromptConfig(p)), "dev", DECODE,
                              full=False, desc=p)[0] for p in candidates]
    assert [c["dev"] for c in out["candidates"]] == own
    assert len({s["chars"] for s in own}) > 1  # the prompts do differ, or this test checks nothing
    assert out["score"] == max(s["chars"] for s in own)
    # the stated rule over the scores measured here: highest, then fewer tokens, then earlier
    rank = min(range(len(candidates)), key=lambda i: (-own[i]["chars"], n_tokens(tokenizer, candidates[i]), i))
    assert out["prompt"] == candidates[rank] and rank != 0  # not the first candidate, or that goes unchecked


def demonstrations(prompt: str) -> list[tuple[str, str]]:
    """The (MR, sentence) worked examples of a prompt: an MR line followed by its sentence."""
    lines = prompt.split("\n")
    return [(line, lines[i + 1]) for i, line in enumerate(lines) if MR_LINE.match(line)]


@needs_data("e2e")
def test_the_experiments_demonstrations_are_training_pairs_in_the_source_template():
    task = build_task(conf("task/e2e.yaml"), str(DATA))
    train = set(task.rows("train"))
    held_out = {mr for split in ("dev", "test") for mr, _ in task.rows(split)}
    shots = [len(demonstrations(p)) for p in CANDIDATES]
    assert shots.count(0) >= 3 and sum(n in (1, 2) for n in shots) >= 3 and max(shots) <= 2, shots
    for prompt in CANDIDATES:
        for mr, sentence in demonstrations(prompt):
            assert (mr, sentence) in train and mr not in held_out, mr
            assert task.source(mr)[0] + sentence + "\n" in prompt  # the same template as the real sources


@pytest.mark.slow
@needs_data("e2e")
def test_the_selected_prompt_scores_above_zero_on_smollm2():
    """The degenerate baseline this replaces scored 0.0 dev BLEU with every candidate (empty outputs)."""
    from peft_repro.models import load_model

    setting = conf("setting/e2e.yaml")  # the experiment's default-scale setting
    task_cfg = OmegaConf.merge(conf("task/e2e.yaml"), {"max_eval_examples": 4})
    model, tok = load_model(conf("model/smollm2_135m.yaml"))
    evaluator = Evaluator(build_task(task_cfg, str(DATA)), tok, task_cfg, eval_batch_size=4)
    out = discrete_prompt.select_prompt(lambda: model, CANDIDATES, evaluator,
                                        DecodeConfig(**setting.task.dev_decode))
    assert out["score"] > 0.1, out
    assert out["candidates"][-1]["empty_predictions"] == 0
