"""End to end at toy scale: a tiny MeDiM memorises 8 image/report pairs, then writes each pair's report from its image
and redraws each image from its report."""
import math

import torch

import medim
from medim_toy import ToyLayout


def test_tiny_model_overfits_8_pairs_and_the_sampler_reproduces_them():
    torch.set_num_threads(1)
    lay = ToyLayout(n_text=20, K=16, N=8, L=8)
    g = torch.Generator().manual_seed(0)
    pairs = torch.stack([lay.sequence(torch.randint(0, lay.n_text, (int(n),), generator=g).tolist(),
                                      torch.randint(0, lay.K, (lay.N,), generator=g).tolist())
                         for n in torch.randint(3, lay.L, (8,), generator=g)])          # (8, T)
    image, text = lay.segment_ids == medim.IMAGE, lay.segment_ids == medim.TEXT
    assert len({tuple(r) for r in pairs[:, text].tolist()}) == 8 and len({tuple(r) for r in pairs[:, image].tolist()}) == 8
    torch.manual_seed(0)
    model = medim.MeDiM(lay.config(d_model=64, n_heads=4, d_ff=128))
    lr, steps = 5e-3, 400
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.0)
    batch = pairs.repeat(4, 1)                                                         # (32, T)
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * (1 - step / steps)
        loss, _ = medim.diffusion_loss(model, batch, lay.segment_ids, lay.legal, generator=g, cond_frac=0.5,
                                       i2t_power=0.5)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    model.eval()
    with torch.no_grad():
        def mean_loss(**kw):
            return sum(medim.diffusion_loss(model, batch, lay.segment_ids, lay.legal, generator=g, **kw)[0].item()
                       for _ in range(10)) / 10
        # one modality given, the other fully masked: memorised pairs leave nothing to guess, so the loss goes to 0
        assert mean_loss(cond_frac=1.0, cond_text_share=0.0) < 0.05                    # image -> report
        assert mean_loss(cond_frac=1.0, cond_text_share=1.0) < 0.05                    # report -> image
        # from nothing, a model can at best pick one of the 8 pairs: the ELBO floor is log(8) per sequence
        assert mean_loss(cond_frac=0.0) < 4 * math.log(8) / (lay.N + lay.L)

    unguided = lambda **kw: medim.SamplerConfig(cfg_scale=0.0, i2t_cfg_scale=0.0, token_temperature=0.0, **kw)
    one_slot = dict(text_block=0, threshold=0.0)
    for order in (dict(one_slot, text_left_to_right=False), dict(one_slot, text_left_to_right=True), {}):
        x = torch.where(text, lay.mask_id, pairs)       # image -> report: by confidence, left to right, the default
        out = medim.sample(model, x, lay.segment_ids, lay.legal, unguided(sample_steps=lay.L, **order),
                           generator=torch.Generator().manual_seed(1))
        assert torch.equal(out[:, text], pairs[:, text])
    x = torch.where(image, lay.mask_id, pairs)                                         # report -> image
    out = medim.sample(model, x, lay.segment_ids, lay.legal, unguided(sample_steps=4),
                       generator=torch.Generator().manual_seed(1))
    assert torch.equal(out, pairs)
