"""What a loaded LLM's head makes of the reports before any training: the text cross-entropy of the network as
loaded (AdaLN starts as the identity, so it is the LLM made bidirectional, or causal as it was trained), on a run's
training sequences, by the number of blocks kept and by read-out: each token at its own position (MeDiM's default)
or at the position before, where the LLM's head predicts it (--next-token-readout). The report is given clean (the
LLM's own task, shifted or not), half masked, or wholly masked (the image → report start).

    python bench/llm_readout.py --run runs/smollm2 --layers 4 30

RUN is a run trained with --init-from (its config, tokenizer, trimmed vocabulary and token cache). Only the report's
own tokens are scored (not <eos> / <pad>, whose rows are new), over the text segment's legal ids, as the training
loss scores them; one fixed draw of masks for every row of the table."""
import os

if "OMP_WAIT_POLICY" not in os.environ:  # a short OpenMP spin before sleeping, as train.py (why there)
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")
import argparse
import glob
import json
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))                   # bench/, for train_speed
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo root
import medim  # noqa: E402
import pretrained  # noqa: E402
import tokenizer as tk  # noqa: E402
from train_speed import load_average, set_threads  # noqa: E402

MASKED_SHARES = (0.0, 0.5, 1.0)


def text_ce(model, x0, vocab, share, seed=0):
    """Mean CE of the report's tokens (ids < n_text) with `share` of them masked (0: none masked, all scored)."""
    report = (vocab.segment_ids.to(x0.device) == medim.TEXT) & (x0 < vocab.n_text)                 # (B, T)
    drawn = torch.rand(x0.shape, generator=torch.Generator().manual_seed(seed)).to(x0.device) < share
    masked = report & drawn                                                           # (B, T), none at share 0
    scored = masked if share > 0 else report
    t = torch.full((len(x0),), max(share, 1e-3), device=x0.device)
    with torch.no_grad():
        logits = model(x0.masked_fill(masked, vocab.mask_id), t, logits_at=scored)    # (M, V)
    rows = {medim.TEXT: torch.arange(len(logits), device=x0.device)}                  # every scored row is text
    text_vocab = {medim.TEXT: medim.segment_vocab(vocab.legal, vocab.mask_id)[medim.TEXT].to(x0.device)}
    return -medim.subs_logprob_of(logits, rows, text_vocab, x0[scored]).mean().item()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="a run directory trained with --init-from")
    p.add_argument("--layers", type=int, nargs="+", default=[4], help="blocks kept (the LLM's first N)")
    p.add_argument("--n", type=int, default=16, help="training sequences scored")
    p.add_argument("--threads", type=int, default=0, help="CPU threads; 0 = all cores this process may use")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    threads = set_threads(args.threads)
    config_path = os.path.join(args.run, "config.json")
    if not os.path.exists(config_path):
        raise SystemExit(f"error: --run {args.run}: no config.json (a run directory trained with --init-from)")
    with open(config_path) as f:
        train_cfg = json.load(f)["train"]
    if not train_cfg.get("init_from"):
        raise SystemExit(f"error: --run {args.run} was not trained with --init-from: there is no LLM to load")
    llm_dir = pretrained.resolve_pretrained(train_cfg["init_from"])
    vocab = tk.MedTokenizer.load(args.run).vocab
    caches = sorted(glob.glob(os.path.join(args.run, "cache", "train-*.npy")))
    if not caches:
        raise SystemExit(f"error: --run {args.run}: no cache/train-*.npy (the run's token cache)")
    x0 = torch.from_numpy(np.load(caches[0], mmap_mode="r")[:args.n].astype(np.int64))                 # (n, T)
    x0 = x0.to(args.device)
    text_rows = vocab.text_rows if vocab.text_rows is not None else list(range(vocab.n_text))
    print(f"{train_cfg['init_from']} ({llm_dir}), {len(x0)} training sequences of {args.run}, text CE in nats "
          f"({args.device}, {threads} threads, load {load_average()})")
    print("| blocks | attention | read-out | " + " | ".join(f"report {s:.0%} masked" for s in MASKED_SHARES) + " |")
    print("|---|---|---|" + "---|" * len(MASKED_SHARES))
    table = {}                                                     # (blocks, causal, shifted) -> CE per masked share
    for n_layers in args.layers:
        for causal in (True, False):
            for shifted in (False, True):
                model = medim.from_pretrained(llm_dir, n_layers=n_layers, new_vocab_size=vocab.size, causal=causal,
                                              seq_len=vocab.seq_len, mask_id=vocab.mask_id, abs_pos=True,
                                              text_rows=text_rows, next_token_readout=shifted).to(args.device).eval()
                ces = table[n_layers, causal, shifted] = [text_ce(model, x0, vocab, s) for s in MASKED_SHARES]
                print(f"| {n_layers} | {'causal' if causal else 'bidirectional'} | "
                      f"{'position before' if shifted else 'own position'} | " + " | ".join(f"{c:.2f}" for c in ces)
                      + " |")
    return table


if __name__ == "__main__":
    main()
