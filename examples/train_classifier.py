"""Train a small Vision GNN on Fashion-MNIST, step by step.

This is what ``make demo`` does through :class:`pyg_vig.train.Trainer`, written out as a plain
loop so every piece is visible: data, model, optimiser, schedule, EMA, evaluation.

    python examples/train_classifier.py                 # ~2 minutes on 2 CPU cores
    python examples/train_classifier.py --epochs 8      # closer to the demo's accuracy
"""

import argparse
import math
import time

import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader

import pyg_vig
from pyg_vig.datasets import build_transform, load_dataset

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--model", default="vig_mini")
parser.add_argument("--epochs", type=int, default=2)
parser.add_argument("--batch-size", type=int, default=128)
parser.add_argument("--lr", type=float, default=2e-3)
parser.add_argument("--train-images", type=int, default=20000, help="use the first N images")
parser.add_argument("--threads", type=int, default=2)
args = parser.parse_args()
torch.manual_seed(0)
torch.set_num_threads(args.threads)

# 1. Data: the Fashion-MNIST subset shipped inside the package (20k train / 5k test, 28x28).
#    Train-time augmentation: random crop with padding, flip, random erasing (paper, Table 3).
mean, std = (0.286,), (0.353,)
train_set = load_dataset("fashion_mnist_subset", "train",
                         transform=build_transform(True, 28, mean, std))
test_set = load_dataset("fashion_mnist_subset", "test",
                        transform=build_transform(False, 28, mean, std))
if args.train_images < len(train_set):
    train_set = torch.utils.data.Subset(train_set, range(args.train_images))
train_loader = DataLoader(train_set, args.batch_size, shuffle=True, drop_last=True)
test_loader = DataLoader(test_set, 256)

# 2. Model: a small isotropic ViG. Each block builds a k-NN graph over its 7x7 patch nodes
#    and runs max-relative graph convolution (a PyG MessagePassing layer) and an FFN.
model = pyg_vig.create_model(args.model, num_classes=10, in_chans=1, drop_path_rate=0.1)
print(f"{args.model}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters")

# 3. Optimiser: AdamW without weight decay on norms, biases and the position embedding,
#    linear warm-up then cosine decay, label smoothing, gradient clipping, EMA of the weights.
decay, no_decay = [], []
for name, p in model.named_parameters():
    (no_decay if p.ndim <= 1 or name in model.no_weight_decay() else decay).append(p)
optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05},
                               {"params": no_decay, "weight_decay": 0.0}], lr=args.lr)
total = args.epochs * len(train_loader)
warmup = len(train_loader) // 2


def lr_at(step):
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.99), use_buffers=True)


@torch.no_grad()
def accuracy(net):
    net.eval()
    correct = sum((net(x).argmax(1) == y).sum().item() for x, y in test_loader)
    return correct / len(test_set)


# 4. Training loop.
step = 0
for epoch in range(args.epochs):
    model.train()
    t0 = time.time()
    for x, y in train_loader:
        loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        scheduler.step()
        ema.update_parameters(model)
        step += 1
    rate = len(train_loader) * args.batch_size / (time.time() - t0)
    print(f"epoch {epoch + 1}/{args.epochs}  loss {loss.item():.3f}  {rate:.0f} img/s  "
          f"test accuracy {accuracy(model):.4f}  (EMA {accuracy(ema.module):.4f})")

# 5. The patch graph of one test image: node features, grid positions and the k-NN edges of
#    the last block, as a PyG Batch ready for any other PyG layer.
graph = model.eval().forward_graph(test_set[0][0].unsqueeze(0))
print(graph)
