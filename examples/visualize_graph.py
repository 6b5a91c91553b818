"""Draw the patch graph that ViG builds, as in Figure 4 of the paper.

Every ViG block rebuilds a k-nearest-neighbour graph over the patch nodes from its current
features. For two centre nodes (stars) of an image, this script colours their neighbours in a
shallow block (the first) and a deep block (the last) over the image. In the paper, shallow
neighbours are picked by low-level look (colour, texture) and deep ones by semantics (the same
object part).

It draws isotropic ViG models (one node grid in every block). Without ``--checkpoint`` a
small one is trained briefly (120 steps) on the embedded Fashion-MNIST subset first; with a
2x2-pixel stem the 28x28 images become a 14x14 node grid, the grid of ViG at 224 px.

    python examples/visualize_graph.py
    python examples/visualize_graph.py --checkpoint runs/demo      # a `pyg-vig train` run
"""

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

import pyg_vig  # noqa: E402
from pyg_vig.datasets import FASHION_MNIST_CLASSES, build_transform, load_dataset  # noqa: E402
from pyg_vig.train import ConfigError, load_trained_model  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--checkpoint", default=None, help="weights of --model (skips training)")
parser.add_argument("--model", default="vig_mini")
parser.add_argument("--stem-stride", type=int, default=2, help="patch size in pixels")
parser.add_argument("--dim", type=int, default=64, help="node feature size (when training)")
parser.add_argument("--steps", type=int, default=120, help="training steps without checkpoint")
parser.add_argument("--batch-size", type=int, default=32)
parser.add_argument("--images", type=int, nargs="+", default=None,
                    help="test image indices (default: the first T-shirt/top and Bag)")
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--out", default="runs/examples/visualize_graph")
args = parser.parse_args()
torch.manual_seed(0)
torch.set_num_threads(args.threads)
out_dir = Path(args.out)
out_dir.mkdir(parents=True, exist_ok=True)

mean, std = (0.286,), (0.353,)
test_raw = load_dataset("fashion_mnist_subset", "test")  # [0, 1] images for display

# 1. A model: load the given weights, or train one briefly.
overrides = dict(num_classes=10, in_chans=1, stem_stride=args.stem_stride)
if args.checkpoint:
    try:  # a `pyg-vig train` run folder or its model.safetensors knows its own configuration
        model, cfg = load_trained_model(args.checkpoint)
        mean, std = tuple(cfg.mean), tuple(cfg.std)
    except ConfigError:  # any other weights file of --model
        model = pyg_vig.create_model(args.model, checkpoint=args.checkpoint, **overrides)
    if "pyramid" in type(model).__module__:
        raise SystemExit(
            f"visualize_graph.py: error: {args.checkpoint} holds a pyramid ViG "
            f"({type(model).__name__}), whose node grid shrinks from stage to stage; this "
            "script draws isotropic ViG models only. For a pyramid run use "
            f"`pyg-vig graph {args.checkpoint} test:0`."
        )
else:
    model = pyg_vig.create_model(args.model, embed_dim=args.dim, head_hidden=2 * args.dim,
                                 **overrides)
    train_set = load_dataset("fashion_mnist_subset", "train",
                             transform=build_transform(True, 28, mean, std, reprob=0.0))
    loader = DataLoader(train_set, args.batch_size, shuffle=True, drop_last=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, 2e-3, total_steps=args.steps)
    model.train()
    t0 = time.time()
    for step, (x, y) in enumerate(loader, start=1):
        loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if step % 50 == 0:
            print(f"step {step}/{args.steps}  loss {loss.item():.3f}  {time.time() - t0:.0f} s")
        if step == args.steps:
            break
model.eval()
normalize = build_transform(False, 28, mean, std)


# 2. The graph of one image. forward_graph returns a PyG Batch whose edge_indices hold every
#    block's edge_index [2, N * k] (source = neighbour, target = centre node).
def neighbours(edge_index, centre):
    return edge_index[0, edge_index[1] == centre].tolist()


def pick_centres(image, grid):
    # Two nodes on the object: the brightest patch, and the object patch farthest from it.
    h, w = grid
    patches = F.adaptive_avg_pool2d(image, grid)[0].flatten()  # (h*w,) mean brightness
    first = int(patches.argmax())
    on_object = (patches > 0.5 * patches.max()).nonzero().flatten()
    rows, cols = on_object // w, on_object % w
    dist = (rows - first // w) ** 2 + (cols - first % w) ** 2
    return [first, int(on_object[dist.argmax()])]


def draw(ax, image, grid, centres, edge_index, title):
    h, w = grid
    ph, pw = image.shape[-2] / h, image.shape[-1] / w  # patch size in pixels
    ax.imshow(image[0], cmap="gray", vmin=0, vmax=1)
    colours = ["tab:orange", "tab:cyan"]
    for centre, colour in zip(centres, colours, strict=False):
        for j in neighbours(edge_index, centre):
            if j == centre:
                continue
            r, c = divmod(j, w)
            ax.add_patch(plt.Rectangle((c * pw - 0.5, r * ph - 0.5), pw, ph, color=colour,
                                       alpha=0.55, linewidth=0))
    for centre, colour in zip(centres, colours, strict=False):
        r, c = divmod(centre, w)
        ax.plot((c + 0.5) * pw - 0.5, (r + 0.5) * ph - 0.5, marker="*", markersize=16,
                color=colour, markeredgecolor="black")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


if args.images is None:
    labels = test_raw.labels.tolist()
    args.images = [labels.index(0), labels.index(8)]
fig, axes = plt.subplots(len(args.images), 3, figsize=(9, 3.1 * len(args.images)),
                         squeeze=False)
for row, index in zip(axes, args.images, strict=True):
    image, label = test_raw[index]
    with torch.no_grad():
        graph = model.forward_graph(normalize(image).unsqueeze(0))
        pred = int(model(normalize(image).unsqueeze(0)).argmax())
    grid = tuple(graph.grid_size[0].tolist())
    centres = pick_centres(image, grid)
    first, last = graph.edge_indices[0], graph.edge_indices[-1]
    n = len(graph.edge_indices)
    row[0].imshow(image[0], cmap="gray", vmin=0, vmax=1)
    row[0].set_title(f"input: {FASHION_MNIST_CLASSES[label]}\n"
                     f"(predicted {FASHION_MNIST_CLASSES[pred]})", fontsize=9)
    row[0].set_xticks([])
    row[0].set_yticks([])
    k_first, k_last = first.size(1) // graph.num_nodes, last.size(1) // graph.num_nodes
    draw(row[1], image, grid, centres, first, f"block 1 ({k_first} neighbours)")
    draw(row[2], image, grid, centres, last, f"block {n} ({k_last} neighbours)")
    for centre in centres:
        near = neighbours(first, centre)
        far = neighbours(last, centre)
        print(f"image {index} centre {divmod(centre, grid[1])}: block 1 neighbours "
              f"{[divmod(j, grid[1]) for j in near]}\n    block {n} neighbours "
              f"{[divmod(j, grid[1]) for j in far]}")
fig.suptitle("ViG graph structure: stars are centre nodes, same-colour patches their "
             "neighbours", fontsize=10)
fig.tight_layout()
path = out_dir / "graph.png"
fig.savefig(path, dpi=120)
print(f"wrote {path}")
