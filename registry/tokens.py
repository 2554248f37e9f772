"""A conservative estimate of how many CLIP tokens a text takes, without importing open_clip.

CLIP's tokenizer lower-cases the text, splits it with the pattern
`'s|'t|'re|'ve|'m|'ll|'d|[letters]+|[digit]|[^\\s letters digits]+` and then applies byte-pair
encoding. Common English words are one token; rare or long words split into several. The
rule here over-counts on purpose so a warning is never missed:

- each run of ASCII letters counts ceil(len / 5) tokens (at least 1);
- each digit counts 1 token (CLIP splits numbers digit by digit);
- each punctuation/symbol character counts 1 token;
- each non-ASCII character (accented letters, CJK, emoji) counts 3 tokens (UTF-8 bytes);
- plus 2 for the start and end tokens.

CLIP's context is 77 tokens including start and end, so a text is "too long" when the
estimate exceeds 77. A test checks the estimate is never below open_clip's real count.
"""

from __future__ import annotations

import math
import re

CLIP_CONTEXT_LENGTH = 77
_PIECE = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d|[A-Za-z]+|[0-9]|[^\sA-Za-z0-9]", re.IGNORECASE)


def estimate_clip_tokens(text: str) -> int:
    """Upper estimate of CLIP tokens for `text`, start and end tokens included."""
    count = 2
    for piece in _PIECE.findall(text.lower()):
        if piece.isascii() and piece.isalpha():
            count += max(1, math.ceil(len(piece) / 5))
        elif piece.isascii():
            count += 1
        else:
            count += 3 * len(piece)
    return count
