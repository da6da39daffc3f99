"""A small nanoGPT-shaped decoder with the stabilizer knobs of TrainConfig, and cheap probes.

With `probe=True` the forward pass also returns, as tensors (no host sync):
- `attn_logit_max` (n_layer, n_head): the signed maximum, over every sequence of the batch, every
  query and every causal key, of the attention logit z = q.k/sqrt(d_head) before any soft-capping
  (Wortsman et al. 2023's signal for attention-logit growth; with `softmax_cap` the model uses
  cap*tanh(z/cap), the probe still reports z, so growth stays visible under the cap). It is
  computed in fp32 outside autocast, with q scaled before the product, so an fp16 run's probe
  does not overflow where the model does not; sequences are processed as many at a time as
  `PROBE_ELEMENTS` allows, keeping a running max, so its scratch memory stays bounded;
- `act_rms` (n_layer,): RMS of each block's output (the residual stream);
- `logz`: mean log-sum-exp of the output logits (drifts when output logits diverge; PaLM z-loss).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from stabdiag.train.config import TrainConfig


class RMSNorm(nn.Module):
    """RMS normalisation with a learned scale (``F.rms_norm``), the alternative to LayerNorm."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


def make_norm(cfg: TrainConfig, dim: int) -> nn.Module:
    if cfg.norm == "rmsnorm":
        return RMSNorm(dim)
    return nn.LayerNorm(dim, bias=cfg.bias)


class Attention(nn.Module):
    """Causal self-attention with optional QK-norm; when probed it also returns the max attention
    logit, the series the attention-logit-growth check reads."""

    def __init__(self, cfg: TrainConfig) -> None:
        super().__init__()
        self.n_head, self.d_head = cfg.n_head, cfg.n_embd // cfg.n_head
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.proj.is_residual_out = True
        self.q_norm = make_norm(cfg, self.d_head) if cfg.qk_norm else nn.Identity()
        self.k_norm = make_norm(cfg, self.d_head) if cfg.qk_norm else nn.Identity()
        self.out_norm = make_norm(cfg, cfg.n_embd) if cfg.output_norms else nn.Identity()
        self.cap = cfg.softmax_cap
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor, probe: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        # (B, T, C) -> (B, nh, T, hs)
        q = self.q_norm(q.view(B, T, self.n_head, self.d_head)).transpose(1, 2)
        k = self.k_norm(k.view(B, T, self.n_head, self.d_head)).transpose(1, 2)
        v = v.view(B, T, self.n_head, self.d_head).transpose(1, 2)
        p_drop = self.dropout if self.training else 0.0
        if self.cap > 0:  # explicit path: SDPA cannot soft-cap the logits
            z = (q @ k.transpose(-2, -1)) / math.sqrt(self.d_head)  # (B, nh, T, T)
            z = self.cap * torch.tanh(z / self.cap)
            z = z.masked_fill(_causal(T, x.device).logical_not(), float("-inf"))
            y = F.dropout(F.softmax(z.float(), dim=-1).to(v.dtype), p_drop, self.training) @ v
        else:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p_drop, is_causal=True)
        y = self.out_norm(self.proj(y.transpose(1, 2).reshape(B, T, C)))
        return y, (max_logit(q, k, self.d_head) if probe else None)


def _causal(T: int, device: torch.device) -> torch.Tensor:
    return torch.ones(T, T, dtype=torch.bool, device=device).tril()


PROBE_ELEMENTS = 1 << 22
"""fp32 logits the probe materialises at once (16 MiB): as many sequences per product as fit,
at least one; `tiny` takes its whole batch in one product, `gpu` about ten sequences."""


