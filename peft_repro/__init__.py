"""peft_repro: reproduce the prefix-tuning and LoRA tables of the lecture "Efficient Fine-tuning for LLMs"."""
from omegaconf import OmegaConf

from .paths import repo_root, results_dir

# conf/ paths are relative to the checkout, whatever the working directory; peft_repro/paths.py decides where files are
OmegaConf.register_new_resolver("repo_root", lambda: str(repo_root()), replace=True)
OmegaConf.register_new_resolver("results_dir", lambda scale: str(results_dir(scale)), replace=True)


def _rank_for_budget(budget, targets) -> int:
    """LoRA Table 5: a fixed budget of summed ranks over the adapted weight types (r=8 on one, 4 on two, 2 on four)."""
    if budget % len(targets):
        raise ValueError(f"rank budget {budget} is not divisible over {len(targets)} weight types {list(targets)}")
    return budget // len(targets)


OmegaConf.register_new_resolver("rank_for_budget", _rank_for_budget, replace=True)
