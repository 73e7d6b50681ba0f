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
# # Prefix initialization with 100 examples (Li & Liang 2021, Figure 5)
#
# E2E test BLEU of prefix-tuning initialized with the activations of a word, against a random init of the same length
# (each word's control: the word sets k and seeds the draw), for the task-relevant words and the irrelevant ones of
# the paper (`init_words` in conf/experiment/prefix_init.yaml). The cells of the report's table `prefix_init`: a bar
# is the mean over a cell's runs, each dot one run (seeds). The paper: relevant words > irrelevant words > random;
# the report's claim `init_low_data` tests the first two groups and the irrelevant words against their controls.
# Nothing is trained here: the notebook only reads `results/`.
#
# `PEFT_REPRO_SCALE` (default `default`) and `PEFT_REPRO_RESULTS` pick the records.

# %%
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from omegaconf import OmegaConf

from peft_repro import figures as F
from peft_repro.paths import repo_root

TABLE, NAME, METRIC = "prefix_init", "prefix_init", "BLEU"
RESULTS, SCALE = F.settings()
out = F.figure_path(RESULTS, SCALE, NAME)
words = OmegaConf.load(repo_root() / "conf" / "experiment" / f"{TABLE}.yaml").init_words
groups = {word: group for group in ("relevant", "irrelevant") for word in words[group]}
cells = F.table_frame(RESULTS, TABLE, SCALE)
cells = cells[cells["col"] == METRIC]
runs = cells[cells["kind"] == "ours"]
print(f"{runs['record'].nunique()} runs in table {TABLE} at scale {SCALE} in {RESULTS}")

# %% [markdown]
# Each cell (a word or its control) and each group, pooled over its words' runs as the claim pools them.

# %%
def word_of(row: str) -> str:  # "random (keep)" -> "keep"
    return row.removeprefix("random (").removesuffix(")")


def init_of(row: str) -> str:
    return "random" if row.startswith("random (") else "words"


runs = runs.assign(word=runs["row"].map(word_of), init=runs["row"].map(init_of),
                   group=runs["row"].map(lambda row: groups.get(word_of(row), "?")))
print(F.summarize(runs, ["group", "init"], "value", interval="ci95").to_string(index=False))
stats = F.summarize(runs, ["row", "word", "init", "group"], "value", interval="sd").set_index("row")
stats

# %%
if stats.empty:
    F.no_records(TABLE, SCALE, out)
else:
    colors = {"relevant": "tab:green", "irrelevant": "tab:blue"}
    order = [w for w in groups if w in set(stats["word"])]
    fig, ax = plt.subplots(figsize=(1.1 * len(order) + 2, 4.2))
    width = 0.38
    for i, word in enumerate(order):
        for shift, row, color, hatch in ((-width / 2, word, colors[groups[word]], None),
                                         (width / 2, f"random ({word})", "lightgrey", "//")):
            if row not in stats.index:
                continue
            ax.bar(i + shift, stats.loc[row, "mean"], width, color=color, hatch=hatch, edgecolor="black", lw=0.5)
            values = runs[runs["row"] == row]["value"]
            ax.scatter([i + shift] * len(values), values, color="black", s=10, zorder=3)
    zero_shot = F.summarize(cells[cells["kind"] == "zero-shot"], ["col"], "value")
    F.zero_shot_level(ax, None if zero_shot.empty else zero_shot["mean"].iloc[0])
    handles = [plt.Rectangle((0, 0), 1, 1, color=c, label=f"{g} word") for g, c in colors.items()]
    handles.append(plt.Rectangle((0, 0), 1, 1, facecolor="lightgrey", hatch="//", edgecolor="black",
                                 label="random init of its length"))
    handles.append(plt.Line2D([], [], color="black", marker="o", ls="", markersize=3, label="one run"))
    ax.legend(handles=handles + ax.get_legend_handles_labels()[0], fontsize=7, loc="upper left",
              bbox_to_anchor=(1.01, 1))
    ax.set_xticks(range(len(order)), order, rotation=20)
    ax.set_ylabel(f"E2E test {METRIC}")
    ax.set_title(f"Prefix init, 100 training examples — table {TABLE}, scale={SCALE}\nbar: mean over runs")
    ax.grid(axis="y", alpha=0.3)
    F.save(fig, out)
    plt.close(fig)
F.show(out)
