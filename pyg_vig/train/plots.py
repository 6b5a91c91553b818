"""Figures written into a run folder: confusion matrix and training curves."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

__all__ = [
    "confusion_matrix",
    "draw_knn_graph",
    "plot_confusion_matrix",
    "plot_training_curves",
]


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """Counts ``[num_classes, num_classes]``: row = true class, column = predicted class."""
    idx = target.long() * num_classes + pred.long()
    return torch.bincount(idx, minlength=num_classes**2).view(num_classes, num_classes)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def plot_confusion_matrix(
    cm: Tensor, classes: list[str], path: str | Path, title: str = ""
) -> None:
    """Save the row-normalised confusion matrix with counts in each cell."""
    plt = _pyplot()
    K = len(classes)
    norm = cm.float() / cm.sum(1, keepdim=True).clamp(min=1)
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * K, 0.8 + 0.55 * K))
    ax.imshow(norm.numpy(), cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(K), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(K), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(K):
        for j in range(K):
            color = "white" if norm[i, j] > 0.5 else "black"
            ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7, color=color)
    ax.set_title(title or f"accuracy {cm.diag().sum().item() / max(cm.sum().item(), 1):.4f}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_training_curves(history: list[dict], path: str | Path, test_label: str = "test") -> None:
    """Save loss and accuracy per epoch (train and test) side by side."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    epochs = [h["epoch"] for h in history]
    tested = [h for h in history if h.get("test_acc") is not None]  # --eval-every N skips some
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    ax_loss.plot([h["epoch"] for h in tested], [h["test_loss"] for h in tested], "o-",
                 label=test_label)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    ax_acc.plot(epochs, [h["train_acc"] for h in history], "o-", label="train (augmented)")
    ax_acc.plot([h["epoch"] for h in tested], [h["test_acc"] for h in tested], "o-",
                label=test_label)
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy")
    ax_acc.legend()
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _grid_of_sources(num_src: int, query_grid: tuple[int, int]) -> tuple[int, int]:
    """The key grid that edge sources index: the query grid, or a pooled (reduced) copy of it."""
    H, W = query_grid
    for r in range(8, 0, -1):  # the coarsest pooling that still holds every source index
        h, w = -(-H // r), -(-W // r)
        if h * w >= num_src:
            return h, w
    return H, W


@torch.no_grad()
def draw_knn_graph(
    model: torch.nn.Module,
    x: Tensor,
    image: Tensor,
    blocks: list[int],
    centers: list[tuple[float, float]],
    path: str | Path,
    title: str = "",
    classes: list[str] | None = None,
) -> Path:
    """Draw, over ``image``, the k-NN neighbours of centre nodes in chosen Grapher blocks.

    The paper's Figure 4: in a shallow block neighbours are near the centre and look alike; in a
    deep block they are spread over the object by semantics.

    Args:
        model (nn.Module): a ViG with ``forward_graph``.
        x (Tensor): the normalised input ``[1, C, H, W]``.
        image (Tensor): the same image un-normalised, ``[C, H, W]`` in ``[0, 1]``, for display.
        blocks (list of int): Grapher block indices (negative counts from the end).
        centers (list of (float, float)): centre positions as (y, x) fractions of the image.
        path (str or Path): output PNG.
        title (str): figure title.
        classes (list of str, optional): class names, to show the prediction.
    """
    plt = _pyplot()
    graph = model.eval().forward_graph(x)
    edge_indices, edge_grids = graph.edge_indices, graph.edge_grids
    n_blocks = len(edge_indices)
    picked = []
    for b in blocks:
        if not -n_blocks <= b < n_blocks:
            raise ValueError(f"block {b} out of range: the model has {n_blocks} Grapher blocks")
        picked.append(b % n_blocks)
    pred = ""
    if classes is not None:
        p = model(x).float().softmax(-1)[0]
        pred = f" | predicted {classes[int(p.argmax())]} ({float(p.max()):.2f})"
    C, Himg, Wimg = image.shape
    shown = image[0] if C == 1 else image.permute(1, 2, 0)  # (C, H, W) -> (H, W[, C])
    colors = ["tab:red", "tab:cyan", "tab:orange", "tab:green", "tab:purple", "tab:pink"]
    fig, axes = plt.subplots(1, len(picked), figsize=(4.2 * len(picked), 4.6), squeeze=False)
    for ax, b in zip(axes[0], picked, strict=True):
        src, dst = edge_indices[b].cpu()
        H, W = edge_grids[b][0]
        kh, kw = _grid_of_sources(int(src.max()) + 1, (H, W))
        ax.imshow(shown.cpu().numpy(), cmap="gray", extent=(0, Wimg, Himg, 0))

        def to_px(idx: int, h: int, w: int) -> tuple[float, float]:
            r, c = divmod(idx, w)
            return (c + 0.5) * Wimg / w, (r + 0.5) * Himg / h

        for i, (fy, fx) in enumerate(centers):
            r, c = min(int(fy * H), H - 1), min(int(fx * W), W - 1)
            centre = r * W + c
            nbrs = src[dst == centre].tolist()
            cx, cy = to_px(centre, H, W)
            color = colors[i % len(colors)]
            for n in nbrs:
                nx, ny = to_px(n, kh, kw)
                ax.plot([cx, nx], [cy, ny], "-", color=color, lw=1, alpha=0.7)
                ax.plot(nx, ny, "o", ms=5, mfc=color, mec="white", mew=0.6)
            ax.plot(cx, cy, "*", ms=14, mfc=color, mec="black", mew=0.8)
        ax.set_title(f"block {b + 1}/{n_blocks}: {H}x{W} nodes, k={src.numel() // (H * W)}")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle((title or "k-NN neighbours") + pred)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path
