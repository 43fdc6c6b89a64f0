"""Generate with a trained MeDiM run: report → image (t2i), image → report (i2t), or whole pairs (joint).

    python sample.py --ckpt runs/default --task t2i --report "FINDINGS: The heart is enlarged. ..." --n 4
    python sample.py --ckpt runs/default --task i2t --image xray.png
    python sample.py --ckpt runs/default --task joint --n 16 [--prompt "FINDINGS: The heart"] [--domain cxr]

Every task is the same call to medim.sample: put the condition into the token sequence, [MASK] everywhere else
(docs/paper-notes.md "Vocabulary and sequence"), and let the sampler fill the masks, with the run's sampler settings
(medim.SamplerConfig, saved in its ckpt.pt) unless a flag changes one; whole pairs take a few such calls, one half
then the other (generate, alternating). Writes image_{i}.png, text_{i}.txt (the layout of
MeDiM's evaluation scripts) and grid.png with each report under its image.
"""
import os

if "OMP_WAIT_POLICY" not in os.environ:  # a short OpenMP spin before sleeping, as train.py (why there)
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")

import argparse
import textwrap
from dataclasses import fields, replace

import numpy as np
import torch
from einops import rearrange
from PIL import Image, ImageDraw, ImageFont
from tqdm import tqdm

import medim
import tokenizer as tk
from data.common import write_atomic
from data.images import read_image as read_like_training
from medim import MeDiM, MeDiMConfig, SamplerConfig


#### Loading a run

def load_run(run_dir: str, device: str = "cpu", use_ema: bool = True):
    """The tokenizers, the model (EMA weights when the run kept them) and the sampler settings of a run directory.
    Returns (model, tok, sampler, train_config). A checkpoint written before the sampler had its own entry holds the
    same settings under the same names in its train_config, so it samples as it did."""
    path = os.path.join(run_dir, "ckpt.pt")
    if not os.path.exists(path):
        raise SystemExit(f"error: no checkpoint at {path} (train one with: python train.py --out {run_dir})")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
        model = MeDiM(MeDiMConfig(**ck["model_config"]))
        model.load_state_dict(ck["model"])
    except (RuntimeError, KeyError, TypeError, EOFError) as e:
        raise SystemExit(f"error: {path} is not a readable medim checkpoint ({type(e).__name__}: {str(e)[:200]})")
    if use_ema and ck.get("ema") is not None:
        with torch.no_grad():
            for p, e in zip(model.parameters(), ck["ema"]):
                p.copy_(e)
    tok = tk.MedTokenizer.load(run_dir)
    if tok.vocab.size != model.cfg.vocab_size or tok.vocab.seq_len != model.cfg.seq_len:
        raise SystemExit(f"error: the tokenizer files in {run_dir} (vocab {tok.vocab.size}, length {tok.vocab.seq_len}) do not "
                         f"match {path} (vocab {model.cfg.vocab_size}, length {model.cfg.seq_len})")
    train_config = ck.get("train_config", {})
    try:
        sampler = SamplerConfig.from_dict(ck.get("sampler") or train_config)
    except (TypeError, ValueError) as e:
        raise SystemExit(f"error: {path} holds unusable sampler settings ({e})")
    return model.to(device).eval(), tok, sampler, train_config


#### Building conditioned sequences: the condition stays, [MASK] marks what to generate

def _blank(tok, domain: str, codes=None, text_ids=()) -> np.ndarray:
    v = tok.vocab
    return v.encode(list(text_ids), np.zeros(v.n_image_tokens, np.int64) if codes is None else codes, domain)


def _mask_segment(tok, rows: list, segment: int) -> torch.Tensor:
    """Stack encoded sequences and put [MASK] in every slot of one segment (1 = image, 2 = text). (B, T)"""
    x = np.stack(rows)
    x[:, tok.vocab.segment_ids.numpy() == segment] = tok.vocab.mask_id
    return torch.from_numpy(x)


def condition_on_reports(tok, reports: list[str], domains: list[str]) -> torch.Tensor:
    """t2i: the report is given, every image slot is [MASK]. (B, T)"""
    return _mask_segment(tok, [_blank(tok, d, text_ids=tok.encode_text(r)) for r, d in zip(reports, domains)], medim.IMAGE)


def condition_on_images(tok, images: list[np.ndarray], domains: list[str]) -> torch.Tensor:
    """i2t: the image codes are given, every text slot (report, <eos> and padding) is [MASK]. (B, T)"""
    codes = tok.encode_images(images)                                          # (B, N)
    return _mask_segment(tok, [_blank(tok, d, codes=np.asarray(c)) for c, d in zip(codes, domains)], medim.TEXT)


def condition_on_prompt(tok, n: int, domain: str, prompt: str = "") -> torch.Tensor:
    """joint: only the domain tag (and optionally the first words of the report) is given. (n, T)"""
    seg = tok.vocab.segment_ids.numpy()
    x = _blank(tok, domain)
    x[seg != 0] = tok.vocab.mask_id
    prompt_ids = tok.encode_text(prompt) if prompt else []
    text_pos = np.flatnonzero(seg == 2)
    if len(prompt_ids) >= len(text_pos):
        raise SystemExit(f"error: --prompt is {len(prompt_ids)} tokens, longer than the {len(text_pos)} text slots")
    x[text_pos[:len(prompt_ids)]] = prompt_ids
    return torch.from_numpy(np.tile(x, (n, 1)))


