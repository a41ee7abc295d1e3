"""PARSeq's fixed configuration: charset and token ids, image and patch size, the released sizes.

Read by the spec (`parseq`, no torch) and by the network (`parseq_net`), so neither imports the other's module for it.
"""

from __future__ import annotations

from dataclasses import dataclass

# Class 0 is EOS, class i (1..94) is CHARSET[i - 1]; BOS and PAD are inputs only.
CHARSET = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
EOS_ID, BOS_ID, PAD_ID = 0, len(CHARSET) + 1, len(CHARSET) + 2
MAX_LABEL_LENGTH = 25
IMG_HW, PATCH_HW = (32, 128), (4, 8)


@dataclass(frozen=True)
class Size:
    embed_dim: int
    enc_heads: int
    dec_heads: int
    enc_depth: int = 12
    mlp_ratio: int = 4  # decoder depth is 1 in both released sizes


SIZES = {"parseq": Size(384, 6, 12), "parseq-tiny": Size(192, 3, 6)}
