import pytest
import torch

from peft_repro.methods import apply_method, lora
from peft_repro.models import role_targets

from .conftest import tiny_model

ROLE_SETS = [["q"], ["q", "v"], ["q", "k", "v", "o"], ["k", "mlp"]]


def ids(batch=2, length=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, 259, (batch, length), generator=g)


@pytest.mark.parametrize("targets", ROLE_SETS)
def test_initial_output_equals_base(arch, targets):
    x = ids()
    base = tiny_model(arch)(input_ids=x).logits
    adapted = apply_method(tiny_model(arch), {"name": "lora", "r": 4, "targets": targets})
    assert torch.equal(adapted.model(input_ids=x).logits, base)


def randomize_b(model):
    for layer in lora.lora_layers(model):
        torch.nn.init.normal_(layer.lora_B, std=0.5)


@pytest.mark.parametrize("targets", ROLE_SETS)
def test_merge_equals_unmerged_and_unmerge_restores(arch, targets):
    x = ids()
    model = tiny_model(arch)
    base = model(input_ids=x).logits
    adapted = apply_method(model, {"name": "lora", "r": 2, "alpha": 8, "targets": targets})
    randomize_b(model)
    unmerged = adapted.model(input_ids=x).logits
    assert not torch.allclose(unmerged, base, atol=1e-3), "the update must change the output"
    lora.merge(model)
    torch.testing.assert_close(adapted.model(input_ids=x).logits, unmerged, atol=1e-4, rtol=1e-4)
    lora.unmerge(model)
    torch.testing.assert_close(adapted.model(input_ids=x).logits, unmerged, atol=1e-4, rtol=1e-4)
    for layer in lora.lora_layers(model):  # the base weights are back to their original values
        layer.lora_B.data.zero_()
    torch.testing.assert_close(adapted.model(input_ids=x).logits, base, atol=1e-4, rtol=1e-4)


def test_only_lora_parameters_get_gradients(arch):
    model = tiny_model(arch)
    adapted = apply_method(model, {"name": "lora", "r": 2, "targets": ["q", "v"]})
    randomize_b(model)
    x = ids()
    adapted.model(input_ids=x, labels=x).loss.backward()
    for name, p in adapted.named_parameters():
        if "lora_" in name:
            assert p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert not p.requires_grad and p.grad is None, name


@pytest.mark.parametrize("targets", ROLE_SETS)
@pytest.mark.parametrize("r", [1, 4])
def test_parameter_count_is_closed_form(arch, targets, r):
    """r * (d_in + d_out) per adapted matrix, the shapes written out by hand (tests/conftest.py's TINY): llama has
    GQA (k, v: 32 -> 16) and a gated MLP; GPT-2's fused c_attn gives each of q, k, v a 32 x 32 third."""
    shapes = {"llama": {"q": [(32, 32)], "k": [(32, 16)], "v": [(32, 16)], "o": [(32, 32)],
                        "mlp": [(32, 64), (32, 64), (64, 32)]},
              "gpt2": {"q": [(32, 32)], "k": [(32, 32)], "v": [(32, 32)], "o": [(32, 32)],
                       "mlp": [(32, 128), (128, 32)]}}[arch]
    by_hand = 2 * sum(r * (d_in + d_out) for role in targets for d_in, d_out in shapes[role])  # 2 layers
    model = tiny_model(arch)
    cfg = lora.LoRAConfig(r=r, targets=targets)
    assert lora.expected_parameter_count(model, cfg) == by_hand
    assert lora.apply(model, cfg).parameter_counts()["trainable"] == by_hand


def test_closed_form_by_hand_for_gqa_llama():
    # hidden 32, 4 heads of 8 -> q: 32x32; 2 kv-heads -> k, v: 32 -> 16; 2 layers
    model = tiny_model("llama")
    adapted = apply_method(model, {"name": "lora", "r": 2, "targets": ["q", "k", "v", "o"]})
    per_layer = 2 * (32 + 32) + 2 * (32 + 16) * 2 + 2 * (32 + 32)
    assert adapted.parameter_counts()["trainable"] == 2 * per_layer


def test_gpt2_fused_projection_is_sliced():
    model = tiny_model("gpt2")
    targets = role_targets(model, ["q", "v"])
    assert {(t.name.split(".")[-1], t.part) for t in targets} == {("c_attn", 0), ("c_attn", 2)}
    adapted = apply_method(model, {"name": "lora", "r": 2, "targets": ["v"]})
    randomize_b(model)
    x = ids()
    h = model.transformer.wte(x)
    layer = model.transformer.h[0].attn.c_attn
    out, base = layer(h), layer.base(h)
    d = 32
    assert torch.equal(out[..., : 2 * d], base[..., : 2 * d])   # q and k untouched
    assert not torch.allclose(out[..., 2 * d:], base[..., 2 * d:])  # v adapted
    assert adapted.parameter_counts()["trainable"] == 2 * 2 * (32 + 32)


def test_matches_hf_peft_lora():
    """Our LoRA against HF PEFT's on the same tiny Llama, with the same A and B: equal logits and gradients."""
    peft = pytest.importorskip("peft")
    x = ids()
    ours_model, peft_base = tiny_model("llama"), tiny_model("llama")
    ours = apply_method(ours_model, {"name": "lora", "r": 4, "alpha": 8, "targets": ["q", "v"]})
    theirs = peft.get_peft_model(peft_base, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                            lora_dropout=0.0))
    randomize_b(ours_model)
    peft_params = dict(theirs.named_parameters())
    for layer_name, layer in ((n, m) for n, m in ours_model.named_modules() if isinstance(m, lora.LoRALayer)):
        prefix = "base_model.model." + layer_name
        peft_params[prefix + ".lora_A.default.weight"].data.copy_(layer.lora_A[0])
        peft_params[prefix + ".lora_B.default.weight"].data.copy_(layer.lora_B[0])
    a, b = ours.model(input_ids=x, labels=x), theirs(input_ids=x, labels=x)
    torch.testing.assert_close(a.logits, b.logits, atol=1e-4, rtol=1e-4)
    a.loss.backward()
    b.loss.backward()
    for layer_name, layer in ((n, m) for n, m in ours_model.named_modules() if isinstance(m, lora.LoRALayer)):
        prefix = "base_model.model." + layer_name
        torch.testing.assert_close(layer.lora_B.grad[0], peft_params[prefix + ".lora_B.default.weight"].grad,
                                   atol=1e-5, rtol=1e-4)


def test_bad_config_is_a_clear_error():
    with pytest.raises(ValueError, match="rank"):
        lora.LoRAConfig(r=0)
    with pytest.raises(ValueError, match="unknown weight roles"):
        apply_method(tiny_model("llama"), {"name": "lora", "targets": ["qq"]})
    with pytest.raises(ValueError, match="method lora has no option rank; it takes alpha"):
        apply_method(tiny_model("llama"), {"name": "lora", "rank": 3})
