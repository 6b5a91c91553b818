"""Draw the figures of docs/graph.md from a real image and a real model.

    python docs/figures/make_graph_figures.py                   # writes docs/figures/*.png
    python docs/figures/make_graph_figures.py --checkpoint runs/demo   # a trained model

Without ``--checkpoint`` the models are randomly initialised (seed 0): the graphs are then
built from untrained features, which is enough to show *how* they are built (neighbours,
dilation, pooled keys), not what a trained ViG attends to (see examples/visualize_graph.py).
"""

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import pyg_vig  # noqa: E402
from pyg_vig.datasets import load_dataset  # noqa: E402
from pyg_vig.nn import knn_graph  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--checkpoint", default=None, help="a `pyg-vig train` run of vig_mini")
parser.add_argument("--image", type=int, default=3, help="index in the embedded test split")
parser.add_argument("--out", default=str(Path(__file__).parent))
args = parser.parse_args()
torch.manual_seed(0)
out = Path(args.out)

image, label = load_dataset("fashion_mnist_subset", "test")[args.image]  # (1, 28, 28) in [0, 1]
x = ((image - 0.286) / 0.353).unsqueeze(0)

if args.checkpoint:
    from pyg_vig.train import load_trained_model

    iso, _ = load_trained_model(args.checkpoint)
else:
    iso = pyg_vig.create_model("vig_mini", stem_stride=2)  # 2 px patches: a 14 x 14 grid
iso.eval()
stride = iso.stem_stride


def draw(ax, title, centre, neighbours, grid_w, cell=1.0, offset=0.0, scale=stride):
    """Image, centre node (star) and neighbours (dots) in pixel coordinates."""
    ax.imshow(image[0], cmap="gray")

    def to_px(idx, w, c, o):
        r, q = divmod(int(idx), w)
        return (q * c + o) * scale + scale / 2 - 0.5, (r * c + o) * scale + scale / 2 - 0.5

    for j in neighbours:
        px, py = to_px(j, round(grid_w / cell), cell, offset)
        ax.plot(px, py, "o", color="tab:orange", ms=6, mec="k")
    cx, cy = to_px(centre, grid_w, 1.0, 0.0)
    ax.plot(cx, cy, "*", color="tab:red", ms=14, mec="k")
    ax.set_title(title, fontsize=9)
    ax.axis("off")


# ----------------------------------------------------------------- 1. neighbours at several depths
with torch.no_grad():
    graph = iso.forward_graph(x)
h, w = graph.edge_grids[0][0]
centre = (h // 2) * w + w // 2 - 2
depths = [0, len(graph.edge_indices) // 2, len(graph.edge_indices) - 1]
fig, axes = plt.subplots(1, len(depths), figsize=(3.2 * len(depths), 3.4))
for ax, d in zip(axes, depths, strict=True):
    src, dst = graph.edge_indices[d].as_tensor()
    nb = src[dst == centre].tolist()
    block = iso.blocks[d].grapher
    draw(ax, f"block {d}: k={block.k}, dilation={block.dilation}", centre, nb, w)
fig.suptitle("Neighbours of one node (star) in the k-NN graph of three ViG blocks", fontsize=10)
fig.tight_layout()
fig.savefig(out / "graph_depths.png", dpi=110)

# ------------------------------------------------------------ 2. plain vs dilated neighbourhoods
feats = {}
hook = iso.blocks[0].grapher.fc1.register_forward_hook(lambda m, i, o: feats.setdefault("x", o))
with torch.no_grad():
    iso(x)
hook.remove()
fig, axes = plt.subplots(1, 3, figsize=(9.6, 3.4))
for ax, (k, d) in zip(axes, [(9, 1), (9, 2), (9, 3)], strict=True):
    src, dst = knn_graph(feats["x"], k, dilation=d).as_tensor()
    draw(ax, f"k={k}, dilation={d}: every {d}. of the {k * d} nearest", centre,
         src[dst == centre].tolist(), w)
fig.suptitle("Dilated aggregation: same features, wider receptive field", fontsize=10)
fig.tight_layout()
fig.savefig(out / "graph_dilation.png", dpi=110)

# ----------------------------------------------------------------- 3. pooled keys (pyramid ViG)
pyr = pyg_vig.create_model("pvig_mini", stem_stride=1, reductions=(4, 2, 1)).eval()
with torch.no_grad():
    pgraph = pyr.forward_graph(x)
ph, pw = pgraph.edge_grids[0][0]
r = pyr.reductions[0]
pcentre = (ph // 2) * pw + pw // 2 - 3
src, dst = pgraph.edge_indices[0].as_tensor()
keys = src[dst == pcentre].tolist()
fig, axes = plt.subplots(1, 2, figsize=(6.8, 3.6))
draw(axes[0], f"first block: {ph}x{pw} nodes, {ph // r}x{pw // r} keys (r={r})", pcentre,
     keys, pw, cell=r, offset=(r - 1) / 2, scale=1)
for ax in axes[:1]:
    for t in range(0, ph + 1, r):
        ax.axhline(t - 0.5, color="w", lw=0.3)
        ax.axvline(t - 0.5, color="w", lw=0.3)
nodes = torch.arange(ph * pw)
rel = pyr.stages[0].blocks[0].grapher.relative_bias((ph, pw), x.device, x.dtype)
axes[1].imshow(rel[pcentre].view(ph // r, pw // r), cmap="viridis")
axes[1].set_title("relative-position bias of the star\nto every key (low = favoured)", fontsize=9)
axes[1].axis("off")
fig.suptitle("Pooled keys make the graph bipartite: nodes -> r x r cell averages", fontsize=10)
fig.tight_layout()
fig.savefig(out / "graph_pooled_keys.png", dpi=110)
print(f"wrote {out}/graph_depths.png, graph_dilation.png, graph_pooled_keys.png")
