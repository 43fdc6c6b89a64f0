"""bench/ablations.py: the table is mean ± std over seeds, the chart is drawn, and bad variant specs are refused."""
import json
import os
import sys
import threading
import time

import numpy as np
import pytest
import scipy.stats

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
import ablations  # noqa: E402


def _metrics(i2t, t2i):
    return {"i2t": {"label_f1_macro": i2t, "bleu1": 0.5}, "t2i": {"label_acc": 0.8, "label_f1_macro": t2i, "fd_oracle": 10.0}}


def test_table_reports_mean_and_sample_std_over_seeds(tmp_path):
    results = {"full": {0: _metrics(0.2, 0.4), 1: _metrics(0.4, 0.6)}, "causal": {0: _metrics(0.1, 0.0)}}
    table = ablations.markdown_table(results)
    rows = {line.split("|")[1].strip(): line for line in table.splitlines()[2:]}
    assert "0.300 ± 0.141" in rows["full"] and "0.500 ± 0.141" in rows["full"]   # i2t F1, t2i F1: 0.1·√2 (ddof 1)
    assert "| full | 2 |" in rows["full"] and "| causal | 1 |" in rows["causal"]   # seeds behind each row
    assert "| 0.100 |" in rows["causal"] and "| - |" in rows["causal"]   # one seed: its value, no std; BLEU-2 missing
    png = str(tmp_path / "chart.png")
    ablations.bar_chart(results, png)
    assert os.path.getsize(png) > 1000


