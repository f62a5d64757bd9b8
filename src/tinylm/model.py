"""TinyBert: the paper's BERT encoders in one file, with weight names that match transformers' BERT.

    input ids ──► Embeddings (word + position + token type → LayerNorm → dropout)
              ──► [ConvFrontEnd]  (optional: the paper's BERT-1 conv variants)
              ──► L × Layer       (post-LN: x = LN(x + Attn(x)); x = LN(x + FFN(x)))
              ──► heads: MaskedLMHead (logits only where asked) | Pooler → dropout → classifier

Module and parameter names mirror `BertForMaskedLM` / `BertForSequenceClassification`
(`bert.embeddings.word_embeddings.weight`, `bert.encoder.layer.0.attention.self.query.weight`, ...),
so a state dict of a model without the conv front-end loads into transformers and back unchanged.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tinylm import randomness
from tinylm.config import ModelConfig
from tinylm.registry import PAD_ID
from tinylm.sampled_loss import Candidates, sampled_cross_entropy
from tinylm.vocab_loss import linear_cross_entropy

ModuleT = TypeVar("ModuleT", bound=nn.Module)


def dropout(
    x: Tensor, p: float, training: bool, seq_dims: tuple[int, ...] = (0,), packed: Packed | None = None
) -> Tensor:
    """Inverted dropout. The keep-mask comes from 16-bit random integers, four per 64-bit draw: about 2×
    cheaper than `F.dropout`'s Bernoulli sampling, with the drop probability quantised to a multiple of
    1/65536 (0.1 → 0.100006). In a training step each row draws from its own generator
    (`tinylm.randomness`; `seq_dims`: the sequence axes of a row, drawn at full length and cut), so a
    row's mask does not depend on the micro-batch it is in. Elsewhere: torch's generator on CPU,
    `F.dropout` on other devices. `packed`: x holds only a padded batch's real tokens (N, H); its rows'
    masks are drawn as for the padded batch and the same entries kept, so packing changes no mask."""
    if not training or p == 0.0:
        return x
    rows = randomness.active()
    if rows is not None:
        shape = (packed.T, *x.shape[1:]) if packed is not None else x.shape[1:]
        assert len(rows) == (packed.B if packed is not None else x.shape[0]), "one generator per row"
        bits = rows.bits16(shape, seq_dims).to(x.device)
        bits = packed.pack(bits) if packed is not None else bits
    elif x.device.type != "cpu":
        return F.dropout(x, p, True)
    else:
        n = x.numel()
        bits = (
            torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64)
            .view(torch.int16)[:n]
            .view(x.shape)
        )
    return torch.where(bits >= -32768 + round(p * 65536), x * (1.0 / (1.0 - p)), 0.0)


class Dropout(nn.Module):
    def __init__(self, p: float, seq_dims: tuple[int, ...] = (0,)):
        super().__init__()
        self.p, self.seq_dims = p, seq_dims

    def forward(self, x: Tensor, packed: Packed | None = None) -> Tensor:
        return dropout(x, self.p, self.training, self.seq_dims, packed)


#: packed row counts are multiples of this (see `Packed.of`)
PACK_BUCKET = 64


@dataclass
class Packed:
    """A padded batch's real tokens packed into rows (N, ...): the blocks' per-token work (projections,
    feed-forward, LayerNorm, dropout) skips the padding, ~half of a batch of short texts; attention runs
    on the padded layout (`pad`), so every real token's result is the padded computation's.

    B, T: the padded batch's shape; idx: flat indices (into B·T) of the real tokens, row by row; starts:
    each row's first token ([CLS]) in the packed rows."""

    B: int
    T: int
    idx: Tensor
    starts: Tensor

    @staticmethod
    def of(attention: Tensor) -> Packed:
        """The packing of a (B, T) 1/0 padding mask whose real tokens come first in every row. The real
        tokens are followed by padding positions up to a multiple of PACK_BUCKET rows: each new row count
        of a matmul makes oneDNN build and cache a primitive (memory grew ~4 MB a step with one count per
        batch, `tests/test_memory.py`); the extra rows compute what the padded batch computes there."""
        B, T = attention.shape
        flat = attention.reshape(-1).bool()
        lengths = attention.bool().sum(-1)
        starts = torch.cumsum(lengths, 0) - lengths
        idx = flat.nonzero().squeeze(1)
        extra = (-len(idx)) % PACK_BUCKET
        if extra:
            idx = torch.cat([idx, (~flat).nonzero().squeeze(1)[:extra]])
        return Packed(B, T, idx, starts)

    def pack(self, x: Tensor) -> Tensor:
        """(B, T, ...) → (N, ...): the real tokens."""
        return x.reshape(self.B * self.T, *x.shape[2:]).index_select(0, self.idx)

    def pad(self, x: Tensor) -> Tensor:
        """(N, ...) → (B, T, ...), zeros at the padding."""
        out = x.new_zeros(self.B * self.T, *x.shape[1:]).index_copy(0, self.idx, x)
        return out.view(self.B, self.T, *x.shape[1:])

    def first(self, x: Tensor) -> Tensor:
        """(N, H) → (B, 1, H): every row's [CLS] state."""
        return x.index_select(0, self.starts).unsqueeze(1)


