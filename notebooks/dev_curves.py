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
# # Dev curves: did the runs train to a plateau?
#
# The dev score of each run after every epoch (its record's `history`: the task's primary metric on the dev items,
# x100), for the cells of the report's tables that train more than one epoch (`e2e_main`, `e2e_main_budget`,
# `emb_vs_infix`, `lora_rank_sweep`, `low_data_e2e`, `prefix_init`, `low_data_xsum`, `low_data_xsum_budget`,
# `xsum_main`, `xsum_main_budget`): the runs the tables show, at the learning rate chosen on dev (at the default scale
# e2e_main shows its runs tested on all 630 MRs, emb_vs_infix the E2E setting's EMB, INFIX and PREFIX runs,
# e2e_main_budget FT, prefix and LoRA after 3 and 6 epochs of the same setting: "FT @ 6" trains twice as long as
# "FT @ 3"; xsum_main_budget and low_data_xsum_budget prefix-tuning after 2 and 4, 3 and 6 epochs). Each line is a
# cell's mean over its runs (± sd). A run keeps its best dev epoch; when that is mostly the last epoch, the runs are
# still rising and more steps would help. Nothing is trained here: the notebook only reads `results/`.
#
# `PEFT_REPRO_SCALE` (default `default`) and `PEFT_REPRO_RESULTS` pick the records.

# %%
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from peft_repro import figures as F

TABLES = ["e2e_main", "e2e_main_budget", "emb_vs_infix", "lora_rank_sweep", "low_data_e2e", "prefix_init",
          "low_data_xsum", "low_data_xsum_budget", "xsum_main", "xsum_main_budget"]
NAME = "dev_curves"
RESULTS, SCALE = F.settings()
out = F.figure_path(RESULTS, SCALE, NAME)
curves = {table: F.dev_curve_frame(RESULTS, table, SCALE) for table in TABLES}
for table, frame in curves.items():
    print(f"{frame['record'].nunique()} runs in table {table} at scale {SCALE} in {RESULTS}")

# %% [markdown]
# Which epoch each run kept: the share that kept its last one says whether training reached a plateau.

# %%
for table, frame in curves.items():
    kept = frame[frame["selected"].astype(bool)]
    for label, runs in kept.groupby("label"):
        print(f"{table} / {label}: {len(runs)} runs; kept epochs {sorted(runs['epoch'].tolist())}; "
              f"the last epoch in {int(runs['last'].sum())} of {len(runs)}")

# %%
drawn = {table: frame for table, frame in curves.items() if not frame.empty}
if not drawn:
    F.no_records(TABLES, SCALE, out)
else:
    ncols = min(3, len(drawn))
    nrows = -(-len(drawn) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.5 * ncols, 4 * nrows), squeeze=False, layout="constrained")
    for ax in axes.flat[len(drawn):]:
        ax.set_visible(False)
    for ax, (table, frame) in zip(axes.flat, drawn.items()):
        stats = F.summarize(frame, ["label", "epoch"], "dev", interval="sd")
        for label, line in stats.groupby("label"):
            line = line.sort_values("epoch")
            ax.errorbar(line["epoch"] + 1, line["mean"], yerr=line["err"], marker="o", capsize=3,
                        label=f"{label} (n={int(line['n'].max())})")
        epochs = sorted(stats["epoch"].unique())
        ax.set_xticks([e + 1 for e in epochs])
        ax.set_xlabel("epoch")
        ax.set_ylabel("dev score x100 (primary metric)")
        ax.set_title(f"{table}, scale={SCALE}\nmean ± sd over runs")
        if stats["label"].nunique() <= 8:
            ax.legend(fontsize=7)
        else:  # prefix_init's many cells: below the panel, not over its lines
            ax.legend(fontsize=6, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.15))
        ax.grid(alpha=0.3)
    F.save(fig, out)
    plt.close(fig)
F.show(out)
