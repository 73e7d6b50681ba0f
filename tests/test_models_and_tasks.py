import pytest
import torch
from omegaconf import OmegaConf

from peft_repro.batching import encode_examples, encode_source
from peft_repro.decoding import DecodeConfig, generate
from peft_repro.methods import apply_method
from peft_repro.models import load_model, role_targets, smollm2_gguf
from peft_repro.tasks import DataMissing, build_task
from peft_repro.evaluation import Evaluator, stop_token_ids

from .conftest import DATA, conf, needs_data


def task(name, **over):
    return build_task(OmegaConf.merge(conf(f"task/{name}.yaml"), over), str(DATA))


def test_byte_tokenizer_round_trips(tokenizer):
    text = "name[Café Adriatic], priceRange[£20-25]\n"
    ids = tokenizer(text, add_special_tokens=False).input_ids
    assert tokenizer.decode(ids) == text and max(ids) < 259
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)


@needs_data("e2e", "testset_w_refs.csv")
def test_e2e_groups_references_per_mr():
    t = task("e2e")
    test = t.eval_items("test")
    assert len(test) == 630 and sum(len(it.references) for it in test) == 4693
    assert test[0].source.startswith("name[") and test[0].source.endswith("\n")
    assert len(t.eval_items("dev")) == 547
    train = task("e2e", max_train_examples=100).train_examples()
    assert len(train) == 100 and all("\n" not in ex.target for ex in train)


@needs_data("mnli", "train_subset.jsonl.gz")
def test_mnli_held_out_dev_is_disjoint_and_fixed():
    t = task("mnli")
    dev = t.eval_items("dev")
    train = t.train_examples()
    assert len(dev) == 2000 and len(train) == 34290 - 2000
    assert not {it.source for it in dev} & {ex.source for ex in train}
    assert [it.source for it in task("mnli").eval_items("dev")[:5]] == [it.source for it in dev[:5]]
    assert len(t.eval_items("test")) == 9815
    assert {ex.target for ex in train} == {" True", " Neither", " False"}


def test_missing_files_name_the_path(tmp_path):
    t = build_task(conf("task/e2e.yaml"), str(tmp_path))
    with pytest.raises(DataMissing, match=str(tmp_path / "e2e" / "trainset.csv")):
        t.train_examples()


@pytest.mark.parametrize("content, message", [
    ("meaning,text\na,b\n", "expected columns mr,ref, found \\['meaning', 'text'\\]"),
    ('mr,ref\n"name[A]",Good.\n"name[B], food[Th', ":3: the file ends in the middle of a line"),  # cut mid-row
    ('mr,ref\n"name[A]",Good.\n"name[B]"\n', ":3: expected 2 fields with mr, ref filled"),  # a field missing
    ('mr,ref\n"name[A]",Good.\n"name[B]",\n', ":3: expected 2 fields with mr, ref filled"),  # an empty field
    ('mr,ref\n"name[A]",Good.,extra\n', ":2: expected 2 fields"),
])
def test_malformed_csv_is_a_clear_error_naming_file_and_line(tmp_path, content, message):
    (tmp_path / "e2e").mkdir()
    (tmp_path / "e2e" / "trainset.csv").write_text(content)
    with pytest.raises(ValueError, match=str(tmp_path / "e2e" / "trainset.csv") + ".*" + message):
        build_task(conf("task/e2e.yaml"), str(tmp_path)).train_examples()


@pytest.mark.parametrize("content, message", [
    ('{"document": "a", "summary": "b", "source_repo": "x"}\n{"document": "c", "sum', ":2: the file ends in the middle"),
    ('{"document": "a", "summary": "b", "source_repo": "x"}\n{"document": "c"\n', ":2: not a JSON record"),
    ('{"document": "a", "source_repo": "x"}\n', ":1: missing summary"),
])
def test_malformed_jsonl_is_a_clear_error_naming_file_and_line(tmp_path, content, message):
    (tmp_path / "xsum").mkdir()
    (tmp_path / "xsum" / "test.jsonl").write_text(content)
    with pytest.raises(ValueError, match=str(tmp_path / "xsum" / "test.jsonl") + message):
        build_task(conf("task/xsum.yaml"), str(tmp_path)).eval_items("test")