# ---------------------------------------------------------------- member-aware building blocks
#
# Every parameterised layer below runs one model, or M models of one architecture at once when its
# parameters carry a leading member dimension (`stack_members`): activations are then (M, B, T, H) and
# the same module code serves a single classifier and a stacked committee.


def _per_member(t: Tensor, x: Tensor) -> Tensor:
    """A per-member tensor (M, *s) viewed as (M, 1, ..., 1, *s) so that it broadcasts against x (M, ...,
    *s)."""
    return t.view(t.shape[0], *([1] * (x.dim() - t.dim())), *t.shape[1:])


def linear(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """x @ weightᵀ + bias; with stacked members one batched matmul over the members (stacked weights are
    stored transposed, M×in×out, so that the batched matmul reads them contiguously)."""
    if weight.dim() == 2:
        return F.linear(x, weight, bias)
    M = weight.shape[0]
    y = torch.baddbmm(bias.unsqueeze(1), x.reshape(M, -1, x.shape[-1]), weight)
    return y.view(*x.shape[:-1], weight.shape[2])


class Linear(nn.Linear):
    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x) if self.weight.dim() == 2 else linear(x, self.weight, self.bias)


class LayerNorm(nn.LayerNorm):
    def forward(self, x: Tensor) -> Tensor:
        if self.weight.dim() == 1:
            return super().forward(x)
        y = F.layer_norm(x, self.weight.shape[-1:], eps=self.eps)
        return torch.addcmul(_per_member(self.bias, y), y, _per_member(self.weight, y))


class Embedding(nn.Embedding):
    def forward(self, ids: Tensor) -> Tensor:
        return super().forward(ids) if self.weight.dim() == 2 else self.weight[:, ids]


class Conv2d(nn.Conv2d):
    """Stacked members run as one grouped convolution (their channels side by side)."""

    def forward(self, x: Tensor) -> Tensor:
        if self.weight.dim() == 4:
            return super().forward(x)
        groups = self.groups * self.weight.shape[0]
        b = None if self.bias is None else self.bias.flatten()
        return F.conv2d(x, self.weight.flatten(0, 1), b, self.stride, self.padding, self.dilation, groups)


class BatchNorm2d(nn.BatchNorm2d):
    """Stacked members (inference only) normalise their side-by-side channels with their own statistics."""

    def forward(self, x: Tensor) -> Tensor:
        if self.weight.dim() == 1:
            return super().forward(x)
        if self.training:
            raise RuntimeError("stacked members run in eval mode only")
        rm, rv, w, b = (t.flatten() for t in (self.running_mean, self.running_var, self.weight, self.bias))  # type: ignore[union-attr]
        return F.batch_norm(x, rm, rv, w, b, False, 0.0, self.eps)


