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
# # Prefix length (Li & Liang 2021, Figure 4)
#
# E2E test BLEU against the prefix length k, from the run records of `prefix_length_sweep` (mean ± sd over seeds;
# no error bar where there is one seed). The paper: performance rises up to a threshold (10 for table-to-text),
# then drops slightly. Nothing is trained here: the notebook only reads `results/`.
#
# `PEFT_REPRO_SCALE` (default `default`) and `PEFT_REPRO_RESULTS` pick the records.

# %%
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from peft_repro import figures as F

EXPERIMENT, NAME = "prefix_length_sweep", "prefix_length"
RESULTS, SCALE = F.settings()
out = F.figure_path(RESULTS, SCALE, NAME)
runs = F.records_frame(RESULTS, EXPERIMENT, SCALE)
print(f"{len(runs)} records for {EXPERIMENT} at scale {SCALE} in {RESULTS}")

# %%
stats = F.summarize(runs, ["model", "method", "num_virtual_tokens"], "test.BLEU", factor=100, interval="sd")
stats

# %%
if stats.empty:
    F.no_records(EXPERIMENT, SCALE, out)
else:
    fig, ax = plt.subplots(figsize=(6, 4))
    for (model, method), line in stats.groupby(["model", "method"]):
        line = line.sort_values("num_virtual_tokens")
        ax.errorbar(line["num_virtual_tokens"], line["mean"], yerr=line["err"], marker="o", capsize=3,
                    label=f"{method} ({model})")
    ax.set_xscale("log")
    ks = sorted(stats["num_virtual_tokens"].unique())
    ax.set_xticks(ks, [str(int(k)) for k in ks])
    ax.minorticks_off()
    ax.set_xlabel("prefix length k (virtual tokens)")
    ax.set_ylabel("E2E test BLEU")
    ax.set_title(f"Prefix length — {EXPERIMENT}, scale={SCALE}\nmean ± sd over seeds")
    ax.legend()
    ax.grid(alpha=0.3)
    F.save(fig, out)
    plt.close(fig)
F.show(out)
