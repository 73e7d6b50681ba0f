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
# E2E test BLEU against the prefix length k: the cells of the report's table `prefix_length_sweep` (the same runs,
# including those the shared E2E setting made in other experiments; mean ± sd over seeds; no error bar where there is
# one seed), with the zero-shot level. The paper: performance rises up to a threshold (10 for table-to-text),
# then drops slightly. Nothing is trained here: the notebook only reads `results/`.
#
# `PEFT_REPRO_SCALE` (default `default`) and `PEFT_REPRO_RESULTS` pick the records.

# %%
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from peft_repro import figures as F

TABLE, NAME = "prefix_length_sweep", "prefix_length"
RESULTS, SCALE = F.settings()
out = F.figure_path(RESULTS, SCALE, NAME)
cells = F.table_frame(RESULTS, TABLE, SCALE)
runs = cells[cells["kind"] == "ours"].assign(k=lambda f: f["col"].astype(int))
print(f"{runs['record'].nunique()} runs in table {TABLE} at scale {SCALE} in {RESULTS}")

# %%
stats = F.summarize(runs, ["model", "row", "k"], "value", interval="sd")
stats

# %%
if stats.empty:
    F.no_records(TABLE, SCALE, out)
else:
    fig, ax = plt.subplots(figsize=(6, 4))
    for (model, row), line in stats.groupby(["model", "row"]):
        line = line.sort_values("k")
        ax.errorbar(line["k"], line["mean"], yerr=line["err"], marker="o", capsize=3, label=f"{row} ({model})")
    zero_shot = cells[cells["kind"] == "zero-shot"]["value"]
    F.zero_shot_level(ax, None if zero_shot.empty else zero_shot.mean())
    ax.set_xscale("log")
    ks = sorted(stats["k"].unique())
    ax.set_xticks(ks, [str(int(k)) for k in ks])
    ax.minorticks_off()
    ax.set_xlabel("prefix length k (virtual tokens)")
    ax.set_ylabel("E2E test BLEU")
    ax.set_title(f"Prefix length — table {TABLE}, scale={SCALE}\nmean ± sd over seeds")
    ax.legend()
    ax.grid(alpha=0.3)
    F.save(fig, out)
    plt.close(fig)
F.show(out)
