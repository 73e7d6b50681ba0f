"""Methods own their parts (methods/base.py): the names of their parameters inside the base model and their counts,
their PEFT counterpart, their pre-training hook (a discrete prompt picks its prompt on dev), what a run's record
keeps of them (the real prefix length), the tokenizer they are given, and their configs (prefix_mlp and infix build on
conf/method/prefix.yaml)."""
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from peft_repro.decoding import DecodeConfig
from peft_repro.evaluation import Evaluator
from peft_repro.export import exportable_methods
from peft_repro.methods import apply_method, discrete_prompt
from peft_repro.methods.prefix import PrefixConfig
from peft_repro.methods.prefix_fused import FusedPrefix
from peft_repro.models import load_model

from .conftest import REPO, CopyTask, conf, tiny_model


def n_tokens(tokenizer, text):
    return len(tokenizer(text, add_special_tokens=False).input_ids)


def test_base_counts_leave_out_the_methods_own_parameters(arch):
    """LoRA's layers sit inside the base model (its `trainable_prefix` "lora_" tells them apart); the prefix family's
    parameters sit beside it; under full fine-tuning the base is what trains."""
    unadapted = sum(p.numel() for p in tiny_model(arch).parameters())
    for cfg in [{"name": "lora", "r": 2, "targets": ["q", "v", "mlp"]}, {"name": "prefix", "projection": True},
                {"name": "embedding_only"}, {"name": "infix"}, {"name": "discrete_prompt"}, {"name": "zero_shot"}]:
        counts = apply_method(tiny_model(arch), cfg).parameter_counts()
        assert counts["base"] == unadapted, cfg
    lora = apply_method(tiny_model(arch), {"name": "lora", "r": 2})
    assert lora.trainable_prefix == "lora_" and all("lora_" in n for n, p in lora.named_parameters()
                                                    if p.requires_grad)
    full = apply_method(tiny_model(arch), {"name": "full"}).parameter_counts()
    assert full["trainable"] == full["base"] == full["stored"] == unadapted and full["trainable_pct"] == 100.0


def test_the_record_keeps_the_real_prefix_length(tokenizer):
    """Init words set k: the record's num_virtual_tokens is their token count (alone and as a fused cell), not the
    configured 10."""
    k = n_tokens(tokenizer, "elephant")
    for cfg in [{"name": "prefix"}, {"name": "prefix", "init": "random"}, {"name": "infix"},
                {"name": "embedding_only", "init": "words"}]:
        adapted = apply_method(tiny_model("llama"), {**cfg, "init_text": "elephant", "num_virtual_tokens": 10},
                               tokenizer)
        assert adapted.record_fields() == {"num_virtual_tokens": k}, cfg
    fused = FusedPrefix(tiny_model("llama"), [(PrefixConfig(init_text="elephant"), 0),
                                              (PrefixConfig(num_virtual_tokens=3), 1)], tokenizer)
    assert [fused.cell_record_fields(i) for i in range(2)] == [{"num_virtual_tokens": k}, {"num_virtual_tokens": 3}]
    assert apply_method(tiny_model("llama"), {"name": "lora"}).record_fields() == {"num_virtual_tokens": 0}
    bart, _ = load_model(conf("model/tiny_bart.yaml"))  # encoder-decoder: k positions in each part's cache
    assert apply_method(bart, {"name": "prefix", "num_virtual_tokens": 4}).record_fields() == {"num_virtual_tokens": 4}


class TwoTokens:
    """A tokenizer that reads every text as two tokens."""

    def __call__(self, text, add_special_tokens=False):
        return type("Encoding", (), {"input_ids": [65, 66]})()


