# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Low-data regime (Li & Liang 2021, Figure 3)
#
# Test score against the number of training examples (50, 100, 200, 500; committed subsets in
# `experiments/low_data/`), one line per method, from the run records of `low_data_e2e` (BLEU) and `low_data_xsum`
# (ROUGE-2 F1). Points are the mean over runs (subsets × seeds), bars the Student-t 95% interval of that mean (no
# bar for a single run). The paper: prefix-tuning beats fine-tuning with 50-500 examples. Nothing is trained here.

# %%
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from peft_repro import figures as F

NAME = "low_data"
PANELS = {"low_data_e2e": ("test.BLEU", "E2E test BLEU"), "low_data_xsum": ("test.rouge2", "XSum test ROUGE-2")}
METHOD_ORDER = ["prefix", "full", "lora"]
RESULTS, SCALE = F.settings()
out = F.figure_path(RESULTS, SCALE, NAME)
runs = {experiment: F.records_frame(RESULTS, experiment, SCALE) for experiment in PANELS}
for experiment, frame in runs.items():
    print(f"{len(frame)} records for {experiment} at scale {SCALE} in {RESULTS}")

# %%
stats = {experiment: F.summarize(runs[experiment], ["method", "low_data_size"], metric, factor=100, interval="ci95")
         for experiment, (metric, _) in PANELS.items()}
stats

# %%
present = {experiment: s for experiment, s in stats.items() if not s.empty}
for experiment in PANELS.keys() - present.keys():
    print(f"no records for {experiment} at scale {SCALE}")
if not present:
    F.no_records(list(PANELS), SCALE, out)
else:
    fig, axes = plt.subplots(1, len(present), figsize=(6 * len(present), 4), squeeze=False)
    for ax, (experiment, s) in zip(axes[0], present.items()):
        methods = [m for m in METHOD_ORDER if m in set(s["method"])] + sorted(set(s["method"]) - set(METHOD_ORDER))
        for method in methods:
            line = s[s["method"] == method].sort_values("low_data_size")
            ax.errorbar(line["low_data_size"], line["mean"], yerr=line["err"], marker="o", capsize=3, label=method)
        sizes = sorted(s["low_data_size"].unique())
        ax.set_xscale("log")
        ax.set_xticks(sizes, [str(int(n)) for n in sizes])
        ax.minorticks_off()
        ax.set_xlabel("training examples")
        ax.set_ylabel(PANELS[experiment][1])
        models = ", ".join(sorted(runs[experiment]["model"].dropna().unique()))
        ax.set_title(f"{experiment}, scale={SCALE} ({models})\nmean ± 95% CI over subsets × seeds")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    F.save(fig, out)
    plt.close(fig)
F.show(out)