def add_sampler_flags(parser):
    """One flag per SamplerConfig field, named after it (--cfg-scale for cfg_scale); None = keep the run's setting."""
    for f in fields(SamplerConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.type is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        else:
            parser.add_argument(flag, type=f.type, default=None, metavar=f.type.__name__.upper())


def sampler_from_flags(sampler: SamplerConfig, args) -> SamplerConfig:
    """The run's settings with the flags add_sampler_flags defined and the user gave."""
    return replace(sampler, **{f.name: getattr(args, f.name) for f in fields(SamplerConfig)
                               if getattr(args, f.name) is not None})


@torch.no_grad()
def generate(model: MeDiM, tok, x: torch.Tensor, sampler: SamplerConfig, *, seed=0,
             batch_size=256) -> list[tuple[str, np.ndarray, str]]:
    """Fill every [MASK] of x (B, T) with medim.sample and decode each row into (report, image uint8, domain).
    Rows with both a report and an image to fill (joint pairs) go through JOINT[sampler.joint_order] first; with
    sampler.candidates > 1 the last pass is best_of's. Rows go batch_size at a time, with a progress bar when there is
    more than one batch."""
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    seg, legal = tok.vocab.segment_ids.to(device), tok.vocab.legal.to(device)
    out = []
    chunks = x.split(batch_size)
    for chunk in tqdm(chunks, desc=f"sampling {len(x)} rows", unit="batch", disable=len(chunks) < 2):
        chunk = chunk.to(device)
        masked = chunk == tok.vocab.mask_id
        if ((masked & (seg == medim.IMAGE)).any(1) & (masked & (seg == medim.TEXT)).any(1)).any():
            chunk = JOINT[sampler.joint_order](model, chunk, seg, legal, sampler, gen)
        if sampler.candidates > 1:
            filled = best_of(model, chunk, seg, legal, sampler, gen, sampler.candidates)
        else:
            filled = medim.sample(model, chunk, seg, legal, sampler, generator=gen)
        out.extend(tok.decode(row) for row in filled.cpu().numpy())
    return out


# Gumbel noise this strong swamps log p in the confidence: slots are revealed in a uniformly random order, as in the
# ancestral sampler of MDLM (Sahoo et al. 2024), instead of the most confident first.
RANDOM_ORDER = 1e3
# The sampler settings of a random-order pass over both halves (alternating's first), over the run's own.
RANDOM_ORDER_PASS = dict(text_left_to_right=False, text_block=0, threshold=0.0, image_threshold=0.0,
                         remask_steps=0, temperature=RANDOM_ORDER)


def alternating(model, x, seg, legal, sampler: SamplerConfig, generator) -> torch.Tensor:
    """A joint pair in three passes, the last one generate's. First the image and the report together, one image code
    and one text slot per step (joint_steps) in random order, tokens drawn from the model (joint_token_temperature):
    the masks then look as they did in training's joint rows, at one shared t, and the pairs cover the data.
    Revealing the most confident slots first or argmax tokens instead collapse onto the most common pair; the report
    alone, left to right, while the image is all [MASK] (report_first) is a mask pattern training never shows and
    under-reports findings. Random-order text is often ungrammatical, so the report is then drawn again from the
    finished image as image -> report draws it (left to right, guided, tokens at joint_token_temperature), and the
    image is masked again for generate to draw it from that report as report -> image does: one round of alternating
    (Gibbs-style) conditional draws, each pass one the model was trained for. Given words (a prompt) never change.
    docs/experiments.md "Joint pairs" has the measurements."""
    mask_id = model.cfg.mask_id
    report_slots, image_slots = ((x == mask_id) & (seg == s) for s in (medim.TEXT, medim.IMAGE))   # (B, T) each
    together = replace(sampler, **RANDOM_ORDER_PASS, sample_steps=sampler.joint_steps,
                       text_steps=sampler.joint_steps, token_temperature=sampler.joint_token_temperature)
    x = medim.sample(model, x, seg, legal, together, generator=generator).masked_fill(report_slots, mask_id)
    x = medim.sample(model, x, seg, legal, replace(sampler, token_temperature=sampler.joint_token_temperature),
                     generator=generator)
    return x.masked_fill(image_slots, mask_id)


def report_first(model, x, seg, legal, sampler: SamplerConfig, generator) -> torch.Tensor:
    """The report of a joint pair, drawn while its image is still all [MASK]: p(report) p(image | report), so the
    image is then made exactly as report -> image makes it (generate's last sample call). Tokens drawn from the
    model's distribution (joint_token_temperature) instead of argmax keep the reports diverse."""
    return medim.sample(model, x, seg, legal, replace(sampler, token_temperature=sampler.joint_token_temperature),
                        generator=generator, fill=medim.TEXT)


def best_of(model, x, seg, legal, sampler: SamplerConfig, generator, k: int) -> torch.Tensor:
    """Every [MASK] of x (B, T) filled k times by medim.sample; each row keeps the draw beside which the model finds
    the row's given half most likely (medim.given_logprob): the report for report -> image, the image for
    image -> report. The model judges its own draws against their condition (as a reranker would). Returns (B, T)."""
    given = (seg > 0) & (x != model.cfg.mask_id)                                                       # (B, T)
    drawn = medim.sample(model, x.repeat_interleave(k, 0), seg, legal, sampler, generator=generator)  # (B k, T)
    score = medim.given_logprob(model, drawn, seg, legal, given.repeat_interleave(k, 0))              # (B k,)
    best = rearrange(score, "(b k) -> b k", k=k).argmax(1)                                            # (B,)
    return rearrange(drawn, "(b k) t -> b k t", k=k)[torch.arange(len(x)), best]                      # (B, T)


JOINT = {"alternating": alternating, "report_first": report_first}


def read_image(path: str, tok, domain: str) -> np.ndarray:
    """An image file as the tokenizer expects it, read exactly as the data loaders read training images
    (data/images.py: 16-bit scaling, alpha on white, pad to square, resize)."""
    try:
        return read_like_training(path, domain, tok.image_size)[0]
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise SystemExit(f"error: cannot read image {path}: {e}")


#### A grid a person can read: each image with its report underneath

def save_grid(images: list[np.ndarray], captions: list[str], path: str, cols: int = 4, cell: int = 192, text_lines: int = 9):
    font = ImageFont.load_default()
    chars = max(20, cell // 6)
    line_h = 11
    w, h = cell + 8, cell + 8 + text_lines * line_h
    rows = (len(images) + cols - 1) // cols
    canvas = Image.new("RGB", (cols * w, rows * h), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (img, cap) in enumerate(zip(images, captions)):
        r, c = divmod(i, cols)
        pil = Image.fromarray(img).convert("RGB").resize((cell, cell), Image.Resampling.NEAREST)
        canvas.paste(pil, (c * w + 4, r * h + 4))
        lines = textwrap.wrap(cap, chars)[:text_lines]
        for k, line in enumerate(lines):
            draw.text((c * w + 4, r * h + cell + 6 + k * line_h), line, fill="black", font=font)
    write_atomic(path, lambda f: canvas.save(f, format="PNG"))


def main(argv=None):
    p = argparse.ArgumentParser(description="Sample from a trained MeDiM run.")
    p.add_argument("--ckpt", required=True, help="run directory (holds ckpt.pt, vqvae.pt, tokenizer.json)")
    p.add_argument("--task", choices=["t2i", "i2t", "joint"], required=True)
    p.add_argument("--report", action="append", default=[], help="t2i: a report (repeat the flag for several)")
    p.add_argument("--image", action="append", default=[], help="i2t: an image file (repeat the flag for several)")
    p.add_argument("--prompt", default="", help="joint: the first words of the report")
    p.add_argument("--domain", default="cxr", help="cxr or path (default cxr)")
    p.add_argument("--n", type=int, default=4, help="samples per report (t2i) or in total (joint) (default 4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="samples", help="output folder (default samples)")
    add_sampler_flags(p.add_argument_group("sampler settings (medim.SamplerConfig; default: the run's own, saved in its "
                                           "ckpt.pt; cfg_scale guides the image slots, i2t_cfg_scale the text slots)"))
    args = p.parse_args(argv)

    model, tok, sampler, _ = load_run(args.ckpt, args.device)
    try:
        sampler = sampler_from_flags(sampler, args)
    except ValueError as e:
        p.error(str(e))
    if args.domain not in tok.vocab.domain_id:
        p.error(f"--domain must be one of {sorted(tok.vocab.domain_id)}, got {args.domain!r}")
    if args.task == "t2i":
        if not args.report:
            p.error("--task t2i needs --report TEXT")
        reports = [r for r in args.report for _ in range(args.n)]
        x = condition_on_reports(tok, reports, [args.domain] * len(reports))
    elif args.task == "i2t":
        if not args.image:
            p.error("--task i2t needs --image FILE")
        images = [read_image(f, tok, args.domain) for f in args.image]
        x = condition_on_images(tok, images, [args.domain] * len(images))
    else:
        x = condition_on_prompt(tok, args.n, args.domain, args.prompt)
    results = generate(model, tok, x, sampler, seed=args.seed)
    os.makedirs(args.out, exist_ok=True)
    for i, (report, image, _) in enumerate(results):
        write_atomic(os.path.join(args.out, f"image_{i}.png"), lambda f: Image.fromarray(image).save(f, format="PNG"))
        write_atomic(os.path.join(args.out, f"text_{i}.txt"), lambda f: f.write((report + "\n").encode()))
    save_grid([r[1] for r in results], [r[0] for r in results], os.path.join(args.out, "grid.png"))
    print(f"wrote {len(results)} samples and grid.png to {args.out}")


if __name__ == "__main__":
    main()