@torch.no_grad()
def max_logit(q: torch.Tensor, k: torch.Tensor, d_head: int) -> torch.Tensor:
    """q, k (B, nh, T, hs) -> (nh,): per head, the signed max of q.k/sqrt(d_head) over the whole
    batch and every causal (query, key) pair, before soft-capping.

    fp32 outside autocast: under autocast a `.float()` operand is cast back to fp16 for the
    matmul, and an fp16 product of healthy q and k can overflow to inf (the model's own attention
    runs in a kernel that does not). q is scaled before the product, never the product after.
    """
    B, nh, T, _ = q.shape
    chunk = max(1, PROBE_ELEMENTS // (nh * T * T))
    mask = _causal(T, q.device).logical_not()
    best = torch.full((nh,), float("-inf"), device=q.device)
    with torch.autocast(device_type=q.device.type, enabled=False):
        for i in range(0, B, chunk):
            qs = q[i : i + chunk].float() * (1.0 / math.sqrt(d_head))
            z = qs @ k[i : i + chunk].float().transpose(-2, -1)  # (b, nh, T, T)
            best = torch.maximum(best, z.masked_fill_(mask, float("-inf")).amax(dim=(0, 2, 3)))
    return best


class MLP(nn.Module):
    """The block's feed-forward part (4x width), with an optional output norm."""

    def __init__(self, cfg: TrainConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.proj.is_residual_out = True
        self.out_norm = make_norm(cfg, cfg.n_embd) if cfg.output_norms else nn.Identity()
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.out_norm(self.proj(F.gelu(self.fc(x)))))


class Block(nn.Module):
    """pre-LN: x + f(norm(x)); post-LN: norm(x + f(x)); none: x + f(x)."""

    def __init__(self, cfg: TrainConfig) -> None:
        super().__init__()
        self.placement = cfg.norm_placement
        use = cfg.norm_placement != "none"
        self.norm1 = make_norm(cfg, cfg.n_embd) if use else nn.Identity()
        self.norm2 = make_norm(cfg, cfg.n_embd) if use else nn.Identity()
        self.attn = Attention(cfg)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, probe: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.placement == "post":
            a, zmax = self.attn(x, probe)
            x = self.norm1(x + a)
            return self.norm2(x + self.mlp(x)), zmax
        a, zmax = self.attn(self.norm1(x), probe)
        x = x + a
        return x + self.mlp(self.norm2(x)), zmax


class GPT(nn.Module):
    """The small GPT-style reference transformer ``stabdiag train`` instruments: its switches
    (norm placement, QK-norm, scaled residual init, output norms) are stabilizers a sweep compares."""

    def __init__(self, cfg: TrainConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        # post-LN blocks already end in a norm; pre-LN needs a final one before the head.
        self.norm_f = make_norm(cfg, cfg.n_embd) if cfg.norm_placement == "pre" else nn.Identity()
        self.head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.head.weight = self.wte.weight
        self.embed_scale = math.sqrt(cfg.n_embd) if cfg.scaled_embed else 1.0
        self.head_grad_sq: torch.Tensor | None = None
        """Tied embeddings: the squared norm of the output projection's gradient in the last
        probed backward pass (scaled like the loss it came from)."""
        self.apply(self._init)

    def _init(self, m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            std = self.cfg.init_std
            if getattr(m, "is_residual_out", False) and self.cfg.scaled_residual_init:
                std /= math.sqrt(2 * self.cfg.n_layer)  # GPT-2: keep the residual stream's scale
            nn.init.normal_(m.weight, mean=0.0, std=std)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)

    def layer_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by layer, for per-layer grad norms: embed, block0..N-1, head.

        Every parameter is in exactly one group, so the groups' squared norms add up to the
        global one. With tied embeddings the shared matrix is counted in `embed` (its whole
        gradient: lookup plus output projection); `head` then holds the final norm's gain and
        the output projection's share of the shared gradient, recorded by a hook during the
        probed forward pass (`head_grad_sq`), so `grad_norm/head` means the same with and
        without tying. Under torchrun the hook sees the rank's own share, before DDP averages
        the gradients across ranks (every other group's norm is taken after).
        """
        groups = {"embed": [*self.wte.parameters(), *self.wpe.parameters()]}
        for i, block in enumerate(self.blocks):
            groups[f"block{i}"] = list(block.parameters())
        seen = {id(p) for ps in groups.values() for p in ps}
        groups["head"] = [
            p for p in [*self.norm_f.parameters(), *self.head.parameters()] if id(p) not in seen
        ]
        return groups

    def _record_head_grad(self, grad: torch.Tensor) -> None:
        self.head_grad_sq = grad.detach().float().pow(2).sum()

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor,
        *,
        z_loss: float = 0.0,
        probe: bool = False,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """idx, targets (B, T) -> (loss incl. z-loss, stats); stats holds the detached
        cross-entropy `ce` (what we log as the loss) and, with `probe`, the probes above."""
        B, T = idx.shape
        pos = torch.arange(T, device=idx.device)
        x = self.drop(self.wte(idx) * self.embed_scale + self.wpe(pos))  # (B, T, C)
        zmax, rms = [], []
        for block in self.blocks:
            x, z = block(x, probe)
            if probe:
                zmax.append(z)  # (nh,)
                rms.append(x.detach().float().pow(2).mean().sqrt())
        h = self.norm_f(x)
        if self.cfg.tie_embeddings:
            # A view is its own autograd node: its hook sees the output projection's share of
            # the shared matrix's gradient, which the parameter's .grad mixes with the lookup's.
            w = self.wte.weight.view_as(self.wte.weight)
            if probe and w.requires_grad:
                w.register_hook(self._record_head_grad)
            logits = F.linear(h, w).float()  # (B, T, V); fp32 for the loss
        else:
            logits = self.head(h).float()
        ce = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))
        loss, logz = ce, None
        if z_loss > 0:  # PaLM: coef * log^2 Z keeps the softmax normalizer near 1
            lse = torch.logsumexp(logits, dim=-1)  # (B, T)
            loss = loss + z_loss * lse.pow(2).mean()
            logz = lse.detach().mean()
        if not probe:
            return loss, {"ce": ce.detach()}
        if logz is None:
            logz = torch.logsumexp(logits.detach(), dim=-1).mean()
        return loss, {
            "ce": ce.detach(),
            "attn_logit_max": torch.stack(zmax),
            "act_rms": torch.stack(rms),
            "logz": logz,
        }
