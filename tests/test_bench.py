"""Smoke tests for bench/: each script's main() runs at toy sizes and returns sane numbers, and the FLOP count that
every MFU rests on matches a hand count. The real measurements are in bench/README.md."""
import math
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
import data_speed  # noqa: E402
import medim  # noqa: E402
import learning_curve  # noqa: E402
import sample_speed  # noqa: E402
import train_speed  # noqa: E402

TINY = ["--d-model", "16", "--n-layers", "1", "--n-heads", "2", "--vocab", "530", "--codebook", "512", "--threads", "1"]


def test_train_speed_times_all_three_models_side_by_side():
    out = train_speed.main(TINY + ["--seq-len", "12", "--image-tokens", "4", "--batch", "2", "--matmul", "64",
                                   "--warmup", "1", "--repeats", "2"])
    assert set(out["models"]) == {"hf", "ours-llama", "ours-train"}
    assert out["peak_flops"] > 0
    for name, m in out["models"].items():
        assert len(m["times_ms"]) == 2 and m["ms"] > 0 and m["tok_s"] > 0 and m["mfu"] > 0
        assert math.isnan(m["ratio"]) if name == "hf" else m["ratio"] > 0
    # same shape, same tokens: the like-for-like models do exactly the same model FLOPs
    assert out["models"]["hf"]["gflop"] == out["models"]["ours-llama"]["gflop"]


def test_the_per_segment_head_does_less_head_work_for_the_same_loss():
    args = TINY + ["--seq-len", "12", "--image-tokens", "4", "--batch", "2", "--vocab", "300", "--codebook", "64"]
    layout = train_speed.Layout(300, 4, 12 - 4 - 3, 64)
    x0 = layout.random_batch(2, torch.Generator().manual_seed(0))
    model = train_speed.build_models(train_speed.parse_args(args + ["--models", "ours-train"]), layout)["ours-train"]
    seg, legal = layout.segment_ids, layout.legal
    ours, full = (train_speed.masked_rows(model, x0, seg, legal, 0, whole) for whole in (False, True))
    assert 0 < ours < full                                          # image rows cost 64 / 300 of a full row
    losses = [medim.diffusion_loss(m, x0, seg, legal, generator=torch.Generator().manual_seed(0))[0]
              for m in (model, train_speed.full_head(model))]
    assert torch.allclose(*losses, atol=1e-6)