class Embeddings(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.word_embeddings = Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=PAD_ID)
        self.position_embeddings = Embedding(cfg.max_length, cfg.hidden_size)
        self.token_type_embeddings = Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.LayerNorm = LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = Dropout(cfg.dropout)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        T = input_ids.shape[1]
        x = self.word_embeddings(input_ids)
        pos = self.position_embeddings.weight[..., :T, :]
        x = x + (pos if pos.dim() == 2 else _per_member(pos, x))
        if token_type_ids is None:  # all zeros, as the paper feeds none
            type0 = self.token_type_embeddings.weight[..., 0, :]
            x = x + (type0 if type0.dim() == 1 else _per_member(type0, x))
        else:
            x = x + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(x))


class SelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.heads = cfg.heads
        self.query = Linear(cfg.hidden_size, cfg.hidden_size)
        self.key = Linear(cfg.hidden_size, cfg.hidden_size)
        self.value = Linear(cfg.hidden_size, cfg.hidden_size)
        self.dropout_p = cfg.attention_dropout
        self._fused: dict[tuple[str, ...], tuple[tuple, Tensor, Tensor]] = {}

    def fused(self, names: tuple[str, ...]) -> tuple[Tensor, Tensor]:
        """The named projections' weights and biases concatenated (one matmul instead of several; the
        parameters stay separate, as in BERT). In eval mode without gradients the result is cached.

        The cache must never outlive a weight update. `_version` alone does not see one: fused AdamW
        updates parameters without bumping it (a stale cache froze Q/K/V at the first evaluation of a
        run). So any forward with gradients (every update needs one) and any train()/eval() switch
        empties it; `_version` and `data_ptr` still catch in-place edits and loads made in eval mode."""
        mods = [getattr(self, n) for n in names]
        out_dim = -2 if mods[0].weight.dim() == 2 else -1  # stacked weights are M×in×out

        def concat() -> tuple[Tensor, Tensor]:
            return torch.cat([m.weight for m in mods], out_dim), torch.cat([m.bias for m in mods], -1)

        if torch.compiler.is_compiling() or torch.compiler.is_exporting():
            return concat()
        if self.training or torch.is_grad_enabled():
            self._fused.clear()
            return concat()
        key = tuple((t.data_ptr(), t._version) for m in mods for t in (m.weight, m.bias))
        hit = self._fused.get(names)
        if hit is None or hit[0] != key:
            self._fused[names] = hit = (key, *concat())
        return hit[1], hit[2]

    def train(self, mode: bool = True) -> SelfAttention:
        self._fused.clear()
        return super().train(mode)

    def forward(
        self, x: Tensor, mask: Tensor | None, cls_only: bool = False, packed: Packed | None = None
    ) -> Tensor:
        """Self-attention over x (..., T, H); leading dims (batch, or members × batch) are folded into one.
        With `cls_only`, only the [CLS] query is computed: (..., 1, H). With `packed`, x is the real
        tokens (N, H): projected packed, attended padded, returned packed."""
        *lead, T, H = x.shape if packed is None else (packed.B, packed.T, x.shape[-1])
        B, nh, hd = math.prod(lead), self.heads, H // self.heads
        p = self.dropout_p if self.training else 0.0
        unpack = packed.pad if packed is not None else (lambda t: t)
        if cls_only:  # keys and values of every position, the query of the first one only
            kv = unpack(linear(x, *self.fused(("key", "value"))))
            k, v = kv.view(B, T, 2, nh, hd).permute(2, 0, 3, 1, 4)
            first = x[..., :1, :] if packed is None else packed.first(x)
            q = self.query(first).view(B, 1, nh, hd).transpose(1, 2)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
            return y.transpose(1, 2).reshape(*lead, 1, H)
        qkv = unpack(linear(x, *self.fused(("query", "key", "value"))))
        qkv = qkv.view(B, T, 3, nh, hd).permute(2, 0, 3, 1, 4)  # (3, B, heads, T, head size)
        dropping = self.training and self.dropout_p > 0
        if explicit_attention(qkv, dropping):
            q, k, v = qkv.reshape(3, B * nh, T, hd).unbind(0)
            y = self._explicit(q, k, v, mask, dropping).view(B, nh, T, hd)
        else:
            q, k, v = qkv.unbind(0)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)  # (B, heads, T, hd)
        y = y.transpose(1, 2).reshape(*lead, T, H)
        return y if packed is None else packed.pack(y)

    def _explicit(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, dropping: bool) -> Tensor:
        """softmax(q·kᵀ/√d)·v as batched matmuls over (B·heads, T, d), our dropout on the probabilities."""
        BH, T, hd = q.shape
        scores = torch.bmm(q, k.transpose(1, 2)).mul_(hd**-0.5)
        if mask is not None:
            scores = scores.view(-1, self.heads, T, T).masked_fill(~mask, float("-inf")).view(BH, T, T)
        probs = dropout(scores.softmax(-1).view(-1, self.heads, T, T), self.dropout_p, dropping, (1, 2))
        return torch.bmm(probs.view(BH, T, T), v)


