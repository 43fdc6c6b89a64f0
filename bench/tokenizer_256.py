"""The VQ-VAE at the size real data needs: 256-px chest X-rays, a few (f, K) choices side by side, equal CPU time each.

    OMP_NUM_THREADS=1 python bench/tokenizer_256.py                        # f16/K1024, f16/K4096, f8/K1024, 3.3 min each
    python bench/tokenizer_256.py --real DIR                               # + held-out real X-rays (png/jpg) from DIR
    python bench/tokenizer_256.py --configs 16:1024,16:8192 --minutes 10 --device cuda

No real X-ray set ships here, so the VQ-VAE (tokenizer.train_vqvae) trains on toy chest X-rays from data/synthetic.py
rendered at 256 px, with the texture real films have and the toy ones lack added on top (`radiograph_texture`: 1/f
"anatomical noise" standing in for vessels and soft tissue, quantum noise, a random gamma). It is scored on held-out
images of that kind and on the real X-rays in --real, read exactly as the loaders read them (data/images.py):
  psnr_db        reconstruction PSNR, decode(encode(x)) against x, over all pixels of the set
  usage          share of the K codes used at least once on the held-out textured images (codes are what the
                 diffusion model predicts: unused codes are wasted vocabulary, K near usage*K is what the data needs)
  perplexity     exp(entropy) of the held-out code histogram
  tokens         image tokens per picture, (256/f)^2: the sequence length the diffusion model pays for
A row `bicubic f=16` downsamples to (256/f)^2 gray values and back (bicubic), the floor any tokenizer must beat.
It writes docs/tokenizer_256.png: originals, then each config's reconstruction, one row per image.

Real images used for the README numbers: two NIH ChestX-ray14 frontal films (00000001_000.png, 00027426_000.png, as
shipped in the tests of mlmed/torchxrayvision). NIH Clinical Center data: use is unrestricted, with attribution
(Wang et al., "ChestX-ray8", CVPR 2017; https://nihcc.app.box.com/v/ChestXray-NIHCC). They are not in this repository.
"""
import os
if "OMP_WAIT_POLICY" not in os.environ:  # a short OpenMP spin before sleeping, as train.py (why there)
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")
import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import tokenizer as tk  # noqa: E402
from data.images import IMAGE_EXTS, read_image  # noqa: E402
from data.synthetic import SyntheticDataset  # noqa: E402


