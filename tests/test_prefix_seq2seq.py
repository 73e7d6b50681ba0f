"""Encoder-decoder prefixes (BART, T5): PEFT parity of the decoder part, decoding vs a no-cache reference, layout,
parameter counts and training through the shared trainer."""
from pathlib import Path

import pytest
import torch

from peft_repro.batching import left_pad
from peft_repro.decoding import DecodeConfig, generate
from peft_repro.methods import apply_method, prefix, prefix_seq2seq
from peft_repro.models import _random_model
from peft_repro.train import TrainConfig, train

from .conftest import ConstantTask, greedy_reference

peft = pytest.importorskip("peft")

EOS, PAD = 2, 0
TINY = {
    "bart": dict(d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
                 encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=256, init_std=0.2, dropout=0.0,
                 attention_dropout=0.0, activation_dropout=0.0),
    "t5": dict(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4, initializer_factor=1.0,
               dropout_rate=0.0),
}
PROMPTS = ["hello world", "a", "the quick brown fox", "E2E", "name[The Vaults], eatType[pub]", "xyz xyz"]


@pytest.fixture(params=["bart", "t5"])
def arch(request):
    return request.param


def tiny(arch, seed=0):
    model = _random_model(arch, dict(TINY[arch]), seed)
    model.eval()
    return model


def test_decoder_prefix_matches_hf_peft(arch):
    """PEFT's seq2seq prefix-tuning is a decoder self-attention prefix (its cross-attention cache is emptied). PEFT
    0.21 gives decoder layer l the prefix block of its layer 2l mod L (it concatenates the prefix with itself and
    splits in fours); with 2 layers both decoder layers read block 0, so ours get equal blocks for the comparison."""
    ours = apply_method(tiny(arch), {"name": "prefix", "num_virtual_tokens": 3, "seq2seq_parts": ["decoder"]})
    theirs = peft.get_peft_model(tiny(arch), peft.PrefixTuningConfig(task_type="SEQ_2_SEQ_LM", num_virtual_tokens=3))
    enc = theirs.prompt_encoder["default"]
    with torch.no_grad():
        blocks = ours.prefix_decoder.prefix_embedding.view(3, 2, -1)
        blocks[:, 1] = blocks[:, 0]
        enc.embedding.weight.copy_(ours.prefix_decoder.prefix_embedding)
    src, tgt = [5, 6, 7, 8], [9, 10, 11]
    x = torch.tensor([src + tgt])
    a = ours(x, torch.ones_like(x), source_lens=torch.tensor([4])).logits[0, -4:]
    dec = torch.tensor([[ours.model.config.decoder_start_token_id] + tgt])
    b = theirs(input_ids=torch.tensor([src]), attention_mask=torch.ones(1, 4, dtype=torch.long),
               decoder_input_ids=dec, decoder_attention_mask=torch.ones_like(dec)).logits[0]
    assert (a - b).abs().max().item() <= 1e-5
    labels = torch.tensor(tgt + [EOS])
    torch.nn.functional.cross_entropy(a, labels).backward()
    torch.nn.functional.cross_entropy(b, labels).backward()
    ours_grad = ours.prefix_decoder.prefix_embedding.grad.view(3, 2, -1)
    theirs_grad = enc.embedding.weight.grad.view(3, 2, -1)
    assert (ours_grad[:, 0] + ours_grad[:, 1] - theirs_grad[:, 0]).abs().max().item() <= 1e-5
    assert theirs_grad[:, 1].abs().max().item() == 0


