"""Compose ViG with other PyTorch Geometric layers, then train and evaluate it.

A ViG block is a Grapher (a k-NN graph over the patch nodes, rebuilt from the current features,
and a graph convolution) followed by an FFN. The graph convolution is pluggable: any PyG
``MessagePassing`` layer can take its place through a factory ``(in_channels, out_channels) ->
conv``. This example builds

    stem -> 3 ViG blocks with GATConv -> 1 ViG block with TransformerConv
         -> AttentionalAggregation (attention pooling over the nodes) -> linear classifier

from pyg_vig and torch_geometric parts, trains it for a few hundred steps on the Fashion-MNIST
subset shipped with pyg_vig and reports the test accuracy.

    python examples/compose_with_pyg.py                   # 200 steps, test accuracy ~0.74
    python examples/compose_with_pyg.py --steps 1000      # better accuracy
"""

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from torch_geometric.nn import GATConv, TransformerConv
from torch_geometric.nn.aggr import AttentionalAggregation

import pyg_vig
from pyg_vig.datasets import build_transform, load_dataset
from pyg_vig.nn import ViGBlock

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--steps", type=int, default=200, help="training steps")
parser.add_argument("--batch-size", type=int, default=64)
parser.add_argument("--lr", type=float, default=2e-3)
parser.add_argument("--dim", type=int, default=64, help="node feature size")
parser.add_argument("--heads", type=int, default=4, help="attention heads of GAT/Transformer")
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--out", default="runs/examples/compose_with_pyg")
args = parser.parse_args()
torch.manual_seed(0)
torch.set_num_threads(args.threads)
out_dir = Path(args.out)
out_dir.mkdir(parents=True, exist_ok=True)

# 1. Data: 28x28 grayscale images, normalised; light augmentation for training.
mean, std = (0.286,), (0.353,)
train_set = load_dataset("fashion_mnist_subset", "train",
                         transform=build_transform(True, 28, mean, std, reprob=0.0))
test_set = load_dataset("fashion_mnist_subset", "test",
                        transform=build_transform(False, 28, mean, std))
train_loader = DataLoader(train_set, args.batch_size, shuffle=True, drop_last=True)
test_loader = DataLoader(test_set, 500)


# 2. Graph convolutions from PyG, as factories. The Grapher calls them with
#    (in_channels=C, out_channels=2C) and then conv(x, edge_index). The k-NN graph already
#    contains every node itself (distance 0), so GAT must not add self-loops again.
def gat(in_channels, out_channels):
    return GATConv(in_channels, out_channels // args.heads, heads=args.heads,
                   add_self_loops=False)


def transformer(in_channels, out_channels):
    return TransformerConv(in_channels, out_channels // args.heads, heads=args.heads)


class ComposedViG(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        # The backbone: vig_mini's stride-4 stem (a 7x7 node grid at 28 px) and 3 ViG blocks
        # whose Grapher runs GATConv. We pool and classify ourselves.
        self.backbone = pyg_vig.create_model("vig_mini", num_classes=0, in_chans=1,
                                             embed_dim=args.dim, depth=3, conv=gat,
                                             head_hidden=args.dim)
        self.backbone.head = nn.Identity()  # unused: forward_nodes stops before it
        # One more ViG block built directly, with a TransformerConv Grapher (k=12 neighbours).
        self.block = ViGBlock(args.dim, k=12, conv=transformer)
        # Attention pooling: a gate scores every node, softmax within each image, weighted sum.
        self.pool = AttentionalAggregation(
            gate_nn=nn.Sequential(nn.Linear(args.dim, args.dim), nn.GELU(),
                                  nn.Linear(args.dim, 1)),
            nn=nn.Sequential(nn.Linear(args.dim, 2 * args.dim), nn.GELU()),
        )
        self.classifier = nn.Linear(2 * args.dim, num_classes)

    def forward(self, images):
        # Node features of the whole batch, graph-first: x [N, C], layout = grid of each image.
        x, layout, _ = self.backbone.forward_nodes(images)
        x = self.block(x, layout=layout)          # rebuilds its own k-NN graph per image
        batch = layout.batch(x.device)            # [N] image index of every node (PyG style)
        x = self.pool(x, batch, dim_size=layout.num_graphs)  # [N, C] -> [B, 2C]
        return self.classifier(x)


model = ComposedViG()
n_params = sum(p.numel() for p in model.parameters())
print(f"ComposedViG: {n_params / 1e6:.2f}M parameters")
print(model.backbone.blocks[0].grapher.graph_conv, model.block.grapher.graph_conv, sep="\n")

# 3. Training: AdamW, linear warm-up then cosine decay, label smoothing.
optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
warmup = max(1, args.steps // 10)
scheduler = torch.optim.lr_scheduler.SequentialLR(optimizer, [
    torch.optim.lr_scheduler.LinearLR(optimizer, 0.01, 1.0, warmup),
    torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, args.steps - warmup),
], [warmup])

step, t0, history = 0, time.time(), []
model.train()
while step < args.steps:
    for x, y in train_loader:
        loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        scheduler.step()
        step += 1
        history.append(loss.item())
        if step % 50 == 0 or step == args.steps:
            rate = step * args.batch_size / (time.time() - t0)
            print(f"step {step:4d}/{args.steps}  loss {sum(history[-50:]) / len(history[-50:]):.3f}"
                  f"  {rate:.0f} img/s")
        if step == args.steps:
            break
train_time = time.time() - t0


# 4. Evaluation on the 5000 test images.
@torch.no_grad()
def evaluate(net):
    net.eval()
    correct = 0
    for x, y in test_loader:
        correct += (net(x).argmax(1) == y).sum().item()
    return correct / len(test_set)


acc = evaluate(model)
print(f"test accuracy {acc:.4f} after {args.steps} steps ({train_time:.0f} s of training)")

# 5. Where does the attention pooling look? Gate weights of one test image on its 7x7 grid.
image = test_set[0][0].unsqueeze(0)
with torch.no_grad():
    x, layout, _ = model.backbone.forward_nodes(image)
    x = model.block(x, layout=layout)
    gate = torch.softmax(model.pool.gate_nn(x).squeeze(-1), dim=0).view(*layout.sizes[0])
print("attention pooling weights of test image 0 (7x7 patch grid):")
for row in gate.tolist():
    print("  " + " ".join(f"{v:.2f}" for v in row))

summary = dict(test_accuracy=acc, steps=args.steps, batch_size=args.batch_size,
               params=n_params, train_seconds=round(train_time, 1))
(out_dir / "metrics.json").write_text(json.dumps(summary, indent=2))
print(f"wrote {out_dir / 'metrics.json'}")
