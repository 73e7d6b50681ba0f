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
# # PREFIX vs EMB-k vs INFIX-k (Li & Liang 2021, Table 5)
#
# E2E test BLEU of prefix-tuning, embedding-only (EMB-k) and infix (INFIX-k) at k = 1, 10, 20: the cells of the
# report's table `emb_vs_infix` (mean ± sd over seeds). Right: the paper's numbers (GPT-2 Medium, from
# `experiments/emb_vs_infix.yaml`) for the shape of the comparison; the models differ, so the panels are not on one
# scale. Nothing is trained here.

# %%
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from peft_repro import figures as F

TABLE, NAME = "emb_vs_infix", "emb_infix_prefix"
METHODS = ["PREFIX", "EMB", "INFIX"]
KS = [1, 10, 20]
RESULTS, SCALE = F.settings()
out = F.figure_path(RESULTS, SCALE, NAME)
cells = F.table_frame(RESULTS, TABLE, SCALE)
runs = cells[(cells["kind"] == "ours") & (cells["col"] == "BLEU")]
zero_shot = cells[(cells["kind"] == "zero-shot") & (cells["col"] == "BLEU")]["value"]
print(f"{runs['record'].nunique()} runs in table {TABLE} at scale {SCALE} in {RESULTS}")


def method_k(label: str) -> tuple[str, int]:
    """("EMB", 1) for "EMB-1"; the paper's and our PREFIX row is k = 10 (its table-to-text length)."""
    name, _, k = label.partition("-")
    return name, int(k) if k else 10


# %%
stats = F.summarize(runs.assign(m=[method_k(r)[0] for r in runs["row"]], k=[method_k(r)[1] for r in runs["row"]]),
                    ["m", "k"], "value", interval="sd")
stats

# %%
paper = {}  # (method, k) -> BLEU; the paper's PREFIX row is its main result (k = 10 for table-to-text)
for row in F.paper_table(TABLE).get("rows", []):
    method, k = method_k(str(row.get("method", "")))
    bleu = [v["BLEU"] for v in row.get("values", []) if "BLEU" in v]
    if method in METHODS and bleu:
        paper[(method, k)] = bleu[0]
paper


# %%
def bars(ax, value, error=None, mark_missing=False):
    width = 0.8 / len(METHODS)
    for i, method in enumerate(METHODS):
        x = np.arange(len(KS)) + (i - (len(METHODS) - 1) / 2) * width
        heights = [value(method, k) for k in KS]
        errors = [error(method, k) for k in KS] if error else None
        ax.bar(x, [np.nan if h is None else h for h in heights], width,
               yerr=None if errors is None else [np.nan if e is None else e for e in errors],
               capsize=3, label=method, color=f"C{i}")
        for xi, h in zip(x, heights):
            if h is None and mark_missing:
                ax.text(xi, 0, "no run", rotation=90, ha="center", va="bottom", fontsize=9, color="dimgrey")
    ax.set_xticks(np.arange(len(KS)), [f"k={k}" for k in KS])
    ax.set_xlim(-0.5, len(KS) - 0.5)
    ax.grid(axis="y", alpha=0.3)


if stats.empty:
    F.no_records(TABLE, SCALE, out)
else:
    cell = {(m, int(k)): (mean, err) for m, k, mean, err in stats[["m", "k", "mean", "err"]].itertuples(index=False)}
    fig, (ours, theirs) = plt.subplots(1, 2, figsize=(11, 4))
    bars(ours, lambda m, k: cell.get((m, k), (None, None))[0], lambda m, k: cell.get((m, k), (None, None))[1],
         mark_missing=True)
    models = ", ".join(sorted(runs["model"].dropna().unique()))
    ours.set_title(f"ours: table {TABLE}, scale={SCALE} ({models})\nmean ± sd over seeds")
    ours.set_ylabel("E2E test BLEU")
    if not zero_shot.empty:  # the bars start at 0, so the untrained level is always on the axis; the methods' legend
        ours.axhline(zero_shot.mean(), color="grey", ls="--", lw=1)  # is the right panel's
        ours.set_title(ours.get_title() + f"; dashed: zero-shot ({zero_shot.mean():.1f})")
    bars(theirs, lambda m, k: paper.get((m, k)))
    if ("PREFIX", 10) in paper:
        theirs.axhline(paper[("PREFIX", 10)], color="C0", ls="--", lw=1, label="PREFIX, k=10 (level)")
    theirs.set_title("Li & Liang 2021, Table 5 (GPT-2 Medium)")
    theirs.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    F.save(fig, out)
    plt.close(fig)
F.show(out)