def test_parameter_count_and_each_part_acts(arch):
    x = torch.tensor([[5, 6, 7, 8, 9, 10]])
    base = apply_method(tiny(arch), {"name": "full"})
    src_lens = torch.tensor([3])
    outputs = {}
    for parts in (["encoder"], ["decoder"], ["cross"], ["encoder", "decoder", "cross"]):
        cfg = {"name": "prefix", "num_virtual_tokens": 4, "seq2seq_parts": parts}
        adapted = apply_method(tiny(arch), cfg)
        assert adapted.parameter_counts()["trainable"] == \
            prefix_seq2seq.expected_parameter_count(adapted.model, prefix.PrefixConfig(**{
                k: v for k, v in cfg.items() if k != "name"})) == 4 * 2 * 2 * 32 * len(parts)
        outputs[tuple(parts)] = adapted(x, torch.ones_like(x), source_lens=src_lens).logits[0, -4:]
    # every part on its own changes the frozen model's logits
    dec = torch.tensor([[base.model.config.decoder_start_token_id, 8, 9, 10]])
    ref = base.model(input_ids=x[:, :3], decoder_input_ids=dec).logits[0]
    for parts, logits in outputs.items():
        assert not torch.allclose(logits, ref, atol=1e-3), parts


def test_padded_batch_equals_rows_alone(arch):
    adapted = apply_method(tiny(arch), {"name": "prefix", "num_virtual_tokens": 3})
    seqs, src = [[5, 6, 7, 8, 9, 10], [11, 12, 13], [20, 21, 22, 23]], [3, 1, 2]
    ids, mask = left_pad(seqs, PAD)
    batch = adapted(ids, mask, source_lens=torch.tensor(src)).logits
    for row, (s, n) in enumerate(zip(seqs, src)):
        t = torch.tensor([s])
        alone = adapted(t, torch.ones_like(t), source_lens=torch.tensor([n])).logits[0]
        k = len(s) - n + 1  # [start, y_1..y_t]
        assert (batch[row, -k:] - alone[-k:]).abs().max().item() <= 1e-5
        last2 = adapted(t, torch.ones_like(t), logits_to_keep=2, source_lens=torch.tensor([n])).logits[0]
        torch.testing.assert_close(last2, alone[-2:])


def test_greedy_decoding_equals_no_cache_reference(arch, tokenizer):
    torch.manual_seed(0)
    adapted = apply_method(tiny(arch), {"name": "prefix", "num_virtual_tokens": 4, "projection": True,
                                        "mid_dim": 16})
    sources = [tokenizer(p, add_special_tokens=False).input_ids for p in PROMPTS]
    ours = generate(adapted, sources, DecodeConfig(max_new_tokens=8, batch_size=4), [EOS], PAD)
    assert ours == greedy_reference(adapted, sources, 8)
    assert len({tuple(o) for o in ours}) > 1 and all(ours)
    one = generate(adapted, sources, DecodeConfig(num_beams=3, max_new_tokens=6, batch_size=1), [EOS], PAD)
    many = generate(adapted, sources, DecodeConfig(num_beams=3, max_new_tokens=6, batch_size=6), [EOS], PAD)
    assert one == many


def test_training_decreases_the_loss(arch, tokenizer, tmp_path: Path):
    task = ConstantTask()
    adapted = apply_method(tiny(arch), {"name": "prefix", "num_virtual_tokens": 4})
    cfg = TrainConfig(epochs=5, batch_size=4, lr=0.3, warmup_steps=2, precision="fp32", log_every=1, seed=0,
                      select="final")
    out = train(adapted, tokenizer, task, task.cfg, cfg, DecodeConfig(max_new_tokens=2),
                DecodeConfig(max_new_tokens=2), tmp_path)
    losses = [h["loss"] for h in out["history"] if "loss" in h]
    assert len(losses) == 10 and losses[-1] < 0.75 * losses[0], losses
    assert all(not p.requires_grad for p in adapted.model.parameters())


def test_bad_seq2seq_configs():
    with pytest.raises(ValueError, match="seq2seq_parts"):
        apply_method(tiny("bart"), {"name": "prefix", "seq2seq_parts": ["encoderr"]})
    with pytest.raises(ValueError, match="random"):
        apply_method(tiny("bart"), {"name": "prefix", "init_text": "summarize"})
    with pytest.raises(ValueError, match="decoder-only"):
        apply_method(tiny("t5"), {"name": "infix"})
