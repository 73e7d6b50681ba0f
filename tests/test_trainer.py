from pathlib import Path

import pytest
import torch

from peft_repro.batching import IGNORE, Encoded, collate_train, encode_examples, length_grouped_batches
from peft_repro.decoding import DecodeConfig
from peft_repro.methods import apply_method
from peft_repro.tasks import Example
from peft_repro.train import TrainConfig, lm_loss, train

from .conftest import CopyTask, tiny_model


def test_labels_cover_exactly_the_target_tokens():
    items = [Encoded([5, 6, 7], [8, 9, 2]), Encoded([5], [10, 2]), Encoded([4, 4, 4, 4, 4], [2])]
    batch = collate_train(items, pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9, 2], [0, 0, 0, 5, 10, 2], [4, 4, 4, 4, 4, 2]]
    assert batch["labels"].tolist() == [[IGNORE] * 3 + [8, 9, 2], [IGNORE] * 4 + [10, 2], [IGNORE] * 5 + [2]]
    assert batch["attention_mask"].sum(1).tolist() == [6, 3, 6]
    assert batch["target_width"] == 3


def test_source_and_target_are_tokenized_apart(tokenizer):
    [enc] = encode_examples([Example("ab", "cd")], tokenizer, None, None, append_eos=True)
    assert enc.source == tokenizer("ab", add_special_tokens=False).input_ids
    assert enc.target == tokenizer("cd", add_special_tokens=False).input_ids + [tokenizer.eos_token_id]


def test_lm_loss_equals_transformers_loss_on_the_same_tokens(tokenizer):
    """Our left-padded, head-on-targets-only loss is the loss HF computes on the unpadded sequence."""
    model = apply_method(tiny_model("llama"), {"name": "full"})
    items = encode_examples([Example("hello there", "general"), Example("a", "b c d e f")], tokenizer, None, None,
                            append_eos=True)
    batch = collate_train(items, tokenizer.pad_token_id)
    ours = lm_loss(model, batch, "cpu")
    total, count = 0.0, 0
    for it in items:
        ids = torch.tensor([it.source + it.target])
        labels = torch.tensor([[IGNORE] * len(it.source) + it.target])
        n = len(it.target)
        total += model.model(input_ids=ids, labels=labels).loss * n
        count += n
    torch.testing.assert_close(ours, total / count, atol=1e-5, rtol=1e-5)


def test_length_grouped_batches_are_a_partition_with_similar_lengths():
    lengths = [(i * 37) % 101 for i in range(1000)]
    batches = length_grouped_batches(lengths, 8, seed=0)
    assert sorted(i for b in batches for i in b) == list(range(1000))
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(batches)
    assert spread < 5
    assert batches != length_grouped_batches(lengths, 8, seed=1)


def test_training_decreases_the_loss_and_selects_on_dev(tokenizer, tmp_path: Path):
    task = CopyTask()
    model = apply_method(tiny_model("llama"), {"name": "full"})
    cfg = TrainConfig(epochs=5, batch_size=4, lr=1e-2, warmup_steps=2, precision="fp32", log_every=1, seed=0)
    decode = DecodeConfig(max_new_tokens=6)
    out = train(model, tokenizer, task, task.cfg, cfg, decode, decode, tmp_path)
    losses = [h["loss"] for h in out["history"] if "loss" in h]
    assert len(losses) == 10 and losses[-1] < 0.5 * losses[0]
    dev_scores = [h["dev_exact"] for h in out["history"] if "dev_exact" in h]
    assert out["dev"]["exact"] == max(dev_scores)
    assert (tmp_path / "trainable.safetensors").exists()
    assert out["train_tokens"] > 0 and out["tokens_per_second"] > 0


def test_bad_trainer_config():
    with pytest.raises(ValueError, match="select"):
        TrainConfig(select="best")


def test_max_steps_zero_and_string_targets_are_clear_errors():
    import pytest

    from peft_repro.methods.lora import LoRAConfig
    from peft_repro.train import TrainConfig

    with pytest.raises(ValueError, match="max_steps must be >= 1 or null"):
        TrainConfig(max_steps=0)
    with pytest.raises(ValueError, match="must be a list such as"):
        LoRAConfig(targets="qk")


@pytest.mark.parametrize("method, every", [({"name": "lora", "r": 2, "targets": ["q", "v"], "dropout": 0.1}, 3),
                                           ({"name": "full"}, None)])
def test_a_killed_run_resumes_from_its_checkpoint_to_the_same_result(tokenizer, tmp_path: Path, monkeypatch,
                                                                     method, every):
    """Killed mid-epoch (LoRA with dropout: the RNG state matters, checkpoints every 3 steps) or after an epoch end
    (full fine-tuning, epoch-end checkpoints only), the rerun continues and ends where an uninterrupted run ends."""
    import peft_repro.train as train_module

    task = CopyTask()
    cfg = TrainConfig(epochs=4, batch_size=2, lr=1e-2, warmup_steps=2, precision="fp32", log_every=1, seed=0,
                      save_checkpoint=False)
    decode = DecodeConfig(max_new_tokens=6)

    def run(resume_file=None):
        model = apply_method(tiny_model("llama"), method)
        out = train(model, tokenizer, task, task.cfg, cfg, decode, decode, tmp_path, resume_file=resume_file,
                    checkpoint_every=every)
        return out, model.trainable_state_dict()

    whole, whole_state = run()
    resume_file = tmp_path / "run.resume.pt"
    real_collate, calls = train_module.collate_train, []

    def killed_at_step_7(*args):  # batch 7 of 16: epoch 1 (4 batches an epoch), after the checkpoint at step 6
        calls.append(1)
        if len(calls) == 7:
            raise KeyboardInterrupt
        return real_collate(*args)

    monkeypatch.setattr(train_module, "collate_train", killed_at_step_7)
    with pytest.raises(KeyboardInterrupt):
        run(resume_file)
    assert resume_file.exists()
    saved_step = torch.load(resume_file, weights_only=False)["step"]
    assert saved_step == (6 if every else 4)
    monkeypatch.setattr(train_module, "collate_train", real_collate)
    resumed, resumed_state = run(resume_file)
    assert [h for h in resumed["history"] if "loss" in h] == [h for h in whole["history"] if "loss" in h]
    assert resumed["dev"] == whole["dev"] and resumed["test"] == whole["test"] and resumed["steps"] == whole["steps"]
    assert all(torch.equal(resumed_state[k], whole_state[k]) for k in whole_state)
