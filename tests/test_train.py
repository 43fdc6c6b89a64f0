"""End-to-end behaviour of train.py and sample.py at tiny scale: the pipeline runs, resume is exact, errors are clear."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # tests/, for the real-layout fixture builders
TINY = ["--preset", "smoke", "--n-train", "256", "--vq-steps", "40", "--codebook-size", "64", "--text-vocab", "300",
        "--d-model", "32", "--n-layers", "1", "--n-heads", "2", "--batch-size", "8", "--n-eval", "8",
        "--sample-steps", "4", "--oracle-steps", "60", "--threads", "1", "--token-temperature", "1", "--text-len", "48"]
# --text-len 48: the sampler reveals report slots one per step, so 48 slots instead of the ~256 sized from these reports
# make every run's evaluation and sampling several times cheaper; nothing here depends on whole reports fitting


def cli_error(main, args, capsys) -> tuple:
    """`python script.py ARGS` as script.main(ARGS) in this process, without a second interpreter's start-up: it must
    stop with SystemExit and a non-zero status (a message is status 1); any other exception, the deep traceback a user
    would see, escapes pytest.raises and fails the test. Returns (status, stderr, everything it said)."""
    with pytest.raises(SystemExit) as stop:
        main(args)
    said = capsys.readouterr()
    assert stop.value.code not in (None, 0), stop.value.code
    return stop.value.code, said.err, f"{stop.value.code}\n{said.out}\n{said.err}"


def run(args, check=True, env=None, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT, **(env or {})}
    r = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, **kw)
    if check and r.returncode != 0:
        raise AssertionError(f"{args} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("run") / "tiny")
    run(["train.py", *TINY, "--steps", "30", "--ckpt-every", "10", "--eval-every", "15", "--out", out])
    return out


def test_tiny_run_writes_metrics_grid_and_checkpoint(tiny_run):
    for f in ("config.json", "tokenizer.json", "vqvae.pt", "ckpt.pt", "metrics.json", "samples.png", "log.txt"):
        assert os.path.exists(os.path.join(tiny_run, f)), f
    m = json.load(open(os.path.join(tiny_run, "metrics.json")))
    for key in ("label_f1_macro", "bleu1", "bleu4", "meteor", "rouge_l", "cider"):
        assert 0.0 <= m["i2t"][key] <= 10.0, key
    for key in ("label_acc", "label_f1_macro", "label_kappa", "fd_oracle", "fd_oracle_real_floor"):
        assert key in m["t2i"], key
    assert m["train"]["steps"] == 30 and m["oracle"]["test_acc"] >= 0
    assert {"psnr_db", "codebook_usage"} <= set(m["tokenizer"])
    import eval as ev
    # pairs generated together, judged by the oracle and the labeler: one per test pair, a quarter as many prompted
    for name, n in (("unconditional", 8), ("prompted", 8 // ev.PROMPTED_SHARE)):
        j = m["joint"][name]
        assert j["n"] == n and {"coherence", "coherence_real", "coherence_shuffled", "prevalence"} <= set(j)
        assert -1 <= j["coherence"]["kappa"] <= 1 and 0 < j["distinct_reports"] <= 1
    assert m["joint"]["prompted"]["prompt"].startswith("FINDINGS:")
    table = ev.format_table(m)  # each joint number beside its floor or ceiling
    assert "(as many real test pairs)" in table and "(report → image)" in table and "(shuffled)" in table


@pytest.mark.parametrize("task,extra", [("t2i", ["--report", "FINDINGS: The heart is enlarged. IMPRESSION: Cardiomegaly."]),
                                        ("joint", ["--prompt", "FINDINGS:"]), ("i2t", None)])
def test_sample_every_task(tiny_run, tmp_path, task, extra):
    """sample.py's main in this process (`python sample.py` itself runs in test_train_pretrained.py and
    test_data_folder.py)."""
    import sample
    if task == "i2t":  # an image file written by an earlier sample call stands in for a user's x-ray
        from data.synthetic import SyntheticDataset
        from PIL import Image
        path = str(tmp_path / "xray.png")
        Image.fromarray(SyntheticDataset("cxr", "test", image_size=64)[0].image).save(path)
        extra = ["--image", path]
    out = str(tmp_path / task)
    sample.main(["--ckpt", tiny_run, "--task", task, "--n", "2", "--sample-steps", "4", "--out", out, *extra])
    files = os.listdir(out)
    assert "grid.png" in files and "image_0.png" in files and "text_0.txt" in files


def test_a_checkpoint_without_the_sampler_entry_samples_and_evaluates_with_the_same_settings(tiny_run, tmp_path):
    """Checkpoints written before ck['sampler'] existed kept the sampler settings in train_config under the same
    names (beside fields since removed): they load with those settings, and eval.py's overrides still apply."""
    from sample import load_run
    old = str(tmp_path / "old")
    shutil.copytree(tiny_run, old)
    path = os.path.join(old, "ckpt.pt")
    ck = torch.load(path, weights_only=True)
    sampler = ck.pop("sampler")
    assert sampler["sample_steps"] == 4 and sampler["token_temperature"] == 1.0          # TINY's flags
    ck["train_config"].update(sampler, i2t_suffix=0.0, oracle_steps=0)                  # the old layout
    torch.save(ck, path)
    assert vars(load_run(old)[2]) == vars(load_run(tiny_run)[2]) == sampler
    out = str(tmp_path / "unguided.json")
    import eval as ev  # its main in this process (`python eval.py --run` itself: test_train_pretrained.py)
    ev.main(["--run", old, "--n-eval", "4", "--set", "sample_steps=2", "--i2t-cfg-scale", "0", "--out", out])
    m = json.load(open(out))
    assert m["sampler"] == {**sampler, "sample_steps": 2, "i2t_cfg_scale": 0.0} and m["n_eval"] == 4
    assert os.path.exists(str(tmp_path / "unguided.png"))