def test_methods_read_words_with_the_tokenizer_they_are_given():
    for cfg in [{"name": "prefix", "init_text": "elephant"}, {"name": "embedding_only", "init": "words",
                                                               "init_text": "elephant"},
                {"name": "discrete_prompt", "prompt": "elephant"}]:
        assert apply_method(tiny_model("llama"), cfg, TwoTokens()).num_virtual_tokens == 2, cfg
    model, _ = load_model(conf("model/tiny_llama.yaml"))
    assert not any(name.startswith("_peft_repro") for name in vars(model))  # no tokenizer hidden on the model


def prompt_evaluator(tokenizer, monkeypatch, scores: dict[str, float]):
    """An Evaluator whose dev evaluation gives each prompt (known by its length in tokens) its score."""
    task = CopyTask()
    evaluator = Evaluator(task, tokenizer, task.cfg, eval_batch_size=8)
    by_length = {n_tokens(tokenizer, p): s for p, s in scores.items()}

    def evaluate(model, split, decode, full, desc):
        return {"exact": by_length[model.num_virtual_tokens]}, ["an output"], []

    monkeypatch.setattr(evaluator, "evaluate", evaluate)
    return evaluator


def test_a_discrete_prompt_picks_its_prompt_on_dev_before_training(tokenizer, monkeypatch):
    scores = {"copy:": 0.2, "repeat the word:": 0.9, "say it": 0.5}
    evaluator = prompt_evaluator(tokenizer, monkeypatch, scores)
    model = tiny_model("llama")
    adapted = apply_method(model, {"name": "discrete_prompt", "prompt": "x", "candidates": list(scores)}, tokenizer)
    assert adapted.record_fields() == {"num_virtual_tokens": 1, "prompt_selection": None}
    adapted.prepare(evaluator, DecodeConfig(max_new_tokens=4))
    fields = adapted.record_fields()
    assert fields["prompt_selection"]["prompt"] == adapted.prompt == "repeat the word:"
    assert [c["prompt"] for c in fields["prompt_selection"]["candidates"]] == list(scores)
    assert fields["num_virtual_tokens"] == n_tokens(tokenizer, "repeat the word:")
    chosen = discrete_prompt.apply(model, discrete_prompt.DiscretePromptConfig("repeat the word:"), tokenizer)
    torch.testing.assert_close(adapted.prompt_kv, chosen.prompt_kv, atol=0, rtol=0)  # as if configured so

    plain = apply_method(tiny_model("llama"), {"name": "lora"})
    plain.prepare(evaluator, None)  # the other methods have nothing to choose
    alone = apply_method(tiny_model("llama"), {"name": "discrete_prompt", "prompt": "copy:"}, tokenizer)
    alone.prepare(evaluator, None)
    assert alone.prompt == "copy:" and alone.record_fields()["prompt_selection"] is None


def test_peft_export_is_declared_by_the_method():
    assert exportable_methods() == {"lora", "prefix", "embedding_only"}
    infix = apply_method(tiny_model("llama"), {"name": "infix", "num_virtual_tokens": 2})
    assert infix.peft_type is None  # a PrefixAdapted, but PEFT has no infix


def composed_method(*overrides):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides))
    return OmegaConf.to_container(cfg.method, resolve=True)


@pytest.mark.parametrize("experiment", [[], ["+experiment=e2e_main", "scale=paper"]], ids=["bare", "e2e_main_paper"])
def test_prefix_mlp_and_infix_build_on_prefix(experiment):
    """conf/method/prefix_mlp.yaml and infix.yaml are prefix.yaml plus their own keys; an experiment's
    method_settings.prefix (e2e_main paper: k=5) reaches prefix and prefix_mlp, and infix only through
    method_settings.infix."""
    prefix = composed_method(*experiment, "method=prefix")
    assert composed_method(*experiment, "method=prefix_mlp") == {**prefix, "projection": True}
    assert composed_method(*experiment, "method=infix") == {**prefix, "name": "infix", "projection": True,
                                                            "num_virtual_tokens": 10}
    assert prefix["num_virtual_tokens"] == (5 if experiment else 10)
