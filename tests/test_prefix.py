"""The prefix family against HF PEFT, closed-form parameter counts, decoding vs a no-cache reference, infix layout,
initializations, and training end to end."""
from pathlib import Path

import pytest
import torch

from peft_repro.batching import left_pad
from peft_repro.decoding import DecodeConfig, generate
from peft_repro.methods import apply_method, embedding_only, prefix
from peft_repro.train import TrainConfig, train

from .conftest import ConstantTask, CopyTask, greedy_reference, ids, tiny_model

peft = pytest.importorskip("peft")

EOS, PAD = 2, 0
PROMPTS = ["hello world", "a", "the quick brown fox", "E2E", "name[The Vaults], eatType[pub]", "xyz xyz"]
LOGIT_TOL = 1e-5
GRAD_TOL = 1e-5


# ---------------------------------------------------------------- parity with HF PEFT


def peft_prefix(arch, k, projection, mid):
    cfg = peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=k, prefix_projection=projection,
                                  encoder_hidden_size=mid)
    return peft.get_peft_model(tiny_model(arch), cfg)


def copy_prefix_to_peft(ours, theirs):
    enc = theirs.prompt_encoder["default"]
    with torch.no_grad():
        enc.embedding.weight.copy_(ours.prefix.prefix_embedding)
        if ours.prefix.projection:
            for i in (0, 2):
                enc.transform[i].weight.copy_(ours.prefix.prefix_mlp[i].weight)
                enc.transform[i].bias.copy_(ours.prefix.prefix_mlp[i].bias)


def prefix_grads(ours, theirs):
    enc = theirs.prompt_encoder["default"]
    pairs = [(ours.prefix.prefix_embedding.grad, enc.embedding.weight.grad)]
    if ours.prefix.projection:
        for i in (0, 2):
            pairs += [(ours.prefix.prefix_mlp[i].weight.grad, enc.transform[i].weight.grad),
                      (ours.prefix.prefix_mlp[i].bias.grad, enc.transform[i].bias.grad)]
    return pairs


def max_diff(pairs):
    return max((a - b).abs().max().item() for a, b in pairs)


@pytest.mark.parametrize("projection", [False, True], ids=["direct", "mlp"])
def test_prefix_matches_hf_peft(arch, projection):
    """Same prefix weights -> equal logits and equal gradients of every prefix parameter (GQA llama included)."""
    k, mid = 4, 24
    # PEFT's P' is kv_dim wide (under GQA less than the hidden size): take the same width for the comparison
    embed = prefix.kv_geometry(tiny_model(arch).config)
    embed_dim = embed[1] * embed[2]
    ours = apply_method(tiny_model(arch), {"name": "prefix", "num_virtual_tokens": k, "projection": projection,
                                           "mid_dim": mid, "embed_dim": embed_dim})
    theirs = peft_prefix(arch, k, projection, mid)
    copy_prefix_to_peft(ours, theirs)
    x = ids()
    a = ours(x, torch.ones_like(x)).logits
    b = theirs(input_ids=x, attention_mask=torch.ones_like(x)).logits
    assert (a - b).abs().max().item() <= LOGIT_TOL
    torch.nn.functional.cross_entropy(a[:, :-1].flatten(0, 1), x[:, 1:].flatten()).backward()
    torch.nn.functional.cross_entropy(b[:, :-1].flatten(0, 1), x[:, 1:].flatten()).backward()
    assert max_diff(prefix_grads(ours, theirs)) <= GRAD_TOL
    # only the prefix trains
    assert all(p.grad is None for p in ours.model.parameters())


def test_prefix_left_padding_equals_peft_per_row(arch):
    """In a left-padded batch each row equals PEFT on that row alone (positions count real tokens only)."""
    ours = apply_method(tiny_model(arch), {"name": "prefix", "num_virtual_tokens": 3})
    theirs = peft_prefix(arch, 3, False, 8)
    copy_prefix_to_peft(ours, theirs)
    seqs = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]]
    x, mask = left_pad(seqs, PAD)
    batch_logits = ours(x, mask).logits
    for row, s in enumerate(seqs):
        t = torch.tensor([s])
        ref = theirs(input_ids=t, attention_mask=torch.ones_like(t)).logits[0]
        assert (batch_logits[row, -len(s):] - ref).abs().max().item() <= LOGIT_TOL


