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
# # LoRA: adapted weight types × rank (Hu et al. 2021, Table 6)
#
# Test score (%) of each cell of `lora_rank_sweep` — rows the adapted weights, columns the rank r, one panel per
# task (MNLI accuracy, WikiSQL logical-form accuracy); mean over seeds, n shown where there is more than one run.
# Grey cells have no finished run. Nothing is trained here.

# %%
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from peft_repro import figures as F

TABLE, NAME = "lora_rank_sweep", "lora_heatmap"
ROW_ORDER = ["Wq", "Wq,Wv", "Wq,Wk,Wv,Wo"]
METRIC_NAME = {"mnli": "accuracy (%)", "wikisql": "logical-form accuracy (%)"}
RESULTS, SCALE = F.settings()
out = F.figure_path(RESULTS, SCALE, NAME)
cells = F.table_frame(RESULTS, TABLE, SCALE)
runs = cells[cells["kind"] == "ours"].assign(r=lambda f: f["col"].astype(int))
zero_shot = cells[cells["kind"] == "zero-shot"].groupby("task")["value"].mean()  # the untrained model, per task
print(f"{runs['record'].nunique()} runs in table {TABLE} at scale {SCALE} in {RESULTS}")

# %%
panels = {}
for task in sorted(runs["task"].dropna().unique()):
    stats = F.summarize(runs[runs["task"] == task], ["method", "r"], "value")
    if not stats.empty:
        panels[task] = stats
panels

# %%
if not panels:
    F.no_records(TABLE, SCALE, out)
else:
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 3.8), squeeze=False)
    for ax, (task, stats) in zip(axes[0], panels.items()):
        rows = [t for t in ROW_ORDER if t in set(stats["method"])] + sorted(set(stats["method"]) - set(ROW_ORDER))
        cols = sorted(int(r) for r in stats["r"].unique())
        grid = np.full((len(rows), len(cols)), np.nan)
        count = np.zeros_like(grid, dtype=int)
        for targets, r, mean, n in stats[["method", "r", "mean", "n"]].itertuples(index=False):
            grid[rows.index(targets), cols.index(int(r))] = mean
            count[rows.index(targets), cols.index(int(r))] = n
        cmap = plt.get_cmap("viridis").copy()
        cmap.set_bad("lightgrey")
        image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, aspect="auto")
        for i in range(len(rows)):
            for j in range(len(cols)):
                if not np.isnan(grid[i, j]):
                    text = f"{grid[i, j]:.1f}" + (f"\n(n={count[i, j]})" if count[i, j] > 1 else "")
                    ax.text(j, i, text, ha="center", va="center", color="white" if image.norm(grid[i, j]) < 0.5
                            else "black", fontsize=9)
        ax.set_xticks(range(len(cols)), [str(c) for c in cols])
        ax.set_yticks(range(len(rows)), rows)
        ax.set_xlabel("rank r")
        ax.set_ylabel("adapted weights")
        untrained = f", zero-shot {zero_shot[task]:.1f}" if task in zero_shot else ""
        ax.set_title(f"{task}: test {METRIC_NAME.get(task, 'score')}{untrained}")
        fig.colorbar(image, ax=ax)
    models = ", ".join(sorted(runs["model"].dropna().unique()))
    fig.suptitle(f"LoRA weight types × rank — table {TABLE}, scale={SCALE} ({models})")
    fig.tight_layout()
    F.save(fig, out)
    plt.close(fig)
F.show(out)
