"""Attention maps: which earlier tokens each position attends to (`scripts/analyze.py attention`).

The weights come from the model's own `output_attentions=True` with the eager kernel (the fused kernels
never materialise them), one (heads, T, T) tensor per layer. Plots are heatmaps with the tokens on
both axes (query = row, key = column): one PNG per layer with a panel per head, or one large panel
for `--layer L --head H`, or one head across every layer for `--head H`. Positions a query may not
attend to (the future, and past the window on sliding-window layers) are drawn grey, not as zeros,
so the causal triangle and a sliding-window layer's band are visible; those layers say their window
in the title.
"""

from pathlib import Path

import torch


def token_labels(tokenizer, ids: list[int]) -> list[str]:
    """A short printable label per token: its own text, with newlines and tabs shown, spaces as '·'."""
    labels = []
    for i in ids:
        text = tokenizer.decode([i], skip_special_tokens=False)
        text = text.replace("\n", "\\n").replace("\t", "\\t").replace(" ", "·") or repr(i)
        labels.append(text if len(text) <= 12 else text[:11] + "…")
    return labels


@torch.no_grad()
def attention_maps(model, tokenizer, text: str, add_bos: bool = True, max_tokens: int | None = None):
    """(token ids, labels, per-layer weights (heads, T, T) float32 on CPU) for `text` under `model`.

    The model is switched to the eager attention kernel for the call and switched back after.
    """
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if add_bos and tokenizer.bos_token_id is not None:
        ids = [tokenizer.bos_token_id] + ids  # base models see every document after <|bos|>
    limit = max_tokens or getattr(model.config, "max_position_embeddings", len(ids))
    if len(ids) > limit:
        raise ValueError(f"the text is {len(ids)} tokens; at most {limit} fit (shorten it or raise --max_tokens)")
    if not ids:
        raise ValueError("the text is empty: nothing to attend to")
    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        device = next(model.parameters()).device
        out = model(input_ids=torch.tensor([ids], device=device), output_attentions=True, use_cache=False)
    finally:
        model.set_attn_implementation(previous)
    if not out.attentions:
        raise RuntimeError(f"{type(model).__name__} returned no attention weights with output_attentions=True")
    weights = [a[0].float().cpu() for a in out.attentions]  # L x (nh, T, T)
    return ids, token_labels(tokenizer, ids), weights


def allowed_mask(T: int, window: int | None) -> torch.Tensor:
    """(T, T) bool: key j is visible to query i (causal; within `window` tokens, current one included)."""
    i = torch.arange(T)[:, None]
    j = torch.arange(T)[None, :]
    visible = j <= i
    if window is not None:
        visible &= j > i - window
    return visible


def _draw(ax, weights: torch.Tensor, labels: list[str], window: int | None, title: str, fontsize: float,
          vmax: float, x_labels: bool, y_labels: bool) -> object:
    """One heatmap (T, T) on `ax` with the colour scale [0, vmax]; hidden positions grey. Returns the image.
    Token labels go on the outer panels of a grid only (every panel shares them)."""
    import matplotlib.pyplot as plt

    T = weights.shape[-1]
    shown = weights.masked_fill(~allowed_mask(T, window), float("nan")).numpy()
    cmap = plt.get_cmap("viridis").with_extremes(bad="#d9d9d9")  # hidden (NaN) cells in grey
    image = ax.imshow(shown, cmap=cmap, vmin=0.0, vmax=vmax, interpolation="nearest")
    ax.set_xticks(range(T), labels if x_labels else [], rotation=90, fontsize=fontsize)
    ax.set_yticks(range(T), labels if y_labels else [], fontsize=fontsize)
    if x_labels:
        ax.set_xlabel("key (attended to)", fontsize=fontsize + 2)
    if y_labels:
        ax.set_ylabel("query", fontsize=fontsize + 2)
    ax.set_title(title, fontsize=fontsize + 4)
    return image


def plot_attention(weights: list[torch.Tensor], labels: list[str], windows: list[int | None], output_dir,
                   layer: int | None = None, head: int | None = None, prefix: str = "attention") -> list[Path]:
    """Write the heatmaps (see the module docstring for the layouts); returns the PNG paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    L, nh = len(weights), weights[0].shape[0]
    for name, value, n in (("layer", layer, L), ("head", head, nh)):
        if value is not None and not 0 <= value < n:
            raise ValueError(f"--{name} {value} is out of range: the model has {n} {name}s (0..{n - 1})")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    T = len(labels)
    per_row = 4 if T <= 32 else 2  # panels per row: long texts get bigger panels
    fontsize = max(4.0, min(9.0, 400 / max(T, 1)))

    def kind(i: int) -> str:
        return f"sliding window {windows[i]}" if windows[i] is not None else "full causal"

    if layer is not None and head is not None:  # one large panel
        panels = [((layer, head), f"layer {layer}, head {head} ({kind(layer)})")]
        files = [(output_dir / f"{prefix}_layer{layer}_head{head}.png", panels, 1)]
    elif head is not None:  # one head through the depth
        files = [(output_dir / f"{prefix}_head{head}.png",
                  [((i, head), f"layer {i} ({kind(i)})") for i in range(L)], min(L, per_row))]
    else:  # a grid per layer
        layers = [layer] if layer is not None else range(L)
        files = [(output_dir / f"{prefix}_layer{i}.png", [((i, h), f"head {h}") for h in range(nh)], min(nh, per_row))
                 for i in layers]
    written = []
    panel_inches = max(4.0, T * 0.17)
    for path, panels, cols in files:
        rows = -(-len(panels) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(panel_inches * cols + 1.5, panel_inches * rows + 1.5),
                                 squeeze=False, layout="constrained")
        for ax in axes.flat[len(panels):]:
            ax.axis("off")
        vmax = max(float(weights[i][h].max()) for (i, h), _ in panels)  # one colour scale per figure
        for k, (ax, ((i, h), title)) in enumerate(zip(axes.flat, panels)):
            bottom = k + cols >= len(panels)  # no panel below this one
            image = _draw(ax, weights[i][h], labels, windows[i], title, fontsize, vmax, x_labels=bottom,
                          y_labels=k % cols == 0)
        fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.6, label="attention weight")
        if len({p[0][0] for p in panels}) == 1 and len(panels) > 1:
            fig.suptitle(f"layer {panels[0][0][0]} ({kind(panels[0][0][0])}): {nh} heads", fontsize=14)
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


__all__ = ["allowed_mask", "attention_maps", "plot_attention", "token_labels"]
