"""Node-feature diversity per layer: ViG vs a plain residual GCN, as in Figure 3 of the paper.

Deep stacks of graph convolutions over-smooth: node features drift towards their common mean
and the image stops being a set of distinct patches. ViG counters this with linear layers
around the graph convolution (Grapher, Eq. 6) and a per-node FFN (Eq. 7). Following the paper,
the diversity of the node features ``X`` (``N x D``) of one image is

    gamma(X) = || X - 1 x^T ||,   x = argmin_x || X - 1 x^T ||,

measured here with the l1,inf norm of Dong et al. (sqrt(||.||_1 ||.||_inf)), ``x`` the mean node
and divided by ``||X||`` so that layers of different scale compare. Two 12-layer networks share
the stem, position embedding, k-NN schedule and head:

* ViG: 12 ViG blocks (Grapher with fc1/fc2 + FFN);
* ResGCN (DeepGCNs, "vanilla"): 12 blocks ``x + GELU(BN(MRConv(x)))`` without fc1/fc2/FFN.

Both are trained with the same budget on the embedded Fashion-MNIST subset; the diversity after
every layer is averaged over test images and plotted (dashed: at initialisation).

    python examples/feature_diversity.py
    python examples/feature_diversity.py --steps 500    # closer to fully trained networks
"""

import argparse
import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

import pyg_vig  # noqa: E402
from pyg_vig.datasets import build_transform, load_dataset  # noqa: E402
from pyg_vig.nn import MRConv, knn_graph  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--depth", type=int, default=12)
parser.add_argument("--dim", type=int, default=48)
parser.add_argument("--steps", type=int, default=100, help="training steps per model")
parser.add_argument("--batch-size", type=int, default=32)
parser.add_argument("--eval-images", type=int, default=1000)
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--out", default="runs/examples/feature_diversity")
args = parser.parse_args()
torch.manual_seed(0)
torch.set_num_threads(args.threads)
out_dir = Path(args.out)
out_dir.mkdir(parents=True, exist_ok=True)

mean, std = (0.286,), (0.353,)
train_set = load_dataset("fashion_mnist_subset", "train",
                         transform=build_transform(True, 28, mean, std, reprob=0.0))
test_set = load_dataset("fashion_mnist_subset", "test",
                        transform=build_transform(False, 28, mean, std))
test_set = torch.utils.data.Subset(test_set, range(args.eval_images))


# 1. The two networks. The ResGCN block has the call signature of a ViG block, so it can
#    replace ViG's blocks in place: same stem, position embedding, graph schedule and head.
class ResGCNBlock(nn.Module):
    """x + GELU(BN(MRConv(x))) on a dynamic k-NN graph; no fc1/fc2, no FFN."""

    def __init__(self, dim, k, dilation):
        super().__init__()
        self.k, self.dilation = k, dilation
        self.conv = MRConv(dim, dim, heads=1, act="gelu")  # update: Linear -> BN -> GELU

    def forward(self, x, batch=None, layout=None, return_edge_index=False):
        batch = layout.batch(x.device) if batch is None else batch
        edge_index = knn_graph(x, self.k, batch, dilation=self.dilation)
        x = x + self.conv(x, edge_index)
        return (x, edge_index) if return_edge_index else x


def build(kind):
    model = pyg_vig.create_model("vig_mini", num_classes=10, in_chans=1, depth=args.depth,
                                 embed_dim=args.dim, head_hidden=2 * args.dim)
    if kind == "ResGCN":
        model.blocks = nn.ModuleList(
            ResGCNBlock(args.dim, k, d) for k, d in zip(model.ks, model.dilations, strict=True))
    return model


# 2. Diversity of every layer's node features, averaged over images.
def l1_inf(m):
    # ||M||_1 = max column abs sum, ||M||_inf = max row abs sum (per image: dims 1 and 2).
    return (m.abs().sum(1).amax(-1) * m.abs().sum(2).amax(-1)).sqrt()


@torch.no_grad()
def diversity_per_layer(model):
    model.eval()
    # Hooks collect the node features [N, D] entering the first block (stem + position
    # embedding: layer 0) and leaving every block.
    feats = []
    hooks = [model.blocks[0].register_forward_pre_hook(lambda m, inputs: feats.append(inputs[0]))]
    hooks += [b.register_forward_hook(lambda m, inputs, out: feats.append(out))
              for b in model.blocks]
    totals = torch.zeros(len(model.blocks) + 1)
    for x, _ in DataLoader(test_set, 250):
        feats.clear()
        _, layout, _ = model.forward_nodes(x)
        for i, f in enumerate(feats):
            X = f.view(layout.num_graphs, layout.counts[0], -1)  # (B*N, D) -> (B, N, D)
            centred = X - X.mean(dim=1, keepdim=True)  # X - 1 x^T
            totals[i] += (l1_inf(centred) / l1_inf(X)).sum()
    for h in hooks:
        h.remove()
    return (totals / len(test_set)).tolist()


@torch.no_grad()
def accuracy(model):
    model.eval()
    correct = sum((model(x).argmax(1) == y).sum().item() for x, y in DataLoader(test_set, 250))
    return correct / len(test_set)


def train(model):
    loader = DataLoader(train_set, args.batch_size, shuffle=True, drop_last=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, 2e-3, total_steps=args.steps)
    model.train()
    step = 0
    while step < args.steps:
        for x, y in loader:
            loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
            scheduler.step()
            step += 1
            if step == args.steps:
                break
    return loss.item()


# 3. Measure at initialisation, train, measure again.
results = {}
for kind in ["ViG", "ResGCN"]:
    torch.manual_seed(0)
    model = build(kind)
    params = sum(p.numel() for p in model.parameters())
    init = diversity_per_layer(model)
    t0 = time.time()
    loss = train(model)
    trained = diversity_per_layer(model)
    acc = accuracy(model)
    results[kind] = dict(init=init, trained=trained, test_accuracy=acc, params=params)
    print(f"{kind:6s} {params / 1e6:.2f}M params, {args.steps} steps in {time.time() - t0:.0f} s,"
          f" final loss {loss:.3f}, test accuracy {acc:.3f} ({len(test_set)} images)")
    print("   diversity per layer (trained): " + " ".join(f"{v:.2f}" for v in trained))

# 4. Figure 3.
fig, ax = plt.subplots(figsize=(5, 3.6))
for kind, colour in [("ResGCN", "tab:blue"), ("ViG", "tab:red")]:
    r = results[kind]
    layers = range(len(r["trained"]))
    ax.plot(layers, r["trained"], "o-", color=colour,
            label=f"{kind} (trained, acc {r['test_accuracy']:.2f})")
    ax.plot(layers, r["init"], "--", color=colour, alpha=0.6, label=f"{kind} (init)")
ax.set_xlabel("Layer")
ax.set_ylabel(r"Diversity $\|X - 1x^T\| / \|X\|$")
ax.set_ylim(bottom=0)
ax.set_title("Feature diversity of nodes as layers go deeper", fontsize=10)
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(out_dir / "diversity.png", dpi=130)
(out_dir / "diversity.json").write_text(json.dumps(results, indent=2))
print(f"wrote {out_dir / 'diversity.png'} and diversity.json")
