"""PARSeq scene-text recognizer (baudm/parseq): ViT encoder + one two-stream decoder layer.

Module names equal the keys of the official release files (`parseq-bb5792a6.pt`,
`parseq_tiny-e7a21b54.pt`), so they load with `strict=True`. Three decoding modes:
NAR (`decode_ar=False`, the export mode), AR, and either followed by `refine_iters` cloze
refinement passes (the official default is AR + 1 refinement). Inference only: the training-time
dropout layers are left out (they are identities in eval mode and hold no weights).
"""

from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from stdr_deploy.models.parseq_config import BOS_ID, CHARSET, EOS_ID, IMG_HW, MAX_LABEL_LENGTH, PAD_ID, PATCH_HW, Size


# ---------------------------------------------------------------- encoder (timm ViT layout)


class PatchEmbed(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=PATCH_HW, stride=PATCH_HW)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # [N, 128, D], row-major patches


class Attention(nn.Module):
    """Multi-head self-attention with a packed q/k/v projection, written out so it exports at opset 14."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, dim = x.shape
        qkv = self.qkv(x).reshape(n, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        weights = (q * (dim // self.heads) ** -0.5) @ k.transpose(-2, -1)
        out = weights.softmax(dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(n, length, dim))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-LN transformer block (no layer scale, no drop path)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.norm1 = norm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = norm(dim)
        self.mlp = Mlp(dim, dim * mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Encoder(nn.Module):
    """Image [N, 3, 32, 128] -> memory [N, 128, D] (learned position embedding, final LayerNorm)."""

    def __init__(self, size: Size) -> None:
        super().__init__()
        dim = size.embed_dim
        num_patches = (IMG_HW[0] // PATCH_HW[0]) * (IMG_HW[1] // PATCH_HW[1])
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches, dim))
        self.patch_embed = PatchEmbed(dim)
        self.blocks = nn.ModuleList(Block(dim, size.enc_heads, size.mlp_ratio) for _ in range(size.enc_depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


# ---------------------------------------------------------------- decoder (two-stream, XLNet style)


class DecoderLayer(nn.Module):
    """Query stream attends to the (normalised) content stream, then to the image memory, then an FFN."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.linear1 = nn.Linear(dim, dim * mlp_ratio)
        self.linear2 = nn.Linear(dim * mlp_ratio, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm_q = nn.LayerNorm(dim)
        self.norm_c = nn.LayerNorm(dim)

    def forward(
        self,
        query: torch.Tensor,
        content: torch.Tensor,
        memory: torch.Tensor,
        query_mask: torch.Tensor | None,
        content_padding_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """Masks are bool, True = may not attend. With one layer the content stream is never
        updated, so only the query stream is computed."""
        context = self.norm_c(content)
        attended, _ = self.self_attn(
            self.norm_q(query), context, context,
            attn_mask=query_mask, key_padding_mask=content_padding_mask, need_weights=False,
        )  # fmt: skip
        query = query + attended
        attended, _ = self.cross_attn(self.norm1(query), memory, memory, need_weights=False)
        query = query + attended
        return query + self.linear2(F.gelu(self.linear1(self.norm2(query))))


class Decoder(nn.Module):
    def __init__(self, size: Size) -> None:
        super().__init__()
        self.layers = nn.ModuleList([DecoderLayer(size.embed_dim, size.dec_heads, size.mlp_ratio)])
        self.norm = nn.LayerNorm(size.embed_dim)

    def forward(
        self,
        query: torch.Tensor,
        content: torch.Tensor,
        memory: torch.Tensor,
        query_mask: torch.Tensor | None = None,
        content_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.norm(self.layers[0](query, content, memory, query_mask, content_padding_mask))


class TokenEmbedding(nn.Module):
    def __init__(self, num_tokens: int, dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(num_tokens, dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return math.sqrt(self.embedding.embedding_dim) * self.embedding(tokens)


# ---------------------------------------------------------------- the model


class PARSeq(nn.Module):
    """`forward(images)` with images [N, 3, 32, 128] in [-1, 1] returns logits [N, L, 95].

    L is 26 except in AR mode without refinement, where decoding stops once every row has
    produced an EOS (L = steps run). Refinement always returns all 26 positions.
    """

    def __init__(self, size: Size, decode_ar: bool = False, refine_iters: int = 0) -> None:
        super().__init__()
        self.decode_ar = decode_ar
        self.refine_iters = refine_iters
        self.num_steps = MAX_LABEL_LENGTH + 1
        dim = size.embed_dim
        self.pos_queries = nn.Parameter(torch.zeros(1, self.num_steps, dim))
        self.encoder = Encoder(size)
        self.decoder = Decoder(size)
        self.head = nn.Linear(dim, len(CHARSET) + 1)
        self.text_embed = TokenEmbedding(len(CHARSET) + 3, dim)
        nn.init.trunc_normal_(self.pos_queries, std=0.02)

    def decode(
        self,
        tokens: torch.Tensor,
        memory: torch.Tensor,
        queries: torch.Tensor,
        query_mask: torch.Tensor | None = None,
        padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Content token 0 is the BOS embedding alone; token k >= 1 adds position k - 1."""
        length = tokens.shape[1]
        bos = self.text_embed(tokens[:, :1])
        rest = self.pos_queries[:, : length - 1] + self.text_embed(tokens[:, 1:])
        return self.decoder(queries, torch.cat([bos, rest], dim=1), memory, query_mask, padding_mask)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        n = images.shape[0]
        memory = self.encoder(images)
        queries = self.pos_queries.expand(n, -1, -1)
        bos = torch.full((n, 1), BOS_ID, dtype=torch.long, device=images.device)
        if self.decode_ar:
            logits = self._decode_autoregressive(memory, queries)
        else:
            logits = self.head(self.decode(bos, memory, queries))
        if self.refine_iters:
            # Cloze mask: query i may not see content i + 1 (its own previous prediction).
            steps = self.num_steps
            cloze = torch.triu(torch.ones(steps, steps, dtype=torch.bool, device=images.device), 1)
            cloze &= ~torch.triu(torch.ones_like(cloze), 2)
            for _ in range(self.refine_iters):
                tokens = torch.cat([bos, logits[:, :-1].argmax(-1)], dim=1)
                padding = (tokens == EOS_ID).int().cumsum(-1) > 0
                out = self.decode(tokens, memory, queries, cloze[:, : tokens.shape[1]], padding)
                logits = self.head(out)
        return logits

    def _decode_autoregressive(self, memory: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        """Greedy, one position per step; every query sees all tokens so far (no mask needed)."""
        n = memory.shape[0]
        tokens = torch.full((n, self.num_steps), PAD_ID, dtype=torch.long, device=memory.device)
        tokens[:, 0] = BOS_ID
        logits = []
        for i in range(self.num_steps):
            step = self.head(self.decode(tokens[:, : i + 1], memory, queries[:, i : i + 1]))
            logits.append(step)
            if i + 1 < self.num_steps:
                tokens[:, i + 1] = step[:, 0].argmax(-1)
                if (tokens == EOS_ID).any(dim=-1).all():
                    break
        return torch.cat(logits, dim=1)

