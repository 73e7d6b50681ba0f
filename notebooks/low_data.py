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
# `peft_repro/tasks/low_data/`), one line per method: the cells of the report's tables `low_data_e2e` (BLEU) and
# `low_data_xsum` (its ROUGE-2 F1 rows). Points are the mean over runs (subsets × seeds), bars the Student-t 95% interval of that mean (no
# bar for a single run); the dashed line is the untrained model's score (named in the legend instead where it lies far
# below the plotted range). The paper: prefix-tuning beats fine-tuning with 50-500 examples. Nothing is trained here.

# %%
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from peft_repro import figures as F

NAME = "low_data"
# the axis label, the suffix of the rows drawn, and the zero-shot row of the same metric
PANELS = {"low_data_e2e": ("E2E test BLEU", "", "Zero-shot"),
          "low_data_xsum": ("XSum test ROUGE-2", " R-2", "Zero-shot (rouge2)")}
METHOD_ORDER = ["Prefix", "FT", "LoRA"]
RESULTS, SCALE = F.settings()
out = F.figure_path(RESULTS, SCALE, NAME)
runs, zero_shot = {}, {}
for table, (_, suffix, zero_shot_row) in PANELS.items():
    cells = F.table_frame(RESULTS, table, SCALE)
    ours = cells[(cells["kind"] == "ours") & cells["row"].str.contains(suffix, regex=False)]
    untrained = cells[(cells["kind"] == "zero-shot") & (cells["row"] == zero_shot_row)]["value"]
    zero_shot[table] = None if untrained.empty else untrained.mean()
    runs[table] = ours.assign(line=ours["row"].str.replace(suffix, "", regex=False), size=ours["col"].astype(int))
    print(f"{runs[table]['record'].nunique()} runs in table {table} at scale {SCALE} in {RESULTS}")

# %%
stats = {table: F.summarize(frame, ["line", "size"], "value", interval="ci95") for table, frame in runs.items()}
stats

# %%
present = {experiment: s for experiment, s in stats.items() if not s.empty}
for table in PANELS.keys() - present.keys():
    print(f"no records for {table} at scale {SCALE}")
if not present:
    F.no_records(list(PANELS), SCALE, out)
else:
    fig, axes = plt.subplots(1, len(present), figsize=(6 * len(present), 4), squeeze=False)
    for ax, (table, s) in zip(axes[0], present.items()):
        methods = [m for m in METHOD_ORDER if m in set(s["line"])] + sorted(set(s["line"]) - set(METHOD_ORDER))
        for method in methods:
            line = s[s["line"] == method].sort_values("size")
            ax.errorbar(line["size"], line["mean"], yerr=line["err"], marker="o", capsize=3, label=method)
        sizes = sorted(s["size"].unique())
        ax.set_xscale("log")
        ax.set_xticks(sizes, [str(int(n)) for n in sizes])
        ax.minorticks_off()
        ax.set_xlabel("training examples")
        ax.set_ylabel(PANELS[table][0])
        models = ", ".join(sorted(runs[table]["model"].dropna().unique()))
        ax.set_title(f"table {table}, scale={SCALE} ({models})\nmean ± 95% CI over subsets × seeds")
        F.zero_shot_level(ax, zero_shot[table])
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    F.save(fig, out)
    plt.close(fig)
F.show(out)
