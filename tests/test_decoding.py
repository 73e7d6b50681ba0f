import pytest
import torch

from peft_repro.batching import left_pad
from peft_repro.decoding import DecodeConfig, generate
from peft_repro.methods import apply_method

from .conftest import tiny_model

EOS, PAD = 2, 0
PROMPTS = ["hello world", "a", "the quick brown fox", "E2E", "name[The Vaults], eatType[pub]", "xyz xyz"]


def eos_prone_model(arch, seed=0):
    """A random model whose eos logit is raised, so some sequences stop early and others run to the limit."""
    model = tiny_model(arch, seed)
    with torch.no_grad():
        model.get_output_embeddings().weight[EOS] *= 6.0
    return model


def hf_generate(model, sources, cfg: DecodeConfig):
    ids, mask = left_pad(sources, PAD)
    out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, num_beams=cfg.num_beams,
                         max_new_tokens=cfg.max_new_tokens, min_new_tokens=cfg.min_new_tokens,
                         length_penalty=cfg.length_penalty, early_stopping=cfg.early_stopping,
                         eos_token_id=EOS, pad_token_id=PAD)
    rows = [row[ids.shape[1]:] for row in out.tolist()]
    return [row[: row.index(EOS)] if EOS in row else row for row in rows]


CONFIGS = [
    DecodeConfig(num_beams=1, max_new_tokens=20),
    DecodeConfig(num_beams=1, max_new_tokens=20, min_new_tokens=5),
    DecodeConfig(num_beams=4, max_new_tokens=20),
    DecodeConfig(num_beams=5, max_new_tokens=20, length_penalty=0.8, min_new_tokens=3),
    DecodeConfig(num_beams=3, max_new_tokens=16, length_penalty=2.0, early_stopping=True),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"beams{c.num_beams}-lp{c.length_penalty}-min{c.min_new_tokens}")
@pytest.mark.parametrize("seed", [0, 1])
def test_equals_transformers_generate(arch, tokenizer, cfg, seed):
    model = eos_prone_model(arch, seed)
    sources = [tokenizer(p, add_special_tokens=False).input_ids for p in PROMPTS]
    cfg.batch_size = 4  # several batches, with padding inside each
    ours = generate(apply_method(model, {"name": "full"}), sources, cfg, [EOS], PAD)
    assert ours == hf_generate(model, sources, cfg)
    lengths = {len(o) for o in ours}
    assert len(lengths) > 1, "the test needs outputs of different lengths to mean something"


def test_results_do_not_depend_on_batching(tokenizer):
    model = apply_method(eos_prone_model("llama"), {"name": "full"})
    sources = [tokenizer(p, add_special_tokens=False).input_ids for p in PROMPTS]
    one = generate(model, sources, DecodeConfig(num_beams=3, max_new_tokens=12, batch_size=1), [EOS], PAD)
    many = generate(model, sources, DecodeConfig(num_beams=3, max_new_tokens=12, batch_size=6), [EOS], PAD)
    assert one == many


@pytest.mark.parametrize("beams", [1, 3])
def test_no_repeat_ngram(tokenizer, beams):
    model = apply_method(tiny_model("llama"), {"name": "full"})  # a flat random model repeats itself
    sources = [tokenizer(p, add_special_tokens=False).input_ids for p in PROMPTS]
    plain = generate(model, sources, DecodeConfig(num_beams=beams, max_new_tokens=24), [EOS], PAD)
    assert any(len(set(zip(o, o[1:]))) < len(o) - 1 for o in plain), "expected repeats without the constraint"
    out = generate(model, sources, DecodeConfig(num_beams=beams, max_new_tokens=24, no_repeat_ngram_size=2),
                   [EOS], PAD)
    for o in out:
        bigrams = list(zip(o, o[1:]))
        assert len(bigrams) == len(set(bigrams))


def test_several_stop_tokens(tokenizer):
    model = apply_method(eos_prone_model("llama"), {"name": "full"})
    sources = [tokenizer(p, add_special_tokens=False).input_ids for p in PROMPTS]
    free = generate(model, sources, DecodeConfig(max_new_tokens=20), [EOS], PAD)
    stop = next(t for o in free for t in o)  # a token the model does produce
    out = generate(model, sources, DecodeConfig(max_new_tokens=20), [EOS, stop], PAD)
    assert all(stop not in o for o in out)
    assert any(len(a) < len(b) for a, b in zip(out, free))


def test_bad_decode_config():
    with pytest.raises(ValueError):
        DecodeConfig(min_new_tokens=10, max_new_tokens=5)
