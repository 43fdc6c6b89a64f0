"""bench/ablations.py: the table is mean ± std over seeds, the chart is drawn, and bad variant specs are refused."""
import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
import ablations  # noqa: E402


def _metrics(i2t, t2i):
    return {"i2t": {"label_f1_macro": i2t, "bleu1": 0.5}, "t2i": {"label_acc": 0.8, "label_f1_macro": t2i, "fd_oracle": 10.0}}


def test_table_reports_mean_and_population_std_over_seeds(tmp_path):
    results = {"full": [_metrics(0.2, 0.4), _metrics(0.4, 0.6)], "causal": [_metrics(0.1, 0.0)]}
    table = ablations.markdown_table(results)
    rows = {line.split("|")[1].strip(): line for line in table.splitlines()[2:]}
    assert "0.300 ± 0.100" in rows["full"] and "0.500 ± 0.100" in rows["full"]   # i2t F1, t2i F1 (np.std, ddof 0)
    assert "0.100 ± 0.000" in rows["causal"] and "| - |" in rows["causal"]          # BLEU-2 missing -> "-"
    png = str(tmp_path / "chart.png")
    ablations.bar_chart(results, png)
    assert os.path.getsize(png) > 1000


def test_variant_without_flags_separator_is_refused(capsys):
    with pytest.raises(SystemExit):
        ablations.main(["--variant", "no-equals-sign", "--out", "/nonexistent"])
    assert "NAME=FLAGS" in capsys.readouterr().err


def test_pretrained_pair_is_like_for_like_with_paired_differences_and_finished_runs_are_kept(tmp_path, monkeypatch):
    """--init-from: the pretrained and --random-init runs get the same flags, tokenizers (the LLM's), steps and seed;
    the d=128 reference row gets our BPE and its own steps; the table adds per-seed differences; a second call reruns
    nothing."""
    calls = []

    def fake_train(args, log_path):
        out, seed = args[args.index("--out") + 1], int(args[args.index("--seed") + 1])
        calls.append(args)
        os.makedirs(out, exist_ok=True)
        if os.path.basename(out).startswith("tokenizers"):
            open(os.path.join(out, "vqvae.pt"), "w").write(" ".join(args))  # which flags made these tokenizers
            return
        i2t = 0.5 if "--random-init" in args else 0.6 + 0.2 * seed
        json.dump(_metrics(i2t, 0.4), open(os.path.join(out, "metrics.json"), "w"))

    monkeypatch.setattr(ablations, "run_train", fake_train)
    argv = ["--init-from", "smollm2", "--pair-args", "--preset smollm2", "--steps", "0", "--reference-steps", "50",
            "--seeds", "0", "1", "--out", str(tmp_path)]
    ablations.main(argv)
    runs = {os.path.basename(a[a.index("--out") + 1]): a for a in calls}
    pre, rnd = runs["pretrained_llm_seed1"], runs["w_o_pretrained_mllm_weight_seed1"]
    ref = runs["d_128_default__reference_seed1"]
    same = lambda a: [f for i, f in enumerate(a) if f != "--random-init" and a[i - 1] != "--out"]
    assert same(rnd) == same(pre) and "--random-init" in rnd and "--random-init" not in pre
    assert "--steps" not in pre and ref[ref.index("--steps") + 1] == "50" and "--init-from" not in ref
    for name, kind in (("pretrained_llm_seed1", "--init-from smollm2"), ("d_128_default__reference_seed1", None)):
        made_by = open(tmp_path / name / "vqvae.pt").read()                  # the copied tokenizers' own flags
        assert (kind in made_by) if kind else "--init-from" not in made_by
    assert len([a for a in calls if "tokenizers" in a[a.index("--out") + 1]]) == 4  # 2 kinds x 2 seeds
    table = open(tmp_path / "ablations.md").read()
    paired = table.split("paired by seed")[1]
    assert "| 0 | +0.100 |" in paired and "| 1 | +0.300 |" in paired and "+0.200 ± 0.100" in paired
    n = len(calls)
    ablations.main(argv)
    assert len(calls) == n