def radiograph_texture(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint8 (S, S) toy CXR -> the same with film-like texture: Gaussian noise with a 1/f amplitude spectrum (the
    power-law "anatomical noise" of radiographs) inside the body, pixel noise, and a gamma in [0.8, 1.25]."""
    S = image.shape[0]
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(S), np.fft.fftfreq(S)))                  # (S, S) radial frequency
    f[0, 0] = 1.0
    spectrum = (rng.normal(size=(S, S)) + 1j * rng.normal(size=(S, S))) / f ** 1.2
    field = np.real(np.fft.ifft2(spectrum))
    field = (field - field.mean()) / field.std()
    body = np.clip((image.astype(np.float64) - 20) / 40, 0, 1)                        # no texture on the black air
    x = image + body * rng.uniform(6, 14) * field + rng.normal(0, 2.5, (S, S))
    x = 255 * (np.clip(x, 0, 255) / 255) ** rng.uniform(0.8, 1.25)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def textured_set(split: str, n: int, size: int, seed: int) -> np.ndarray:
    ds = SyntheticDataset("cxr", split, n=n, image_size=size, seed=seed)
    rng = np.random.default_rng([seed, 256, {"train": 0, "val": 1, "test": 2}[split]])
    return np.stack([radiograph_texture(ds[i].image, rng) for i in range(n)])        # (n, S, S) uint8


def real_images(folder, size: int) -> tuple[list[str], np.ndarray]:
    if folder is None:
        return [], np.zeros((0, size, size), np.uint8)
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_EXTS)
    if not files:
        raise SystemExit(f"error: --real {folder}: no image files ({' '.join(IMAGE_EXTS)})")
    return [p.name for p in files], np.stack([read_image(p, "cxr", size)[0] for p in files])


def reconstruct(model, images: np.ndarray, batch: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """-> (reconstructions uint8 (M, S, S), codes (M, h, w))."""
    recon, codes = [], []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            c = model.encode(tk.images_to_tensor(images[i:i + batch], 1, images.shape[1]))
            codes.append(c.numpy())
            recon += tk.tensor_to_images(model.decode(c))
    return np.stack(recon), np.concatenate(codes)


def bicubic(images: np.ndarray, f: int) -> np.ndarray:
    S = images.shape[1]
    small = [Image.fromarray(x).resize((S // f, S // f), Image.Resampling.BICUBIC) for x in images]
    return np.stack([np.asarray(s.resize((S, S), Image.Resampling.BICUBIC)) for s in small])


def code_stats(codes: np.ndarray, K: int) -> tuple[float, float]:
    p = np.bincount(codes.ravel(), minlength=K) / codes.size
    return float((p > 0).mean()), float(np.exp(-(p[p > 0] * np.log(p[p > 0])).sum()))


def save_picture(path: Path, rows: list[tuple[str, list[np.ndarray]]], titles: list[str], cell: int = 160):
    """A grid: one row per image (its name on the left), originals first, then each config's reconstruction."""
    label_w, head = 120, 22
    canvas = Image.new("L", (label_w + cell * len(titles), head + cell * len(rows)), 255)
    draw = ImageDraw.Draw(canvas)
    for j, title in enumerate(titles):
        draw.text((label_w + j * cell + 4, 4), title, fill=0)
    for i, (name, images) in enumerate(rows):
        draw.text((4, head + i * cell + cell // 2 - 6), name[:18], fill=0)
        for j, img in enumerate(images):
            canvas.paste(Image.fromarray(img).resize((cell, cell), Image.Resampling.LANCZOS),
                         (label_w + j * cell, head + i * cell))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    canvas.save(tmp)
    os.replace(tmp, path)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="16:1024,16:4096,8:1024", help="f:K pairs, comma-separated")
    p.add_argument("--minutes", type=float, default=3.3, help="training wall time per config (the schedule follows it)")
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--n-train", type=int, default=1000, help="textured toy CXR to train on")
    p.add_argument("--n-eval", type=int, default=64, help="held-out textured toy CXR")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--real", default=None, help="a folder of real chest X-rays (held out; png / jpg / dcm)")
    p.add_argument("--picture", default=str(ROOT / "docs" / "tokenizer_256.png"), help="'' for none")
    p.add_argument("--threads", type=int, default=0, help="0 = all this process may use")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    configs = [tuple(int(v) for v in c.split(":")) for c in args.configs.split(",") if c.strip()]
    S = args.image_size
    t0 = time.time()
    train = textured_set("train", args.n_train, S, args.seed)
    held = textured_set("test", args.n_eval, S, args.seed)
    real_names, real = real_images(args.real, S)
    print(f"{len(train)} textured toy CXR to train on, {len(held)} held out, {len(real)} real X-rays held out "
          f"({S} px, {torch.get_num_threads()} threads, data in {time.time() - t0:.0f} s)")
    results, recons = {}, {}
    for f, K in configs:
        start = time.time()
        model = tk.train_vqvae(train, 1, K=K, f=f, steps=100000, batch_size=args.batch_size, seed=args.seed,
                               max_minutes=args.minutes, device=args.device)
        train_seconds = time.time() - start
        rec_held, codes = reconstruct(model, held)
        usage, ppl = code_stats(codes, K)
        row = {"f": f, "K": K, "tokens": (S // f) ** 2, "psnr_db": tk.psnr_db(rec_held, held), "usage": usage,
               "perplexity": ppl, "train_seconds": round(train_seconds, 1),
               "params_m": sum(q.numel() for q in model.parameters()) / 1e6}
        if len(real):
            rec_real, _ = reconstruct(model, real)
            row["psnr_db_real"] = tk.psnr_db(rec_real, real)
            recons[(f, K)] = (rec_held, rec_real)
        else:
            recons[(f, K)] = (rec_held, real)
        results[f"f{f}_K{K}"] = row
        print(f"f={f} K={K}: PSNR {row['psnr_db']:.2f} dB held-out toy"
              + (f", {row['psnr_db_real']:.2f} dB real" if len(real) else "") + f", usage {usage:.1%}, "
              f"perplexity {ppl:.0f}, {train_seconds / 60:.1f} min", flush=True)
    for f in sorted({f for f, _ in configs}):
        row = {"f": f, "K": None, "tokens": (S // f) ** 2, "psnr_db": tk.psnr_db(bicubic(held, f), held)}
        if len(real):
            row["psnr_db_real"] = tk.psnr_db(bicubic(real, f), real)
        results[f"bicubic_f{f}"] = row
    print(f"\n| config | image tokens | params (M) | PSNR toy+texture (dB) | PSNR real (dB) | codebook usage | perplexity |"
          f" train (min) |\n|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        real_cell = f"{r['psnr_db_real']:.2f}" if "psnr_db_real" in r else "-"
        if r["K"] is None:
            print(f"| bicubic f={r['f']} | {r['tokens']} | - | {r['psnr_db']:.2f} | {real_cell} | - | - | - |")
        else:
            print(f"| f={r['f']} K={r['K']} | {r['tokens']} | {r['params_m']:.2f} | {r['psnr_db']:.2f} | {real_cell} | "
                  f"{r['usage']:.1%} | {r['perplexity']:.0f} | {r['train_seconds'] / 60:.1f} |")
    if args.picture:
        picks = [("toy+texture", i) for i in range(min(2, len(held)))] + [(n, i) for i, n in enumerate(real_names[:3])]
        rows = []
        for name, i in picks:
            source = 0 if name == "toy+texture" else 1
            original = held[i] if source == 0 else real[i]
            rows.append((name if source else f"toy {i}", [original] + [recons[c][source][i] for c in configs]))
        save_picture(Path(args.picture), rows, ["original"] + [f"f={f} K={K}" for f, K in configs])
        print(f"wrote {args.picture}")
    print(f"total {(time.time() - t0) / 60:.1f} min")
    return results


if __name__ == "__main__":
    main()