def _final_state(run_dir):
    return torch.load(os.path.join(run_dir, "ckpt.pt"), weights_only=True)


def _copy_tokenizers(src, dst):
    os.makedirs(dst, exist_ok=True)
    for f in os.listdir(src):
        if f in ("vqvae.pt", "tokenizer.json", "vocab.json", "config.json", "cache"):
            s, d = os.path.join(src, f), os.path.join(dst, f)
            shutil.copytree(s, d) if os.path.isdir(s) else shutil.copy(s, d)


def kill_once_checkpointed(args, ckpt, min_step, timeout=120) -> int:
    """Start `python ARGS`, SIGKILL it once ckpt holds step >= min_step; returns the checkpoint's step."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
    proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(ckpt) and torch.load(ckpt, weights_only=True)["step"] >= min_step:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return torch.load(ckpt, weights_only=True)["step"]


def test_killed_run_resumes_bit_identical(tiny_run, tmp_path):
    """SIGKILL mid-run, then --resume: the final weights equal those of an uninterrupted run, bit for bit."""
    args = [*TINY, "--steps", "70", "--ckpt-every", "5", "--skip-eval"]  # ~20 ms steps: 60 left when it is killed
    straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
    for d in (straight, killed):
        _copy_tokenizers(tiny_run, d)  # same tokenizers, so only the diffusion training is compared
    run(["train.py", *args, "--out", straight])
    step_at_kill = kill_once_checkpointed(["train.py", *args, "--out", killed], os.path.join(killed, "ckpt.pt"), 10)
    assert step_at_kill < 70, "the run finished before it could be killed; the test proves nothing"
    run(["train.py", *args, "--out", killed, "--resume"])
    a, b = _final_state(straight), _final_state(killed)
    assert a["step"] == b["step"] == 70
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for ea, eb in zip(a["ema"], b["ema"]):
        assert torch.equal(ea, eb)


def test_sigterm_saves_a_checkpoint_of_the_step_reached(tiny_run, tmp_path):
    """A scheduler's SIGTERM loses no steps: with no periodic checkpoint, the run still leaves one to --resume from."""
    out = str(tmp_path / "term")
    _copy_tokenizers(tiny_run, out)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
    proc = subprocess.Popen([sys.executable, "train.py", *TINY, "--steps", "100000", "--ckpt-every", "1000000",
                             "--log-every", "10", "--skip-eval", "--out", out], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log, deadline = os.path.join(out, "log.txt"), time.time() + 120
    while time.time() < deadline and not (os.path.exists(log) and "step 20 |" in open(log).read()):
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 130
    assert torch.load(os.path.join(out, "ckpt.pt"), weights_only=True)["step"] >= 20
    assert "interrupted: checkpoint saved" in open(log).read()


def test_existing_run_needs_resume_flag(tiny_run, capsys):
    import train
    _, _, msg = cli_error(train.main, [*TINY, "--out", tiny_run], capsys)
    assert "--resume" in msg and "Traceback" not in msg


def test_incompatible_checkpoint_is_named(tiny_run, tmp_path, capsys):
    import train
    other = str(tmp_path / "other")
    shutil.copytree(tiny_run, other)
    _, _, msg = cli_error(train.main, [*TINY, "--d-model", "48", "--out", other, "--resume"], capsys)
    assert "ckpt.pt" in msg and "d_model" in msg and "Traceback" not in msg


def test_vq_f_sets_the_image_token_grid_of_the_run(tmp_path):
    out = str(tmp_path / "f16")
    run(["train.py", *TINY, "--vq-f", "16", "--vq-steps", "5", "--steps", "1", "--skip-eval", "--out", out])
    vocab = json.load(open(os.path.join(out, "vocab.json")))
    assert vocab["n_image_tokens"] == (64 // 16) ** 2


def test_bad_flag_value_is_reported(capsys):
    import train
    status, err, _ = cli_error(train.main, ["--time-cond", "sometimes"], capsys)
    assert status == 2 and "--time-cond" in err


def test_missing_data_dir_is_reported(tmp_path, capsys):
    import train
    _, _, msg = cli_error(train.main, [*TINY, "--data", "mimic", "--data-dir", str(tmp_path / "nowhere"),
                                       "--out", str(tmp_path / "r")], capsys)
    assert "nowhere" in msg and "Traceback" not in msg


def test_sample_without_checkpoint_is_reported(tmp_path, capsys):
    import sample
    _, _, msg = cli_error(sample.main, ["--ckpt", str(tmp_path), "--task", "joint"], capsys)
    assert "ckpt.pt" in msg and "Traceback" not in msg


def test_ddp_two_gloo_processes_match_single_process(tiny_run, tmp_path):
    """2 processes × batch 8 on gloo vs 1 process × batch 16: same data, same init; losses agree within noise."""
    common = [*TINY, "--steps", "30", "--skip-eval", "--ckpt-every", "1000", "--log-every", "2"]
    single, ddp = str(tmp_path / "single"), str(tmp_path / "ddp")
    for d in (single, ddp):
        _copy_tokenizers(tiny_run, d)
    run(["train.py", *common, "--batch-size", "16", "--out", single])
    run(["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517", "train.py", *common,
         "--batch-size", "8", "--out", ddp])
    la, lb = _losses(single), _losses(ddp)
    assert len(la) == len(lb) > 0
    assert abs(sum(la) / len(la) - sum(lb) / len(lb)) < 0.25 * sum(la) / len(la)


def _losses(run_dir):
    out = []
    for line in open(os.path.join(run_dir, "log.txt")):
        if line.startswith("step ") and "| loss " in line:
            out.append(float(line.split("| loss ")[1].split()[0]))
    return out


def test_compiled_training_follows_the_eager_run(tiny_run, tmp_path):
    """torch.compile (on by default) fuses kernels but computes the same step: same data, init and noise, same losses;
    and a compiled CPU run is as reproducible as an eager one."""
    common = [*TINY, "--steps", "12", "--skip-eval", "--ckpt-every", "1000", "--log-every", "1", "--threads", "2"]
    eager, fused = str(tmp_path / "eager"), str(tmp_path / "compiled")
    for d in (eager, fused):
        _copy_tokenizers(tiny_run, d)
    run(["train.py", *common, "--out", eager])               # the smoke preset trains eagerly
    run(["train.py", *common, "--compile", "--out", fused])
    assert "training eagerly" not in open(os.path.join(fused, "log.txt")).read()
    la, lb = _losses(eager), _losses(fused)
    assert len(la) == len(lb) == 12
    assert max(abs(a - b) for a, b in zip(la, lb)) < 1e-3 * max(la)
    again = str(tmp_path / "compiled_again")                 # and one seed reproduces a compiled CPU run bit for bit
    _copy_tokenizers(tiny_run, again)
    run(["train.py", *common, "--compile", "--out", again])
    wa, wb = (torch.load(os.path.join(d, "ckpt.pt"), weights_only=True)["model"] for d in (fused, again))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_compile_without_a_working_compiler_trains_eagerly_with_a_note(tmp_path):
    code = "import torch, train; m = torch.nn.Linear(2, 2); print(train.compiled(m, 'cpu', print) is m)"
    env = {"CXX": "/nonexistent/g++", "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}  # no cached kernels either
    r = run(["-c", code], env=env)
    assert "training eagerly" in r.stdout and r.stdout.strip().endswith("True")


def test_learning_curve_tool_plots_the_recorded_evaluations(tiny_run, tmp_path):
    rows = [json.loads(line) for line in open(os.path.join(tiny_run, "curve.jsonl"))]
    assert [r["step"] for r in rows] == [15] and 0 <= rows[0]["i2t_f1"] <= 1 and 0 <= rows[0]["t2i_f1"] <= 1
    png = str(tmp_path / "curve.png")
    r = run(["bench/learning_curve.py", tiny_run, "--out", png])
    assert os.path.exists(png) and "| 15 |" in r.stdout and "| 30 |" in r.stdout  # the periodic and the final evaluation
    os.remove(png)
    run(["bench/learning_curve.py", tiny_run, "--out", png, "--x", "step"])  # by step: runs timed on different machines
    assert os.path.exists(png)


def test_smoke_preset_beats_the_trivial_baselines_both_ways(smoke_preset_run):
    """`python train.py --preset smoke` (about 2 minutes): on a fixed seed its reports and its images both carry more of
    the findings than guessing each finding at its prevalence, and are more accurate than calling everything negative.
    Measured on 2 CPU cores (docs/experiments.md): label F1 0.48-0.53 / 0.43-0.53 on 3 seeds against ~0.2 for guessing.
    The run starts with the session (tests/conftest.py smoke_preset_run), beside the other tests."""
    out = smoke_preset_run.wait()
    m = json.load(open(os.path.join(out, "metrics.json")))
    for task in ("i2t", "t2i"):
        assert m[task]["label_f1_macro"] > m[f"{task}_baselines"]["prior_sampling"]["f1_macro"] + 0.1, task
        assert m[task]["label_acc"] > m[f"{task}_baselines"]["all_negative"]["acc"], task


@pytest.mark.parametrize("layout", ["mimic", "r2gen"])
def test_train_runs_end_to_end_on_a_real_layout_mimic_tree(tmp_path, layout):
    """`python train.py --data mimic --data-dir FIXTURE --steps 5`: real MIMIC-CXR-JPG / R2Gen layouts, warts included
    (trained eagerly: compiling, a minute on a cold kernel cache, is test_compiled_training_follows_the_eager_run's)."""
    from fixtures_real import make_mimic_jpg_tree, make_r2gen
    root = tmp_path / "mimic"
    make_mimic_jpg_tree(root) if layout == "mimic" else make_r2gen(root, "mimic")
    out = str(tmp_path / "run")
    r = run(["train.py", "--data", "mimic", "--data-dir", str(root), "--steps", "5", "--out", out, "--vq-steps", "20",
             "--codebook-size", "16", "--text-vocab", "300", "--d-model", "32", "--n-layers", "1", "--n-heads", "2",
             "--batch-size", "4", "--n-eval", "4", "--sample-steps", "2", "--threads", "1", "--warmup", "2",
             "--text-len", "48", "--no-compile"])
    m = json.load(open(os.path.join(out, "metrics.json")))
    assert m["train"]["steps"] == 5 and 0 <= m["i2t"]["label_f1_macro"] <= 1 and "bleu4" in m["i2t"]
    assert "t2i" not in m  # no oracle for real images: FID needs the Inception weights (eval.py --fid)
    assert os.path.exists(os.path.join(out, "samples.png"))


def test_joint_sampling_never_changes_a_prompt(tiny_run):
    import medim
    from sample import condition_on_prompt, generate, load_run, report_first
    model, tok, sampler, _ = load_run(tiny_run)
    prompt = "FINDINGS: The heart is"
    x = condition_on_prompt(tok, 4, "cxr", prompt)
    given = x != tok.vocab.mask_id
    seg, legal, g = tok.vocab.segment_ids, tok.vocab.legal, torch.Generator().manual_seed(0)
    with_report = report_first(model, x, seg, legal, sampler, g)           # the report filled, the image still masked
    assert torch.equal(with_report[given], x[given])
    assert not (with_report[:, seg == medim.TEXT] == tok.vocab.mask_id).any()
    assert (with_report[:, seg == medim.IMAGE] == tok.vocab.mask_id).all()
    filled = medim.sample(model, with_report, seg, legal, sampler, generator=g)
    assert torch.equal(filled[given], x[given]) and not (filled == tok.vocab.mask_id).any()
    assert all(report.startswith(prompt) for report, _, _ in generate(model, tok, x, sampler, seed=1))