@pytest.mark.slow
def test_smollm2_loads_from_the_wheel_and_speaks():
    assert smollm2_gguf().suffix == ".gguf"
    model, tok = load_model(conf("model/smollm2_135m.yaml"))
    assert model.config.model_type == "llama" and model.config.num_key_value_heads == 3
    assert tok.eos_token_id == 2 and tok.pad_token_id is not None
    assert {t.name.split(".")[-1] for t in role_targets(model, ["q", "k", "v", "o"])} == \
        {"q_proj", "k_proj", "v_proj", "o_proj"}
    adapted = apply_method(model, {"name": "lora", "r": 2, "targets": ["q", "v"]})
    src = tok("The capital of France is", add_special_tokens=False).input_ids
    [out] = generate(adapted, [src], DecodeConfig(max_new_tokens=4), stop_token_ids(tok, True), tok.pad_token_id)
    assert "Paris" in tok.decode(out)


@pytest.mark.slow
@needs_data("mnli", "dev_matched.jsonl")
def test_smollm2_mnli_label_scoring_runs():
    model, tok = load_model(conf("model/smollm2_135m.yaml"))
    adapted = apply_method(model, {"name": "full"})
    t = task("mnli", max_eval_examples=8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        scores, preds, items = Evaluator(t, tok, t.cfg, 8).evaluate(adapted, "test", None, True, "t")
    assert len(preds) == 8 and set(preds) <= {0, 1, 2} and 0 <= scores["accuracy"] <= 1


@needs_data("xsum", "test.jsonl")
def test_xsum_partition_is_disjoint_and_documented_sizes():
    t = task("xsum")
    train, dev, test = t.train_examples(), t.eval_items("dev"), t.eval_items("test")
    assert (len(train), len(dev), len(test)) == (810, 100, 1000)
    sources = [{ex.source for ex in train}, {it.source for it in dev}, {it.source for it in test}]
    assert not (sources[0] & sources[1] or sources[0] & sources[2] or sources[1] & sources[2])
    assert all(ex.target.startswith(" ") for ex in train) and test[0].source.endswith("\nSummary:")
    perfect = t.score([it.references[0] for it in test[:5]], test[:5])
    assert perfect == {"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0}


@needs_data("wikisql", "dev.tables.jsonl")
def test_wikisql_split_is_table_disjoint_and_targets_score_perfectly():
    t = task("wikisql")
    train, dev, test = t.train_examples(), t.eval_items("dev"), t.eval_items("test")
    assert len(train) > 1000 and len(dev) > 500 and len(test) > 2500
    assert len(train) - 1000 + len(dev) + len(test) == 8421
    assert not {it.source for it in test} & {ex.source for ex in train}
    assert all(ex.target.startswith(" SELECT ") and " FROM table" in ex.target for ex in train)
    assert t.score([it.references[0] for it in test[:20]], test[:20]) == {"logical_form_accuracy": 1.0}



def test_wikisql_sql_forms():
    from peft_repro.tasks.wikisql import mlx_to_sql, to_sql

    header = ["Model", "Manufacturer", "Count"]
    assert mlx_to_sql(header, "COUNT Manufacturer", "Model = 'GE40LFR'") == \
        "SELECT COUNT(Manufacturer) FROM table WHERE Model = 'GE40LFR'"
    assert mlx_to_sql(header, "Count", None) == "SELECT Count FROM table"  # a column named like an aggregate
    assert to_sql(header, {"sel": 1, "agg": 3, "conds": [[0, 0, "GE40LFR"], [2, 1, 3]]}) == \
        "SELECT COUNT(Manufacturer) FROM table WHERE Model = 'GE40LFR' AND Count > '3'"


@pytest.mark.parametrize("name,pool", [("e2e", 42061), ("xsum", 810)])
def test_committed_low_data_ids_are_what_the_sampler_draws(name, pool):
    import json

    from peft_repro.tasks.low_data import ids_path, sample

    committed = json.loads(ids_path(name).read_text())
    assert committed == sample(name, pool)
    for size, subsets in committed["subsets"].items():
        assert len(subsets) == 5
        for s in subsets:
            assert len(s["train"]) == int(size) and len(s["dev"]) == round(0.3 * int(size))
            assert not set(s["train"]) & set(s["dev"])


@needs_data("e2e", "trainset.csv")
def test_low_data_subset_replaces_train_and_dev():
    t = task("e2e", low_data={"size": 50, "subset": 2})
    train, dev = t.train_examples(), t.eval_items("dev")
    assert len(train) == 50
    assert sum(len(it.references) for it in dev) == 15  # 15 dev pairs, grouped by MR
    other = task("e2e", low_data={"size": 50, "subset": 3}).train_examples()
    assert [ex.target for ex in train] != [ex.target for ex in other]
    with pytest.raises(ValueError, match="no subset 7"):
        task("e2e", low_data={"size": 50, "subset": 7}).train_examples()


@pytest.mark.parametrize("name, file, document_field", [
    ("e2e", "testset_w_refs.csv", "mr"), ("xsum", "test.jsonl", "document"),
    ("mnli", "dev_matched.jsonl", "premise"), ("wikisql", "dev.jsonl", "columns")])
def test_over_long_sources_lose_document_tokens_never_the_template(name, file, document_field, tokenizer):
    """Truncation keeps the template's head and tail (XSum's "Summary:" cue, MNLI's question, WikiSQL's question and
    "SQL:"), and cuts the document; the byte tokenizer makes every character one token."""
    if not (DATA / name / file).exists():
        pytest.skip(f"data not found: {DATA / name / file}")
    t = task(name)
    item = max(t.eval_items("test")[:50], key=lambda it: it.span[1] - it.span[0])
    head, tail = item.source[:item.span[0]], item.source[item.span[1]:]
    limit = len(head) + len(tail) + 5
    ids = encode_source(tokenizer, item.source, limit, item.span)
    text = tokenizer.decode(ids)
    assert len(ids) == limit and text == head + item.source[item.span[0]:item.span[0] + 5] + tail
    assert t.document_field == document_field and tail  # E2E keeps its "\n", XSum "\nSummary:", ...
    example = t.example(t.rows("test")[0])
    example_tail = example.source[example.span[1]:]
    [encoded] = encode_examples([example], tokenizer, example.span[0] + len(example_tail) + 3, None, append_eos=False)
    assert tokenizer.decode(encoded.source).endswith(example.source[example.span[0]:][:3] + example_tail)
    with pytest.raises(ValueError, match="template alone is longer"):
        encode_source(tokenizer, item.source + "?", len(head) + len(tail), (item.span[0], item.span[1]))


def test_sources_that_fit_are_encoded_whole(tokenizer):
    assert encode_source(tokenizer, "abc\nSummary:", 12, (0, 3)) == tokenizer("abc\nSummary:").input_ids
    assert tokenizer.decode(encode_source(tokenizer, "abcdef\nSummary:", 11, (0, 6))) == "ab\nSummary:"


@needs_data("mnli", "dev_matched.jsonl")
def test_label_scoring_in_length_sorted_batches_equals_one_item_at_a_time(tokenizer):
    from .conftest import tiny_model

    adapted = apply_method(tiny_model("llama"), {"name": "full"})
    t = task("mnli", max_eval_examples=24)
    items = t.eval_items("test")
    assert len({len(it.source) for it in items}) > 10  # lengths differ: sorting reorders the batches
    # byte labels of one token (one forward per batch) and of two (label tokens scored): random weights then
    # predict more than one label (MNLI's words, 5-9 bytes, all go to the shortest)
    for labels in (["a", "b", "c"], ["ab", "ba", "cc"]):
        def evaluator(batch_size):
            e = Evaluator(t, tokenizer, t.cfg, batch_size)
            e.label_ids = [tokenizer(w, add_special_tokens=False).input_ids for w in labels]
            return e
        batched = evaluator(8).predict(adapted, items)
        alone = [evaluator(1).predict(adapted, [it])[0] for it in items]
        assert batched == alone and len(set(alone)) > 1, labels