def test_embedding_only_matches_hf_peft_prompt_tuning(arch, tokenizer):
    """EMB-k = PEFT prompt tuning: same virtual embeddings -> equal logits and gradients."""
    text = "table-to-text:"
    k = len(tokenizer(text, add_special_tokens=False).input_ids)
    ours = apply_method(tiny_model(arch), {"name": "embedding_only", "reparam": "none", "init": "words",
                                         "init_text": text})
    assert ours.num_virtual_tokens == k
    theirs = peft.get_peft_model(tiny_model(arch), peft.PromptTuningConfig(task_type="CAUSAL_LM",
                                                                           num_virtual_tokens=k))
    enc = theirs.prompt_encoder["default"]
    with torch.no_grad():  # move away from the word init so the comparison means more
        ours.prefix_embeddings.add_(torch.randn_like(ours.prefix_embeddings) * 0.3)
        enc.embedding.weight.copy_(ours.prefix_embeddings)
    x = ids()
    a = ours(x, torch.ones_like(x)).logits
    b = theirs(input_ids=x, attention_mask=torch.ones_like(x)).logits[:, k:]
    assert a.shape == b.shape and (a - b).abs().max().item() <= LOGIT_TOL
    torch.nn.functional.cross_entropy(a[:, :-1].flatten(0, 1), x[:, 1:].flatten()).backward()
    torch.nn.functional.cross_entropy(b[:, :-1].flatten(0, 1), x[:, 1:].flatten()).backward()
    assert (ours.prefix_embeddings.grad - enc.embedding.weight.grad).abs().max().item() <= GRAD_TOL


# ---------------------------------------------------------------- parameter counts


# tests/conftest.py's TINY written out by hand: 2 layers, hidden 32, 4 heads of 8; llama has 2 kv-heads (K and V 16
# wide under GQA), GPT-2 4 (32 wide). Keys and values of one virtual token over all layers: 2 layers x (K, V) x width.
HIDDEN = 32
KV_PER_TOKEN = {"llama": 2 * 2 * 16, "gpt2": 2 * 2 * 32}


def test_parameter_counts_are_closed_forms(arch):
    """Every count against a number computed here from the tiny models' dimensions, not from the production helpers:
    a direct prefix is k x KV_PER_TOKEN; through the MLP, P' (k x hidden) + Linear(hidden, mid) + Linear(mid, all
    layers' keys and values)."""
    model = tiny_model(arch)
    assert prefix.kv_geometry(model.config) == {"llama": (2, 2, 8), "gpt2": (2, 4, 8)}[arch]
    assert prefix.hidden_size(model.config) == HIDDEN
    kv = KV_PER_TOKEN[arch]
    by_hand = {"direct": 5 * kv,  # llama 320, gpt2 640
               "mlp": 5 * HIDDEN + (HIDDEN * 16 + 16) + (16 * kv + kv)}  # llama 1776, gpt2 2864
    assert by_hand == {"llama": {"direct": 320, "mlp": 1776}, "gpt2": {"direct": 640, "mlp": 2864}}[arch]
    base = sum(p.numel() for p in model.parameters())
    for name, cfg in [("direct", {"num_virtual_tokens": 5}),
                      ("mlp", {"num_virtual_tokens": 5, "projection": True, "mid_dim": 16})]:
        adapted = apply_method(tiny_model(arch), {"name": "prefix", **cfg})
        counts = adapted.parameter_counts()
        assert counts["trainable"] == by_hand[name], name
        assert sum(p.numel() for p in adapted.parameters() if p.requires_grad) == by_hand[name], name
        assert prefix.expected_parameter_count(model, prefix.PrefixConfig(**cfg)) == by_hand[name], name
        assert counts["base"] == base
    infix = apply_method(tiny_model(arch), {"name": "infix", "num_virtual_tokens": 5})
    assert infix.parameter_counts()["trainable"] == by_hand["direct"]
    emb = apply_method(tiny_model(arch), {"name": "embedding_only", "num_virtual_tokens": 7, "reparam": "none"})
    assert emb.parameter_counts()["trainable"] == 7 * HIDDEN == \
        embedding_only.expected_parameter_count(model, embedding_only.EmbeddingOnlyConfig(7, reparam="none"))
    disc = apply_method(tiny_model(arch), {"name": "discrete_prompt", "prompt": "summarize"})
    assert disc.parameter_counts()["trainable"] == 0