def test_chart_tints_each_half_steps_row_from_its_full_budget_twin_and_shows_every_legend_entry(tmp_path):
    full, half = ablations.bar_colour("w/o AdaLN (additive time)", 0), ablations.bar_colour("w/o AdaLN (half steps)", 7)
    assert half == tuple(c + (255 - c) // 2 for c in full)                    # lighter, same hue
    assert ablations.bar_colour("MeDiM (half steps)", 6) != half              # twins by flags, not by position
    names = list(ablations.VARIANTS)
    png = str(tmp_path / "chart.png")
    ablations.bar_chart({n: {0: _metrics(0.5, 0.5)} for n in names}, png)
    from PIL import Image
    assert Image.open(png).height >= 30 + 280 + 40 + 14 * ((len(names) + 1) // 2)  # no legend row cut off


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
    assert "| 0 | +0.100 |" in paired and "| 1 | +0.300 |" in paired and "+0.200 ± 0.141" in paired  # sample std
    assert "(2/2 better)" in paired and "Missing" not in table
    n = len(calls)
    ablations.main(argv)
    assert len(calls) == n


def test_paired_summary_gives_the_t_interval_and_a_sign_count():
    d = np.array([0.1, 0.2, 0.3])
    half = scipy.stats.t.ppf(0.975, 2) * 0.1 / np.sqrt(3)                     # 4.303 * sample std / sqrt(n)
    assert ablations.paired_summary(d, True) == f"+0.200 ± 0.100 [{0.2 - half:+.3f}, {0.2 + half:+.3f}] (3/3 better)"
    assert ablations.paired_summary(d, False).endswith("(0/3 better)")       # lower is better (FD-oracle)
    assert ablations.paired_summary(np.array([np.nan, -0.5]), True) == "-0.500 (0/1 better)"


def _fake_sweep(tmp_path, monkeypatch, finish=lambda out: True):
    calls = []

    def fake_train(args, log_path):
        out = args[args.index("--out") + 1]
        calls.append(args)
        os.makedirs(out, exist_ok=True)
        if os.path.basename(out).startswith("tokenizers"):
            open(os.path.join(out, "vqvae.pt"), "w").write("")
        elif finish(out):
            seed = int(out.rsplit("seed", 1)[1])
            json.dump(_metrics(0.5 + 0.1 * seed, 0.4), open(os.path.join(out, "metrics.json"), "w"))
        else:  # stopped after a checkpoint
            open(os.path.join(out, "ckpt.pt"), "w").write("")

    monkeypatch.setattr(ablations, "run_train", fake_train)
    return calls


def test_a_stopped_run_resumes_from_its_checkpoint_and_missing_runs_are_named(tmp_path, monkeypatch):
    argv = ["--variant", "a=--lr 1e-3", "--variant", "b=--lr 3e-3", "--seeds", "0", "1", "--out", str(tmp_path)]
    calls = _fake_sweep(tmp_path, monkeypatch, finish=lambda out: not out.endswith("b_seed1"))
    ablations.main(argv)
    table = open(tmp_path / "ablations.md").read()
    assert "Missing (not finished, not in the table): b seed 1" in table
    rows = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ")}
    assert "| a | 2 |" in rows["a"] and "| b | 1 |" in rows["b"]
    assert len(calls) == 2 + 4                                               # tokenizers per seed, 4 runs
    calls = _fake_sweep(tmp_path, monkeypatch)                                # the next sitting: it finishes
    ablations.main(argv)
    assert [a for a in calls if "tokenizers" not in a[a.index("--out") + 1]] == [
        ["--out", str(tmp_path / "b_seed1"), "--resume"]]                     # only the stopped run, resumed
    assert "Missing" not in open(tmp_path / "ablations.md").read()


def test_table_only_trains_nothing_and_pairs_only_seeds_both_rows_finished(tmp_path, monkeypatch):
    for name, seeds in (("pretrained_llm", (0, 1, 2)), ("w_o_pretrained_mllm_weight", (0, 2))):
        for seed in seeds:
            os.makedirs(tmp_path / f"{name}_seed{seed}")
            i2t = 0.3 if name == "w_o_pretrained_mllm_weight" else 0.4 + 0.1 * seed
            json.dump(_metrics(i2t, 0.4), open(tmp_path / f"{name}_seed{seed}" / "metrics.json", "w"))
    calls = _fake_sweep(tmp_path, monkeypatch)
    ablations.main(["--init-from", "smollm2", "--no-reference", "--seeds", "0", "1", "2", "--table-only",
                    "--out", str(tmp_path)])
    assert calls == []
    table = open(tmp_path / "ablations.md").read()
    paired = table.split("paired by seed")[1]
    assert "| 0 | +0.100 |" in paired and "| 2 | +0.300 |" in paired and "| 1 |" not in paired
    assert "w/o pretrained MLLM weight seed 1" in table.split("Missing")[1]


def test_report_first_variants_share_the_seeds_tokenizers_and_differ_by_text_first_only(tmp_path, monkeypatch):
    """The default sweep's report-first rows (bidirectional and causal) train from the one tokenizer set of their
    seed, image first; train.py lays it out for --text-first."""
    calls = _fake_sweep(tmp_path, monkeypatch)
    ablations.main(["--seeds", "0", "--steps", "5", "--out", str(tmp_path)])
    runs = {os.path.basename(a[a.index("--out") + 1]): a for a in calls}
    tokenizers = [name for name in runs if name.startswith("tokenizers")]
    assert tokenizers == ["tokenizers_seed0"] and "--text-first" not in runs["tokenizers_seed0"]
    flags = lambda name: runs[name][runs[name].index("5") + 1:]                  # what follows --steps 5
    assert flags("medim__report_first_seed0") == ["--text-first"]
    assert flags("w__causal_mask__report_first_seed0") == ["--causal", "--text-first"]
    assert flags("w__causal_mask_seed0") == ["--causal"] and flags("medim__bidirectional___adaln_seed0") == []
    rows = [line.split("|")[1].strip() for line in open(tmp_path / "ablations.md").read().splitlines()[4:]
            if line.startswith("| ")]
    assert {"MeDiM (report first)", "w/ causal mask (report first)"} <= set(rows)
    assert ablations.tokenizer_flags(["--init-from", "smollm2", "--text-first"]) == ["--init-from", "smollm2"]


def test_half_steps_rows_train_half_the_steps_and_every_row_is_paired_with_its_baseline(tmp_path, monkeypatch):
    """The time-conditioning rows run again at half the steps; each row's per-seed difference is taken against the
    full model at its own layout and budget, over the seeds both finished."""
    calls, i2t = [], {"medim__bidirectional___adaln": 0.9, "w__causal_mask": 0.5, "medim__half_steps": 0.7,
                      "w_o_timestep_embedding__half_steps": 0.6, "medim__report_first": 0.8,
                      "w__causal_mask__report_first": 0.75}

    def fake_train(args, log_path):
        out = args[args.index("--out") + 1]
        calls.append(args)
        os.makedirs(out, exist_ok=True)
        name, seed = os.path.basename(out).rsplit("_seed", 1)
        if name.startswith("tokenizers"):
            open(os.path.join(out, "vqvae.pt"), "w").write("")
        elif name in i2t and not (name == "w__causal_mask" and seed == "1"):  # one seed of the causal row missing
            json.dump(_metrics(i2t[name] + 0.01 * int(seed) * (name == "w__causal_mask"), 0.4),
                      open(os.path.join(out, "metrics.json"), "w"))

    monkeypatch.setattr(ablations, "run_train", fake_train)
    ablations.main(["--seeds", "0", "1", "2", "--steps", "10", "--out", str(tmp_path)])
    runs = {os.path.basename(a[a.index("--out") + 1]): a for a in calls}
    steps = lambda name: int(runs[name][runs[name].index("--steps") + 1])
    assert steps("medim__half_steps_seed0") == 5 and steps("w_o_adaln__half_steps_seed2") == 5
    assert steps("medim__bidirectional___adaln_seed0") == 10 and "--no-eval-joint" in runs["w__causal_mask_seed0"]
    paired = open(tmp_path / "ablations.md").read().split("paired by seed")[1]
    line = lambda prefix: next(x for x in paired.splitlines() if x.startswith(f"| {prefix} − "))
    assert line("w/ causal mask").startswith("| w/ causal mask − MeDiM (bidirectional + AdaLN) | 2 | -0.390 ± 0.014 [")
    assert "(0/2 better)" in line("w/ causal mask")                               # seeds 0 and 2 only
    assert line("w/o timestep embedding (half steps)").startswith(
        "| w/o timestep embedding (half steps) − MeDiM (half steps) | 3 | -0.100 ± 0.000")
    assert line("w/ causal mask (report first)").startswith("| w/ causal mask (report first) − MeDiM (report first) |")
    assert line("MeDiM (half steps)").startswith("| MeDiM (half steps) − MeDiM (bidirectional + AdaLN) | 3 | -0.200")
    assert "| w/o AdaLN (additive time) − " in paired                                # no run finished: no numbers
    assert "Missing (not finished, not in the table): w/ causal mask seed 1" in open(tmp_path / "ablations.md").read()


def test_training_steps_in_train_args_are_refused(capsys):
    with pytest.raises(SystemExit):
        ablations.main(["--train-args", "--steps 5", "--out", "/nonexistent", "--table-only"])
    assert "--steps" in capsys.readouterr().err


def test_record_keeps_finished_runs_so_a_fresh_machine_reruns_only_the_unfinished(tmp_path, monkeypatch):
    """--record DIR: finished runs' small files are copied there; on a new machine (OUT gone) they count as finished
    and only the run that had not finished trains; a run copied in by hand joins the table."""
    record = tmp_path / "record"
    argv = ["--variant", "a=--lr 1e-3", "--variant", "b=--lr 3e-3", "--seeds", "0", "1", "--record", str(record)]
    calls = _fake_sweep(tmp_path, monkeypatch, finish=lambda out: not out.endswith("b_seed1"))
    ablations.main([*argv, "--out", str(tmp_path / "machine1")])
    assert sorted(os.listdir(record)) == ["a_seed0", "a_seed1", "b_seed0"]
    assert sorted(os.listdir(record / "a_seed0")) == ["metrics.json"]        # the fake run wrote no config or log
    calls = _fake_sweep(tmp_path, monkeypatch)
    ablations.main([*argv, "--out", str(tmp_path / "machine2"), "--seeds", "0", "1"])
    trained = [os.path.basename(a[a.index("--out") + 1]) for a in calls if "tokenizers" not in a[a.index("--out") + 1]]
    assert trained == ["b_seed1"]
    assert "Missing" not in open(tmp_path / "machine2" / "ablations.md").read()
    assert sorted(os.listdir(record)) == ["a_seed0", "a_seed1", "b_seed0", "b_seed1"]
    os.makedirs(record / "a_seed2")                                           # a run trained elsewhere, copied in
    json.dump(_metrics(0.9, 0.4), open(record / "a_seed2" / "metrics.json", "w"))
    ablations.main([*argv, "--out", str(tmp_path / "machine3"), "--seeds", "2", "--table-only"])
    table = open(tmp_path / "machine3" / "ablations.md").read()
    assert "| a | 1 | 0.900 |" in table and "b seed 2" in table.split("Missing")[1]


def test_a_second_sweep_waits_for_the_tokenizers_another_is_training(tmp_path, monkeypatch):
    tok_dir = str(tmp_path / "tokenizers_seed0")
    trained = []
    monkeypatch.setattr(ablations, "run_train", lambda args, log: trained.append(args))
    monkeypatch.setattr(ablations, "LOCK_POLL_S", 0.05)
    open(tok_dir + ".lock", "w").close()          # another sweep holds the lock ...

    released = threading.Event()

    def other_sweep_finishes():
        os.makedirs(tok_dir)
        open(os.path.join(tok_dir, "vqvae.pt"), "w").close()   # written first; the oracle and cache still to come
        time.sleep(0.2)
        released.set()
        os.remove(tok_dir + ".lock")
    timer = threading.Timer(0.2, other_sweep_finishes)
    timer.start()
    ablations.make_tokenizers(tok_dir, 0, [])     # ... so this one waits for the lock, then finds its tokenizers
    assert released.is_set()                      # it did not go ahead on vqvae.pt alone
    timer.join()
    assert trained == []

    ablations.make_tokenizers(str(tmp_path / "tokenizers_seed1"), 1, [])   # no lock, no tokenizers: trains them
    assert len(trained) == 1 and "--seed" in trained[0]
    assert not os.path.exists(str(tmp_path / "tokenizers_seed1") + ".lock")   # the lock is released