def explicit_attention(qkv: Tensor, dropping: bool) -> bool:
    """Whether self-attention runs as explicit batched matmuls instead of SDPA: on CPU with dropout (SDPA
    has no fused CPU kernel with dropout; its fallback samples slow Bernoulli masks: ~1.4× slower) or in
    bf16 (torch 2.13's CPU flash kernel in bf16 takes 3.1–4.1× the explicit path's time forward and
    backward, 1.2–2.4× forward only: `benchmarks/attention.py`), and on any device while a training step
    draws per-row dropout masks. In fp32 on CPU without dropout SDPA is as fast or faster (1.05–1.4×)."""
    on_cpu = qkv.device.type == "cpu"
    if on_cpu and qkv.dtype == torch.bfloat16:
        return True
    return dropping and (on_cpu or randomness.active() is not None)


class AddNorm(nn.Module):
    """dense → dropout → LayerNorm(residual + ·): BERT's 'output' sub-modules."""

    def __init__(self, d_in: int, cfg: ModelConfig):
        super().__init__()
        self.dense = Linear(d_in, cfg.hidden_size)
        self.LayerNorm = LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = Dropout(cfg.dropout)

    def forward(self, h: Tensor, residual: Tensor, packed: Packed | None = None) -> Tensor:
        return self.LayerNorm(residual + self.dropout(self.dense(h), packed))


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.self = SelfAttention(cfg)
        self.output = AddNorm(cfg.hidden_size, cfg)

    def forward(
        self, x: Tensor, mask: Tensor | None, cls_only: bool = False, packed: Packed | None = None
    ) -> Tensor:
        y = self.self(x, mask, cls_only, packed)
        if not cls_only:
            return self.output(y, x, packed)
        return self.output(y, x[..., :1, :] if packed is None else packed.first(x))  # (..., 1, H): padded