def test_gqa_prefix_is_sized_by_kv_heads():
    # tiny llama: hidden 32, 4 heads of 8, 2 kv-heads -> kv_dim 16; 2 layers
    adapted = apply_method(tiny_model("llama"), {"name": "prefix", "num_virtual_tokens": 3})
    assert adapted.parameter_counts()["trainable"] == 3 * 2 * 2 * 16
    cache = adapted.initial_cache(2)
    assert cache.layers[0].keys.shape == (2, 2, 3, 8)


def test_freeze_prefix_drops_the_mlp_and_keeps_outputs(arch):
    adapted = apply_method(tiny_model(arch), {"name": "prefix", "num_virtual_tokens": 4, "projection": True,
                                              "mid_dim": 16})
    x = ids()
    before = adapted(x, torch.ones_like(x)).logits
    exported = adapted.export_prefix()
    adapted.freeze_prefix()
    assert not any("prefix_mlp" in n for n, _ in adapted.named_parameters())
    assert adapted.parameter_counts()["trainable"] == 4 * KV_PER_TOKEN[arch]  # the MLP's output only
    torch.testing.assert_close(adapted(x, torch.ones_like(x)).logits, before, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(adapted.export_prefix(), exported)


def test_prefix_dropout_only_in_training():
    adapted = apply_method(tiny_model("llama"), {"name": "prefix", "num_virtual_tokens": 4, "dropout": 0.5})
    x = ids()
    adapted.eval()
    torch.testing.assert_close(adapted(x, torch.ones_like(x)).logits, adapted(x, torch.ones_like(x)).logits)
    adapted.train()
    torch.manual_seed(0)
    a = adapted(x, torch.ones_like(x)).logits
    b = adapted(x, torch.ones_like(x)).logits
    assert not torch.allclose(a, b)


# ---------------------------------------------------------------- infix layout


def test_infix_only_changes_what_comes_after_the_source(arch):
    """[x_1..x_{s-1}, INFIX, x_s, y]: tokens before the separator are the frozen model's; a padded batch equals
    each row alone."""
    adapted = apply_method(tiny_model(arch), {"name": "infix", "num_virtual_tokens": 3})
    seqs, src = [[5, 6, 7, 8, 9, 10], [11, 12, 13], [20, 21, 22, 23]], [3, 1, 2]
    x, mask = left_pad(seqs, PAD)
    batch = adapted(x, mask, source_lens=torch.tensor(src)).logits
    for row, (s, n) in enumerate(zip(seqs, src)):
        t = torch.tensor([s])
        alone = adapted(t, torch.ones_like(t), source_lens=torch.tensor([n])).logits[0]
        assert (batch[row, -len(s):] - alone).abs().max().item() <= LOGIT_TOL
        base = adapted.model(input_ids=t).logits[0]
        torch.testing.assert_close(alone[: n - 1], base[: n - 1], atol=1e-5, rtol=1e-5)
        assert not torch.allclose(alone[n - 1:], base[n - 1:], atol=1e-2)


def test_infix_training_loss_sees_the_same_logits_as_decoding(tokenizer):
    """The logits lm_loss trains on ([pad, source, target] with source_lens) equal step-by-step decoding's."""
    from peft_repro.batching import Encoded, collate_train
    from peft_repro.decoding import _Stepper

    adapted = apply_method(tiny_model("llama"), {"name": "infix", "num_virtual_tokens": 2})
    items = [Encoded([5, 6, 7], [8, 9, 10]), Encoded([11], [12, 13, 14]), Encoded([15, 16], [17, 18, 19])]
    batch = collate_train(items, PAD)
    full = adapted(batch["input_ids"], batch["attention_mask"], logits_to_keep=4,
                   source_lens=batch["source_lens"]).logits
    src_ids, src_mask = left_pad([it.source for it in items], PAD)
    stepper = _Stepper(adapted, src_ids, src_mask)
    stepped = [stepper.logits]
    for j in range(2):
        stepped.append(stepper.step(torch.tensor([it.target[j] for it in items])))
    torch.testing.assert_close(torch.stack(stepped, 1), full[:, :3], atol=1e-5, rtol=1e-5)


def test_infix_from_words_after_a_one_token_source_is_the_frozen_lm_prompted_with_them(arch, tokenizer):
    """With a one-token source the layout [x_1..x_{s-1}, INFIX, x_s, y] is [INFIX, x_1, y]: the words' keys/values
    (computed at positions 0..n-1) are a prompt, x_1 sits at position n, so INFIX from words equals the frozen LM run
    on [words, x_1, y]. Catches an infix that is not the words' activations, a separator off by one, or positions of
    x_s not moved past the infix."""
    text = "table-to-text:"
    words = tokenizer(text, add_special_tokens=False).input_ids
    model = tiny_model(arch)
    adapted = apply_method(model, {"name": "infix", "init": "words", "init_text": text, "num_virtual_tokens": 99})
    assert adapted.num_virtual_tokens == len(words)  # the length follows the words, as for prefix-tuning
    x = ids()
    with torch.no_grad():
        ours = adapted(x, torch.ones_like(x), source_lens=torch.tensor([1, 1])).logits
        prompted = model(input_ids=torch.cat([torch.tensor([words] * 2), x], 1)).logits[:, len(words):]
        plain = model(input_ids=x).logits
        longer = adapted(x, torch.ones_like(x), source_lens=torch.tensor([4, 4])).logits
    torch.testing.assert_close(ours, prompted, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(ours, plain, atol=1e-2)  # the words do change the logits
    # a longer source: x_1..x_{s-1} never see the infix, x_s on do
    torch.testing.assert_close(longer[:, :3], plain[:, :3], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(longer[:, 3:], plain[:, 3:], atol=1e-2)


# ---------------------------------------------------------------- decoding vs a no-cache reference


METHOD_CFGS = {
    "prefix": {"name": "prefix", "num_virtual_tokens": 4},
    "prefix_mlp": {"name": "prefix", "num_virtual_tokens": 4, "projection": True, "mid_dim": 16},
    "embedding_only": {"name": "embedding_only", "num_virtual_tokens": 4, "init_std": 1.0},
    "infix": {"name": "infix", "num_virtual_tokens": 4},
    "discrete_prompt": {"name": "discrete_prompt", "prompt": "summarize"},
}


@pytest.mark.parametrize("method", list(METHOD_CFGS))
def test_greedy_decoding_equals_no_cache_reference(arch, tokenizer, method):
    torch.manual_seed(1)
    adapted = apply_method(tiny_model(arch), METHOD_CFGS[method])
    adapted.eval()
    sources = [tokenizer(p, add_special_tokens=False).input_ids for p in PROMPTS]
    ours = generate(adapted, sources, DecodeConfig(max_new_tokens=10, batch_size=4), [EOS], PAD)
    assert ours == greedy_reference(adapted, sources, 10)
    # and the adapter changes what is generated
    plain = generate(apply_method(tiny_model(arch), {"name": "full"}), sources, DecodeConfig(max_new_tokens=10),
                     [EOS], PAD)
    assert ours != plain


@pytest.mark.parametrize("method", ["prefix", "infix", "embedding_only"])
def test_beam_search_does_not_depend_on_batching(tokenizer, method):
    adapted = apply_method(tiny_model("llama"), METHOD_CFGS[method])
    adapted.eval()
    sources = [tokenizer(p, add_special_tokens=False).input_ids for p in PROMPTS]
    one = generate(adapted, sources, DecodeConfig(num_beams=3, max_new_tokens=8, batch_size=1), [EOS], PAD)
    many = generate(adapted, sources, DecodeConfig(num_beams=3, max_new_tokens=8, batch_size=6), [EOS], PAD)
    assert one == many


# ---------------------------------------------------------------- initialization


def test_prefix_from_words_equals_the_frozen_lm_prompted_with_them(arch, tokenizer):
    text = "table-to-text:"
    words = tokenizer(text, add_special_tokens=False).input_ids
    model = tiny_model(arch)
    adapted = apply_method(model, {"name": "prefix", "init": "words", "init_text": text, "num_virtual_tokens": 99})
    assert adapted.num_virtual_tokens == len(words)  # the length follows the words
    x = ids()
    with torch.no_grad():
        ours = adapted(x, torch.ones_like(x)).logits
        prompted = model(input_ids=torch.cat([torch.tensor([words] * 2), x], 1)).logits[:, len(words):]
        disc = apply_method(model, {"name": "discrete_prompt", "prompt": text})(x, torch.ones_like(x)).logits
    torch.testing.assert_close(ours, prompted, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(disc, prompted, atol=1e-5, rtol=1e-5)


def test_mlp_prefix_from_words_is_fitted_to_their_activations(tokenizer):
    model = tiny_model("gpt2")
    cfg = {"name": "prefix", "init": "words", "init_text": "elephant", "projection": True, "mid_dim": 64,
           "fit_steps": 300, "fit_lr": 1e-2}
    adapted = apply_method(model, cfg)
    target = prefix.word_activations(model, tokenizer("elephant", add_special_tokens=False).input_ids)
    assert adapted.init_fit_mse < 0.05 * target.var().item()
    torch.testing.assert_close(adapted.export_prefix(), target, atol=0.3 * target.std().item(), rtol=0)


def test_embedding_only_from_words_uses_their_embeddings(tokenizer):
    model = tiny_model("llama")
    adapted = apply_method(model, {"name": "embedding_only", "reparam": "none", "init": "words", "init_text": "banana"})
    words = tokenizer("banana", add_special_tokens=False).input_ids
    torch.testing.assert_close(adapted.prefix_embeddings, model.get_input_embeddings().weight[words])
    x = ids()
    with torch.no_grad():
        prompted = model(input_ids=torch.cat([torch.tensor([words] * 2), x], 1)).logits[:, len(words):]
        torch.testing.assert_close(adapted(x, torch.ones_like(x)).logits, prompted, atol=1e-5, rtol=1e-5)


def test_random_init_distributions():
    torch.manual_seed(0)
    adapted = apply_method(tiny_model("llama"), {"name": "prefix", "num_virtual_tokens": 50})
    w = adapted.prefix.prefix_embedding
    assert abs(w.mean().item()) < 0.05 and abs(w.std().item() - 1.0) < 0.05  # N(0, 1)
    model = tiny_model("llama")
    emb = apply_method(model, {"name": "embedding_only", "num_virtual_tokens": 200, "reparam": "none"})
    table_std = model.get_input_embeddings().weight.std().item()
    assert abs(emb.prefix_embeddings.std().item() / table_std - 1) < 0.1


def test_random_controls_of_equal_length_are_distinct_draws(tokenizer):
    """prefix_init's random control of each word: k from the word, values from a draw of its own (session 12 found
    the controls of equal length were one run); reproducible, and the run's RNG stream goes on unchanged."""
    words = ["active", "divide"]
    assert len({len(tokenizer(w, add_special_tokens=False).input_ids) for w in words}) == 1

    def control(word, seed=0):
        model = tiny_model("llama")
        torch.manual_seed(seed)  # as a run: its seed, then the method
        adapted = apply_method(model, {"name": "prefix", "init": "random", "init_text": word})
        return adapted.export_prefix(), torch.rand(3)  # the prefix, then the next numbers of the run's stream

    (active, after_a), (divide, _) = control("active"), control("divide")
    assert active.shape == divide.shape and not torch.equal(active, divide)
    torch.testing.assert_close(control("active")[0], active, rtol=0, atol=0)
    assert not torch.equal(control("active", seed=1)[0], active)
    torch.manual_seed(0)
    torch.testing.assert_close(after_a, torch.rand(3), rtol=0, atol=0)  # the draw left the run's stream alone


def test_bad_configs_are_clear_errors():
    with pytest.raises(ValueError, match="num_virtual_tokens"):
        apply_method(tiny_model("llama"), {"name": "prefix", "num_virtual_tokens": 0})
    with pytest.raises(ValueError, match="init_text"):
        apply_method(tiny_model("llama"), {"name": "infix", "init": "words"})
    with pytest.raises(ValueError, match="method embedding_only has no option projection"):
        apply_method(tiny_model("llama"), {"name": "embedding_only", "projection": True})


def test_bf16_autocast_runs(arch):
    x, mask = left_pad([[5, 6, 7], [8, 9]], PAD)
    for cfg in METHOD_CFGS.values():
        adapted = apply_method(tiny_model(arch), cfg)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = adapted(x, mask, logits_to_keep=2, source_lens=torch.tensor([2, 1])).logits
        assert torch.isfinite(out.float()).all()


# ---------------------------------------------------------------- training end to end


@pytest.mark.parametrize("method", ["prefix", "prefix_mlp", "embedding_only", "infix"])
def test_training_decreases_the_loss(tokenizer, tmp_path: Path, method):
    task = ConstantTask()
    cfg = dict(METHOD_CFGS[method])
    if method == "embedding_only":  # the direct embeddings; the MLP needs a lower lr (tests/test_embedding_only.py)
        cfg.update(init_std=None, reparam="none")
    adapted = apply_method(tiny_model("llama"), cfg)
    before = {k: v.clone() for k, v in adapted.trainable_state_dict().items()}
    tcfg = TrainConfig(epochs=5, batch_size=4, lr=0.3, warmup_steps=2, precision="fp32", log_every=1, seed=0,
                       select="final")
    out = train(adapted, tokenizer, task, task.cfg, tcfg, DecodeConfig(max_new_tokens=2),
                DecodeConfig(max_new_tokens=2), tmp_path)
    losses = [h["loss"] for h in out["history"] if "loss" in h]
    assert len(losses) == 10 and losses[-1] < 0.75 * losses[0], losses
    assert all(not torch.equal(before[k], v) for k, v in adapted.trainable_state_dict().items())
    assert all(not p.requires_grad for p in adapted.model.parameters())


def test_discrete_prompt_runs_through_the_trainer_without_training(tokenizer, tmp_path: Path):
    task = CopyTask()
    adapted = apply_method(tiny_model("llama"), {"name": "discrete_prompt", "prompt": "copy:"})
    out = train(adapted, tokenizer, task, task.cfg, TrainConfig(precision="fp32"), DecodeConfig(max_new_tokens=6),
                DecodeConfig(max_new_tokens=6), tmp_path)
    assert out["steps"] == 0 and "exact" in out["test"]


@pytest.mark.slow
def test_smollm2_prefix_family():
    """SmolLM2 (30 layers, 3 kv-heads of 64): PEFT parity, and a prefix from words = the frozen LM prompted."""
    from peft_repro.models import load_model
    from peft_repro.evaluation import stop_token_ids

    from .conftest import conf

    model, tok = load_model(conf("model/smollm2_135m.yaml"))
    assert prefix.kv_geometry(model.config) == (30, 3, 64)
    stops = stop_token_ids(tok, True)
    src = [tok(" France is", add_special_tokens=False).input_ids]
    [plain] = generate(apply_method(model, {"name": "zero_shot"}), src, DecodeConfig(max_new_tokens=4), stops,
                       tok.pad_token_id)
    for cfg in [{"name": "prefix", "init_text": "The capital of"}, {"name": "infix", "init_text": "The capital of",
                                                                     "projection": False},
                {"name": "discrete_prompt", "prompt": "The capital of"}]:
        adapted = apply_method(model, cfg, tok)
        [out] = generate(adapted, src, DecodeConfig(max_new_tokens=4), stops, tok.pad_token_id)
        if cfg["name"] != "infix":
            assert "Paris" in tok.decode(out), (cfg, tok.decode(out))
        else:  # the words' activations sit after the source, not a prompt: they change what follows, not to Paris
            assert out != plain and "Paris" not in tok.decode(out), (tok.decode(out), tok.decode(plain))
            # the source's tokens before the separator (its last token) are the frozen model's
            x = torch.tensor(src)
            with torch.no_grad():
                ours_src = adapted(x, torch.ones_like(x), source_lens=torch.tensor([x.shape[1]])).logits[0]
                frozen_src = model(input_ids=x).logits[0]
            torch.testing.assert_close(ours_src[:-1], frozen_src[:-1], atol=1e-4, rtol=1e-4)
            assert not torch.allclose(ours_src[-1], frozen_src[-1], atol=1e-2)
            # after a one-token source, [INFIX, x_1] is the words as a prompt: the discrete prompt's continuation
            last = [src[0][-1:]]
            [alone] = generate(adapted, last, DecodeConfig(max_new_tokens=4), stops, tok.pad_token_id)
            [prompted] = generate(apply_method(model, {"name": "discrete_prompt", "prompt": "The capital of"}), last,
                                  DecodeConfig(max_new_tokens=4), stops, tok.pad_token_id)
            assert alone == prompted, (tok.decode(alone), tok.decode(prompted))
    ours = apply_method(model, {"name": "prefix", "num_virtual_tokens": 3})
    base2, _ = load_model(conf("model/smollm2_135m.yaml"))
    theirs = peft.get_peft_model(base2, peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3))
    with torch.no_grad():
        theirs.prompt_encoder["default"].embedding.weight.copy_(ours.prefix.prefix_embedding * 0.1)
        ours.prefix.prefix_embedding.mul_(0.1)
    x = torch.tensor([tok("name[The Eagle]\n", add_special_tokens=False).input_ids])
    with torch.no_grad():
        diff = (ours(x, torch.ones_like(x)).logits - theirs(input_ids=x, attention_mask=torch.ones_like(x)).logits)
    assert diff.abs().max().item() <= 1e-4
