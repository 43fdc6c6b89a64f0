"""A toy sequence layout for the medim tests, shaped like tokenizer.Vocab's (medim.py never imports tokenizer.py):
ids [text 0..n_text-1 | <boi> <eoi> <eos> <pad> | <cxr> <path> | [MASK] | K image codes],
sequence [<cxr>] [<boi>] img_1..img_N [<eoi>] txt_1..txt_L."""
import torch

import medim


def logits_for(logits, logits_at=None, columns=None):
    """What MeDiM.forward returns, cut from a stand-in model's full logits (B, T, V): all of them, (M, V) at logits_at,
    or {segment: (M_s, V_s)} with columns."""
    out = logits if logits_at is None else logits[logits_at]
    return out if columns is None else medim.at_columns(out, columns)


class ToyLayout:
    def __init__(self, n_text=12, K=8, N=6, L=5):
        self.n_text, self.K, self.N, self.L = n_text, K, N, L
        self.boi, self.eoi, self.eos, self.pad = n_text, n_text + 1, n_text + 2, n_text + 3
        self.cxr, self.path = n_text + 4, n_text + 5
        self.mask_id = n_text + 6
        self.image_offset = n_text + 7
        self.V = self.image_offset + K
        self.T = N + L + 3
        seg = torch.zeros(self.T, dtype=torch.long)
        seg[2:2 + N] = medim.IMAGE
        seg[3 + N:] = medim.TEXT
        self.segment_ids = seg
        legal = torch.zeros(3, self.V, dtype=torch.bool)
        legal[0] = True
        legal[0, self.mask_id] = False
        legal[1, self.image_offset:] = True
        legal[2, :n_text] = True
        legal[2, [self.eos, self.pad]] = True
        self.legal = legal

    def sequence(self, text_ids, codes):
        """One row: text ids (≤ L-1 of them, then <eos> and <pad>s) and N image codes (0..K-1)."""
        text = list(text_ids)[:self.L - 1] + [self.eos]
        text += [self.pad] * (self.L - len(text))
        return torch.tensor([self.cxr, self.boi] + [c + self.image_offset for c in codes] + [self.eoi] + text)

    def random_batch(self, B, generator):
        rows = []
        for _ in range(B):
            n = int(torch.randint(1, self.L, (1,), generator=generator))
            rows.append(self.sequence(torch.randint(0, self.n_text, (n,), generator=generator).tolist(),
                                      torch.randint(0, self.K, (self.N,), generator=generator).tolist()))
        return torch.stack(rows)

    def config(self, preset='tiny', **kw):
        return medim.MeDiMConfig(**{**medim.PRESETS[preset], **kw}, vocab_size=self.V, seq_len=self.T,
                                 mask_id=self.mask_id)