class Intermediate(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.dense = Linear(cfg.hidden_size, cfg.ffn_size)

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(self.dense(x))


class Layer(nn.Module):
    """One post-LN transformer block."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attention = Attention(cfg)
        self.intermediate = Intermediate(cfg)
        self.output = AddNorm(cfg.ffn_size, cfg)

    def forward(
        self, x: Tensor, mask: Tensor | None, cls_only: bool = False, packed: Packed | None = None
    ) -> Tensor:
        """Post-LN block; with `cls_only` it returns only the [CLS] row (..., 1, H), computing nothing else
        that row does not depend on (the classifier reads only [CLS] from the last block). `packed`: x
        holds the real tokens only (N, H), and so does the result (but for `cls_only`'s rows)."""
        x = self.attention(x, mask, cls_only, packed)
        return self.output(self.intermediate(x), x, None if cls_only else packed)


class ConvFrontEnd(nn.Module):
    """The paper's conv block: the (T × hidden) map as a 1-channel image through `conv_layers` ×
    [Conv2d(k, same) → BatchNorm2d → GELU] (channels 1→d→…→d), then 1×1 Conv2d d→1 → BatchNorm2d → GELU.

    Faithful to the official code: no residual connection, the attention mask is ignored (padding
    positions are convolved and enter the BatchNorm statistics). It replaces the first encoder layer.
    Stacked members are the channels of one image: (M, B, T, H) → (B, M, T, H), grouped convolutions.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d, k = cfg.conv_channels, cfg.kernel()
        mods: list[nn.Module] = []
        for i in range(cfg.conv_layers):
            mods += [Conv2d(1 if i == 0 else d, d, k, padding="same"), BatchNorm2d(d), nn.GELU()]
        mods += [Conv2d(d, 1, 1), BatchNorm2d(1), nn.GELU()]
        self.net = nn.Sequential(*mods)

    def forward(self, x: Tensor) -> Tensor:
        stacked = x.dim() == 4
        img = x.transpose(0, 1) if stacked else x.unsqueeze(1)
        img = img.contiguous(memory_format=torch.channels_last)  # channels_last: ~2× faster on CPU
        y = self.net(img)
        return (y.transpose(0, 1) if stacked else y.squeeze(1)).contiguous()


class Encoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.conv = ConvFrontEnd(cfg) if cfg.conv_layers else None
        self.layer = nn.ModuleList(Layer(cfg) for _ in range(cfg.layers))

    def forward(
        self, x: Tensor, mask: Tensor | None, cls_only: bool = False, packed: Packed | None = None
    ) -> Tensor:
        """The blocks over x (..., T, H); with `packed`, on the real tokens only (after the conv front-end,
        which convolves the padded map as the paper's code does), padded again at the end."""
        if self.conv is not None:
            x = self.conv(x)
        if packed is not None:
            x = packed.pack(x)
        for i, block in enumerate(self.layer):
            last = cls_only and i == len(self.layer) - 1
            x = block(x, mask, last, packed)
        return x if packed is None or (cls_only and self.layer) else packed.pad(x)


class Pooler(nn.Module):
    """dense + tanh over one vector per sequence: the [CLS] state (`cls`, BERT's) or the mean of the
    non-padding token states (`mean`)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.dense = Linear(cfg.hidden_size, cfg.hidden_size)
        self.mode = cfg.pooling

    def forward(self, x: Tensor, attention: Tensor | None = None) -> Tensor:
        if self.mode == "cls":
            return torch.tanh(self.dense(x[..., 0, :]))
        if attention is None:
            return torch.tanh(self.dense(x.mean(dim=-2)))
        w = attention.to(x.dtype)[..., None]  # (B, T, 1); broadcasts over a leading member dimension
        return torch.tanh(self.dense((x * w).sum(dim=-2) / w.sum(dim=-2).clamp(min=1)))


#: pack a batch's real tokens when they are at most this share of its positions (a nearly full batch has
#: little padding to skip for the gathers' cost; the threshold is a round number, not tuned)
UNPAD_BELOW = 0.9


def attention_mask(attention: Tensor | None) -> Tensor | None:
    """(B, T) 1/0 padding mask → (B, 1, 1, T) boolean SDPA mask; None when nothing is padded."""
    if attention is None or (not torch.compiler.is_exporting() and bool(attention.all())):
        return None  # (a graph being exported keeps the mask: its inputs may be padded)
    return attention.bool()[:, None, None, :]


def windowed(mask: Tensor | None, length: int, window: int, device: torch.device) -> Tensor:
    """The attention mask restricted to keys within ± `window` positions of each query ((B, 1, T, T), or
    (1, 1, T, T) without padding); every token keeps itself, so no query row is empty (a padding query
    beyond the window of every real token would otherwise get NaN)."""
    i = torch.arange(length, device=device)
    band = (i[:, None] - i[None, :]).abs() <= window
    if mask is None:
        return band[None, None]
    return (mask & band) | torch.eye(length, dtype=torch.bool, device=device)


class Bert(nn.Module):
    """The backbone (`bert.*` in transformers): embeddings, optional conv front-end, blocks, optional
    pooler."""

    def __init__(self, cfg: ModelConfig, pooler: bool = False):
        super().__init__()
        self.cfg = cfg
        self.embeddings = Embeddings(cfg)
        self.encoder = Encoder(cfg)
        self.pooler = Pooler(cfg) if pooler else None
        self.unpad = True  #: skip the padding in the blocks' per-token work (`Packed`); same results

    def forward(
        self,
        input_ids: Tensor,
        attention: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        cls_only: bool = False,
        window: int | None = None,
    ) -> Tensor:
        """Token states; `window`: attend only within ± that many positions (`windowed`; training's
        attention-window warm-up)."""
        x = self.embeddings(input_ids, token_type_ids)
        mask = attention_mask(attention)
        if window is not None:
            if cls_only:
                raise ValueError("window: a training curriculum of every token's states, not with cls_only")
            mask = windowed(mask, x.shape[-2], window, x.device)
        if (
            mask is not None and x.dim() == 4
        ):  # stacked members share the inputs: one mask row per (member, row)
            mask = mask.repeat(x.shape[0], 1, 1, 1)
        return self.encoder(x, mask, cls_only, self._packing(attention, mask, x))

    def _packing(self, attention: Tensor | None, mask: Tensor | None, x: Tensor) -> Packed | None:
        """Pack the real tokens when that skips enough padding (`unpad`, one model, not being compiled or
        exported: those keep one static graph). On CPU only, where it is measured (`tinylm bench
        unpad`); on a GPU the gathers' launches and the host sync for the token count are not."""
        if not self.unpad or mask is None or attention is None or x.dim() != 3 or x.device.type != "cpu":
            return None
        if torch.compiler.is_compiling() or torch.compiler.is_exporting():
            return None
        real = int(attention.sum())
        return Packed.of(attention) if real <= UNPAD_BELOW * attention.numel() else None


class LMTransform(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.dense = Linear(cfg.hidden_size, cfg.hidden_size)
        self.LayerNorm = LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x: Tensor) -> Tensor:
        return self.LayerNorm(F.gelu(self.dense(x)))


class LMPredictions(nn.Module):
    def __init__(self, cfg: ModelConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.transform = LMTransform(cfg)
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))
        self.decoder = nn.Linear(cfg.hidden_size, cfg.vocab_size)
        self.decoder.weight = word_embeddings.weight  # tied, as in BERT
        self.decoder.bias = self.bias

    def forward(self, h: Tensor) -> Tensor:
        return F.linear(self.transform(h), self.decoder.weight, self.bias)


class MaskedLMHead(nn.Module):
    def __init__(self, cfg: ModelConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.predictions = LMPredictions(cfg, word_embeddings)


class TinyBertForMaskedLM(nn.Module):
    """Backbone + MLM head. `forward(ids, attention, positions)` returns logits only at `positions`
    (flat indices into B×T): the vocab projection at ~15% of tokens instead of all of them. `pooler` keeps
    an imported checkpoint's pooler (unused by MLM; fine-tuning may start from it with `init_pooler`)."""

    def __init__(self, cfg: ModelConfig, pooler: bool = False):
        super().__init__()
        self.cfg = cfg
        self.bert = Bert(cfg, pooler=pooler)
        self.cls = MaskedLMHead(cfg, self.bert.embeddings.word_embeddings)
        init_weights(self, cfg)

    def forward(
        self,
        input_ids: Tensor,
        attention: Tensor | None = None,
        positions: Tensor | None = None,
        targets: Tensor | None = None,
        window: int | None = None,
        candidates: Candidates | None = None,
    ) -> Any:
        """Logits at `positions` (all positions where None); with `targets` (one per position, negative =
        ignore) instead the summed cross-entropy and the hit count, projection and loss fused
        (`vocab_loss`: the logit matrix is never stored), or with `candidates` the sampled softmax's
        (`sampled_loss`). `window`: `Bert.forward`'s."""
        h = self.bert(input_ids, attention, window=window)
        h = (
            h.reshape(-1, h.shape[-1])
            if positions is None
            else h.reshape(-1, h.shape[-1]).index_select(0, positions)
        )
        head = self.cls.predictions
        if targets is None:
            return head(h)
        x, weight, bias = head.transform(h), head.decoder.weight, head.bias
        if candidates is not None:
            return sampled_cross_entropy(x, weight, bias, targets, candidates)
        return linear_cross_entropy(x, weight, bias, targets)


class TinyBertForSequenceClassification(nn.Module):
    """Backbone with pooler → dropout → linear classifier; the pooler reads [CLS] or the token mean
    (`cfg.pooling`)."""

    def __init__(self, cfg: ModelConfig, num_labels: int):
        super().__init__()
        self.cfg = cfg
        self.num_labels = num_labels
        self.bert = Bert(cfg, pooler=True)
        self.dropout = Dropout(cfg.dropout, seq_dims=())  # on the pooled (batch × hidden) states
        self.classifier = Linear(cfg.hidden_size, num_labels)
        init_weights(self, cfg)

    def forward(
        self,
        input_ids: Tensor,
        attention: Tensor | None = None,
        cls_only: bool | None = None,
        token_type_ids: Tensor | None = None,
    ) -> Tensor:
        # The pooler reads only [CLS], so the last block can compute only that row (`cls_only`): the same
        # logits for ~1/6 of that block's FLOPs (3-5× faster for a 1-block model). Default: in eval mode only,
        # so that training draws the same dropout masks as the full computation (runs stay reproducible).
        if cls_only is None:
            cls_only = not self.training
        cls_only = cls_only and self.cfg.pooling == "cls"
        h = self.bert(input_ids, attention, token_type_ids, cls_only=cls_only)
        assert self.bert.pooler is not None
        return self.classifier(self.dropout(self.bert.pooler(h, attention)))


def stack_members(models: Sequence[ModuleT]) -> ModuleT:
    """M models of one architecture as one model for inference: every parameter and buffer gains a leading
    member dimension, and the same forward code runs all members at once on shared inputs (outputs get a
    leading member dimension: a classifier returns (M, B, labels)). The models are not changed."""
    first = models[0]
    for i, m in enumerate(models[1:], 1):
        if type(m) is not type(first) or getattr(m, "cfg", None) != getattr(first, "cfg", None):
            raise ValueError(
                f"member {i} has another architecture than member 0; stack each architecture apart"
            )
    stacked = copy.deepcopy(first).eval()
    peers = [dict(m.named_modules()) for m in models]
    with torch.no_grad():
        for name, mod in stacked.named_modules():
            for kind in ("_parameters", "_buffers"):
                table = getattr(mod, kind)
                for key, t in table.items():
                    if t is None:
                        continue
                    ts = [getattr(p[name], key).detach() for p in peers]
                    if isinstance(mod, Linear) and key == "weight":  # M×in×out: read contiguously by bmm
                        ts = [t.t() for t in ts]
                    s = torch.stack(ts).contiguous()
                    table[key] = nn.Parameter(s, requires_grad=False) if kind == "_parameters" else s
            if isinstance(mod, SelfAttention):
                mod._fused = {}
    return stacked


#: `attention_init: mimetic`: std of the shared query/key weights. A head's score of a token with itself
#: then starts near 64 · 0.05² · 128 / √64 ≈ 2.6 (LayerNorm'd inputs, head size 64), other tokens near 0.
MIMETIC_STD = 0.05


def sinusoidal_positions(length: int, dim: int, std: float) -> Tensor:
    """The sin/cos position table (Vaswani et al. 2017), scaled so that its entries have std `std`."""
    pos = torch.arange(length, dtype=torch.float64)[:, None]
    freq = torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    table = torch.zeros(length, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq)[:, : dim // 2]
    return (table * std * math.sqrt(2.0)).float()


def init_weights(model: nn.Module, cfg: ModelConfig) -> None:
    """BERT's init: normal(0, init_std) for linear/embedding weights, zero biases, unit LayerNorm; then the
    init-only options `position_init` and `attention_init`."""
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=cfg.init_std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=cfg.init_std)
            if m.padding_idx is not None:
                with torch.no_grad():
                    m.weight[m.padding_idx].zero_()
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for m in model.modules():  # conv front-end: PyTorch's default (kaiming-uniform), as the paper's code
        if isinstance(m, nn.Conv2d):
            m.reset_parameters()
        elif isinstance(m, Embeddings) and cfg.position_init == "sinusoidal":
            with torch.no_grad():
                m.position_embeddings.weight.copy_(
                    sinusoidal_positions(cfg.max_length, cfg.hidden_size, cfg.init_std)
                )
        elif isinstance(m, SelfAttention) and cfg.attention_init == "mimetic":
            nn.init.normal_(m.query.weight, std=MIMETIC_STD)
            with torch.no_grad():
                m.key.weight.copy_(m.query.weight)
    if isinstance(model, TinyBertForMaskedLM):
        nn.init.zeros_(model.cls.predictions.bias)


#: Parameters that alias another one in the state dict (tied weights), as transformers ties them.
TIED_KEYS = {
    "cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
    "cls.predictions.decoder.bias": "cls.predictions.bias",
}


def parameter_counts(cfg: ModelConfig, num_labels: int | None = None) -> dict[str, int]:
    """Counts as in paper.md §3.2: backbone = embeddings + conv + blocks + pooler (BatchNorm stats
    excluded)."""
    with torch.device("meta"):
        bert = Bert(cfg, pooler=True)
        mlm = MaskedLMHead(cfg, bert.embeddings.word_embeddings)

    def n(m: nn.Module | None) -> int:
        return sum(p.numel() for p in m.parameters()) if m is not None else 0

    out = {
        "backbone": n(bert),
        "embeddings": n(bert.embeddings),
        "conv": n(bert.encoder.conv),
        "blocks": n(bert.encoder.layer),
        "pooler": n(bert.pooler),
        "mlm_head": n(mlm) - cfg.vocab_size * cfg.hidden_size,  # decoder weight is tied
    }
    if num_labels:
        out["classifier"] = cfg.hidden_size * num_labels + num_labels
    return out


def train_flops_per_token(cfg: ModelConfig, seq_len: int, mlm_fraction: float | None = None) -> float:
    """Approximate training FLOPs per token: 6 × matmul params touched + attention scores (fwd+bwd), the
    conv front-end's convolutions, and the vocab projection only at the `mlm_fraction` of positions where
    logits are computed."""
    H, L = cfg.hidden_size, cfg.layers
    block = 4 * H * H + 2 * H * cfg.ffn_size
    flops: float = 6 * L * block + 6 * L * 2 * seq_len * H  # QK^T and AV: 2·T·H MACs per token
    if cfg.conv_layers:  # every (token, hidden unit) pixel: k·k MACs per input×output channel pair
        kh, kw = cfg.kernel()
        d = cfg.conv_channels
        flops += 6 * H * (kh * kw * (d + (cfg.conv_layers - 1) * d * d) + d)
    if mlm_fraction is not None:
        flops += 6 * H * H + 6 * mlm_fraction * H * cfg.vocab_size
    return float(flops)


def describe(cfg: ModelConfig) -> str:
    c = parameter_counts(cfg)
    conv = f", conv {c['conv']:,}" if c["conv"] else ""
    name = cfg.model or f"{cfg.layers}/{cfg.hidden_size}/{cfg.heads}/{cfg.ffn_size}"
    return (
        f"{name}: backbone {c['backbone']:,} parameters (embeddings {c['embeddings']:,}{conv}, "
        f"blocks {c['blocks']:,}, pooler {c['pooler']:,}); MLM head +{c['mlm_head']:,}"
    )


#: A tinylm model of either kind.
TinyBert = TinyBertForMaskedLM | TinyBertForSequenceClassification

__all__ = [
    "Bert",
    "stack_members",
    "TinyBertForMaskedLM",
    "TinyBertForSequenceClassification",
    "attention_mask",
    "describe",
    "parameter_counts",
]
