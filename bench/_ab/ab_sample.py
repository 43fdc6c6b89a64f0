# temporary A/B (bench helper): medim.sample vs a patched copy computing logits only at masked rows
import os, sys, time, statistics, argparse
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
here = os.path.dirname(os.path.abspath(__file__)); root = os.path.dirname(os.path.dirname(here))
sys.path[:0] = [here, os.path.join(root, 'bench'), root]
import torch, medim, medim_patched
from train_speed import Layout, synchronize
from sample_speed import prompts
p = argparse.ArgumentParser()
p.add_argument('--device', default='cpu'); p.add_argument('--threads', type=int, default=1)
p.add_argument('--d', type=int, default=512); p.add_argument('--layers', type=int, default=8)
p.add_argument('--batch', type=int, default=8); p.add_argument('--repeats', type=int, default=3)
p.add_argument('--dtype', default='fp32'); p.add_argument('--cfgs', default='0,2'); p.add_argument('--tasks', default='t2i,i2t')
a = p.parse_args()
torch.set_num_threads(a.threads)
lay = Layout(2700, 64, 48, 512)
torch.manual_seed(0)
model = medim.MeDiM(medim.MeDiMConfig(d_model=a.d, n_layers=a.layers, n_heads=a.d // 64, d_ff=64 * -(-8 * a.d // 192),
                                      vocab_size=lay.V, seq_len=lay.T, mask_id=lay.mask_id)).to(a.device).eval()
ac = torch.autocast(torch.device(a.device).type, dtype=torch.bfloat16) if a.dtype == 'bf16' else torch.autocast('cpu', enabled=False)
seg, legal = lay.segment_ids.to(a.device), lay.legal.to(a.device)
def timed(f):
    t = time.perf_counter(); r = f(); synchronize(a.device); return time.perf_counter() - t, r
print(f"A/B sample: d={a.d} L={a.layers} B={a.batch} {a.dtype} {a.device} threads={a.threads}; load {os.getloadavg()}")
for task in a.tasks.split(','):
    for cfg in [float(c) for c in a.cfgs.split(',')]:
        x = prompts(lay, task, a.batch, torch.Generator().manual_seed(0)).to(a.device)
        run = {name: (lambda m=m: m.sample(model, x, seg, legal, steps=16, cfg_scale=cfg, text_left_to_right=True,
                                           generator=torch.Generator(device=a.device).manual_seed(0)))
               for name, m in (('orig', medim), ('patched', medim_patched))}
        rows = torch.cat([x, x]) if cfg else x
        tt = torch.full((rows.shape[0],), 0.5, device=a.device)
        with ac:
            outs = {n: f() for n, f in run.items()}
            same = bool((outs['orig'] == outs['patched']).all())
            ts = {n: [] for n in run}; fw = []
            for r in range(a.repeats):
                for n in (list(run) if r % 2 == 0 else list(run)[::-1]):
                    ts[n].append(timed(run[n])[0])
                with torch.no_grad():
                    fw += [timed(lambda: model(rows, tt))[0] for _ in range(3)]
        f = statistics.median(fw) * 16
        mo, mp = statistics.median(ts['orig']), statistics.median(ts['patched'])
        print(f"{task} cfg={cfg:g}: orig {mo:.3f}s (ratio {mo / f:.3f})  patched {mp:.3f}s (ratio {mp / f:.3f})  "
              f"16 x fwd {f:.3f}s  speedup {mo / mp:.3f}  same samples: {same}")