def test_flop_count_matches_a_hand_count_and_puts_adaln_per_sample():
    args = train_speed.parse_args(TINY + ["--seq-len", "12", "--image-tokens", "4"])
    layout = train_speed.Layout(530, 4, 5, 512)
    models = train_speed.build_models(args, layout)
    d, f, V, T, B = 16, args.d_ff, 530, 12, 3
    per_token = 4 * d * d + 3 * d * f + 2 * d + d  # q k v o, gate up down, two block norms, the final norm
    for name in ("hf", "ours-llama"):
        assert train_speed.flop_params(models[name]) == (per_token, 0, V * d)
    n_token, n_sample, n_head = train_speed.flop_params(models["ours-train"])
    adaln, time_mlp = d * 6 * d + 6 * d, 256 * d + d + d * d + d
    assert (n_token, n_sample, n_head) == (per_token, adaln + time_mlp, V * d)
    attention = 12 * 1 * 2 * (d // 2) * T  # 12 L H Q T per token
    flops = train_speed.step_flops(models["ours-train"], models["ours-train"].cfg, B, T, logit_rows=7)
    assert flops == (6 * per_token + attention) * B * T + 6 * n_sample * B + 6 * V * d * 7


def test_layout_batches_are_legal_training_data():
    layout = train_speed.Layout(530, 4, 5, 512)
    x0 = layout.random_batch(3, torch.Generator().manual_seed(0))
    assert x0.shape == (3, layout.T) and layout.legal[layout.segment_ids, x0].all()
    with pytest.raises(ValueError, match="vocab_size"):
        train_speed.Layout(100, 4, 5, 512)


def test_sample_speed_counts_one_forward_per_step_with_and_without_cfg():
    out = sample_speed.main(TINY + ["--image-tokens", "6", "--text-tokens", "5", "--batch", "2", "--steps", "3",
                                    "--cfg-scale", "0,1.5", "--repeats", "1"])
    assert [(s["task"], s["cfg"], s["rows"]) for s in out["settings"]] == [
        ("t2i", 0.0, 2), ("t2i", 1.5, 4), ("i2t", 0.0, 2), ("i2t", 1.5, 4)]
    for s in out["settings"]:
        assert s["forwards"] == 3 and s["ratio"] > 0 and s["sample_s"] > 0 and s["full_head_s"] is None


def test_the_per_segment_head_samples_the_same_tokens_and_sample_speed_times_both():
    layout = train_speed.Layout(300, 4, 5, 64)
    torch.manual_seed(0)
    model = medim.MeDiM(medim.MeDiMConfig(d_model=16, n_layers=1, n_heads=2, d_ff=64, vocab_size=layout.V,
                                          seq_len=layout.T, mask_id=layout.mask_id)).eval()
    x = sample_speed.prompts(layout, "t2i", 3, torch.Generator().manual_seed(0))
    x[0, layout.segment_ids == medim.TEXT] = layout.mask_id  # a joint row too: both segments' slots at once
    sampler = medim.SamplerConfig(sample_steps=3, token_temperature=1.0)
    drawn = [medim.sample(m, x, layout.segment_ids, layout.legal, sampler, generator=torch.Generator().manual_seed(1))
             for m in (model, train_speed.full_head(model))]
    assert torch.equal(*drawn) and not (drawn[0] == layout.mask_id).any()
    out = sample_speed.main(TINY + ["--image-tokens", "6", "--text-tokens", "5", "--batch", "2", "--steps", "2",
                                    "--cfg-scale", "1.5", "--tasks", "t2i", "--repeats", "1", "--full-head"])
    assert out["settings"][0]["full_head_s"] > 0


def test_data_speed_reports_a_share_for_each_loader():
    out = data_speed.main(TINY + ["--n", "50", "--image-tokens", "4", "--text-tokens", "5", "--batch", "2",
                                  "--fetches", "5", "--steps", "1"])
    assert set(out["loaders"]) == {"train.py", "uint16-ram", "memmap"}
    assert out["step_ms"] > 0
    assert all(0 < v["share"] < 1 and v["fetch_us"] > 0 for v in out["loaders"].values())


def test_loss_curves_read_train_logs_and_keep_the_resumed_steps(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "log.txt").write_text(
        "medim train | device cpu\n"
        "step 0 | loss 31.4982 | text 34.365 | image 12.526 | lr 2.00e-05 | grad norm 166.84 | 5772 ms | 215 tok/s\n"
        "step 50 | loss 3.0587 | text 2.344 | image 5.398 | lr 1.00e-03 | grad norm 19.13 | 1560 ms | 795 tok/s\n"
        "resumed from step 50\n"
        "step 50 | loss 3.0000 | text 2.000 | image 5.000 | lr 1.00e-03 | grad norm 19.13 | 1560 ms | 795 tok/s\n"
        "step 100 | loss 2.5 | text 1.5 | image 4.0 | lr 9.73e-04 | grad norm 5.35 | 1474 ms | 841 tok/s\n")
    assert learning_curve.read_loss(str(run)) == [{"step": 0, "text": 34.365, "image": 12.526},
                                                   {"step": 50, "text": 2.0, "image": 5.0},
                                                   {"step": 100, "text": 1.5, "image": 4.0}]
    out = tmp_path / "loss.png"
    learning_curve.main([str(run), "--loss", "--x", "step", "--out", str(out)])
    assert out.stat().st_size > 1000 and "wrote" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="no 'step N"):
        (run / "log.txt").write_text("nothing logged\n")
        learning_curve.read_loss(str(run))
