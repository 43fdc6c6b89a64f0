"""End to end at toy scale: a tiny MeDiM memorises 8 image/report pairs, then writes each pair's report from its image."""
import time

import torch

import medim
from medim_toy import ToyLayout


def test_tiny_model_overfits_8_pairs_and_writes_their_reports_from_the_images():
    torch.set_num_threads(1)
    start = time.time()
    lay = ToyLayout(n_text=20, K=16, N=16, L=8)
    g = torch.Generator().manual_seed(0)
    pairs = torch.stack([lay.sequence(torch.randint(0, lay.n_text, (int(n),), generator=g).tolist(),
                                      torch.randint(0, lay.K, (lay.N,), generator=g).tolist())
                         for n in torch.randint(3, lay.L, (8,), generator=g)])          # (8, T)
    torch.manual_seed(0)
    model = medim.MeDiM(lay.config(d_model=64, n_heads=4, d_ff=128))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    batch = pairs.repeat(4, 1)                                                         # (32, T)
    losses = []
    for step in range(400):
        loss, _ = medim.diffusion_loss(model, batch, lay.segment_ids, lay.legal, generator=g, cond_frac=0.5)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    final = sum(losses[-50:]) / 50
    assert final < 0.05 * sum(losses[:10]) / 10 and final < 0.1, (losses[:10], final)

    model.eval()
    text = lay.segment_ids == medim.TEXT
    x = pairs.clone()
    x[:, text] = lay.mask_id                                                           # image -> report
    for ltr in (False, True):
        out = medim.sample(model, x, lay.segment_ids, lay.legal, steps=lay.L, text_left_to_right=ltr,
                           generator=torch.Generator().manual_seed(1))
        assert torch.equal(out[:, text], pairs[:, text])
    assert time.time() - start < 60
