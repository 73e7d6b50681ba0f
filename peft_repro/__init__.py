"""peft_repro: reproduce the prefix-tuning and LoRA tables of the lecture "Efficient Fine-tuning for LLMs"."""
from omegaconf import OmegaConf

from .models import repo_root

# conf/ paths are relative to the checkout, whatever the working directory
OmegaConf.register_new_resolver("repo_root", lambda: str(repo_root()), replace=True)
