"""train.py --init-from at tiny scale: a random HF Llama directory with a byte-level tokenizer.json (transformers writes
it, as an oracle of the format) stands in for SmolLM2. The run uses the directory's tokenizer, trims its vocabulary to
the ids the reports use, records what it did, and samples, evaluates and resumes from its run directory alone."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM

import medim
import tokenizer as tk
import train
from test_train import cli_error, kill_once_checkpointed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CORPUS = ["FINDINGS: The heart size is normal. The lungs are clear. No pleural effusion or pneumothorax.",
          "IMPRESSION: No acute cardiopulmonary process. Mild cardiomegaly, stable since 2019.",
          "The quick brown fox jumps over the lazy dog; zebras graze in quantum fields."] * 4
UNSEEN = ["zebras graze in quantum fields", "Ünïcödé → café 😀", "<|im_start|>user\nThe lungs are clear.<|im_end|>",
          "  two  spaces,\ttabs\nand 12345", ""]
TINY = ["--preset", "smoke", "--n-train", "256", "--vq-steps", "40", "--codebook-size", "64", "--n-layers", "1",
        "--batch-size", "8", "--n-eval", "8", "--sample-steps", "4", "--oracle-steps", "60", "--threads", "1",
        "--token-temperature", "1", "--lr", "1e-3", "--text-len", "48"]  # 48 report slots: test_train.TINY says why


def run(args, check=True):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
    r = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise AssertionError(f"{args} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


def byte_level_bpe(vocab_size=400) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                        show_progress=False))
    return tok


def write_llm(path, tied=True, seed=0, with_tokenizer=True) -> str:
    """A random 2-block HF Llama (GQA 4/2, weights moved off their init) with a byte-level tokenizer.json."""
    text = byte_level_bpe()
    cfg = LlamaConfig(vocab_size=text.get_vocab_size(), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      tie_word_embeddings=tied)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(path, safe_serialization=True)
    if with_tokenizer:
        text.save(os.path.join(path, "tokenizer.json"))
    return str(path)


@pytest.fixture(scope="module")
def llm(tmp_path_factory):
    return write_llm(tmp_path_factory.mktemp("llm"))


@pytest.fixture(scope="module")
def llm_run(llm, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("run") / "pretrained")
    run(["train.py", *TINY, "--init-from", llm, "--steps", "12", "--ckpt-every", "6", "--out", out])
    return out


def reports(n=200):
    import data
    return [p.report for p in data.load_pairs("synthetic", "train", limit=n)]


def trimmed_tokenizer(text, texts):
    rows = tk.trim_text_rows(text, [e.ids for e in text.encode_batch(texts, add_special_tokens=False)], "test")
    vq = tk.VQVAE(1, f=8, K=16)
    return tk.MedTokenizer(vq, text, tk.Vocab(len(rows), 16, 64, 32, text_rows=rows), 64, 1)

#### The trimmed vocabulary


def test_trimmed_vocabulary_round_trips_strings_with_tokens_it_did_not_keep():
    text = byte_level_bpe()
    tok = trimmed_tokenizer(text, reports())
    rows = tok.vocab.text_rows
    pieces = {text.token_to_id(c) for c in tk.BYTE_CHARS} - {None}
    assert rows == sorted(set(rows)) and pieces <= set(rows) and len(rows) < text.get_vocab_size()
    assert not {text.token_to_id(s) for s in SPECIALS} & set(rows)     # the layout has its own specials
    for s in UNSEEN + reports(5):
        ids = tok.encode_text(s)
        assert all(0 <= i < tok.vocab.n_text for i in ids)
        assert tok.decode_text(ids) == s
    full = text.encode(UNSEEN[0], add_special_tokens=False).ids
    assert any(i not in rows for i in full)                             # the round trip above went through byte pieces
    seen = reports(5)[0]                                               # kept tokens map one to one
    assert [rows[i] for i in tok.encode_text(seen)] == text.encode(seen, add_special_tokens=False).ids


def test_trimmed_rows_are_in_vocab_json_and_the_token_cache_hash(tmp_path):
    text = byte_level_bpe()
    a, b = trimmed_tokenizer(text, reports()), trimmed_tokenizer(text, reports() + ["zebras graze"])
    assert a.vocab.n_text != b.vocab.n_text or a.vocab.text_rows != b.vocab.text_rows
    import data
    pairs = data.load_pairs("synthetic", "train", limit=4)
    b.vocab = tk.Vocab(a.vocab.n_text, 16, 64, 32, text_rows=a.vocab.text_rows[::-1])  # only the rows differ
    assert tk._cache_key(a, pairs) != tk._cache_key(b, pairs)
    a.save(str(tmp_path))
    assert json.load(open(tmp_path / "vocab.json"))["text_rows"] == a.vocab.text_rows
    back = tk.MedTokenizer.load(str(tmp_path))
    assert back.vocab.text_rows == a.vocab.text_rows and back.decode_text(back.encode_text(UNSEEN[1])) == UNSEEN[1]
    assert "text_rows" not in tk.Vocab(10, 16, 64, 32).to_dict()       # an untrimmed vocabulary writes what it wrote


def test_a_tokenizer_that_is_not_byte_level_cannot_be_trimmed():
    text = Tokenizer(models.WordLevel({"a": 0, "b": 1, "[UNK]": 2}, unk_token="[UNK]"))
    with pytest.raises(ValueError, match="no-trim-vocab"):
        tk.trim_text_rows(text, [[0, 1]], "words.json")


@pytest.mark.parametrize("tied", [True, False])
def test_trimmed_model_starts_as_the_llm_at_the_kept_columns(tmp_path, tied):
    """Embedding row i (and lm_head row i, untied) is the LLM's row text_rows[i], bit for bit, and before training the
    trimmed model's logits at the text ids are the whole-vocabulary model's logits at the kept columns."""
    path = write_llm(tmp_path, tied=tied)
    text = tk.load_text_tokenizer(path)
    tok = trimmed_tokenizer(text, reports())
    rows, n = tok.vocab.text_rows, tok.vocab.n_text
    full = medim.from_pretrained(path, seq_len=64).eval()
    trim = medim.from_pretrained(path, seq_len=64, text_rows=rows, new_vocab_size=n + 20).eval()
    assert torch.equal(trim.model.embed_tokens.weight[:n], full.model.embed_tokens.weight[rows])
    if not tied:
        assert torch.equal(trim.lm_head.weight[:n], full.lm_head.weight[rows])
    s = "FINDINGS: zebras graze. The heart size is normal."
    x_trim = torch.tensor([tok.encode_text(s)])                                   # (1, T) our text ids
    x_full = torch.tensor([[rows[i] for i in x_trim[0]]])                         # the same tokens as LLM ids
    t = torch.full((1,), 0.5)
    with torch.no_grad():
        a, b = trim(x_trim, t)[..., :n], full(x_full, t)[..., rows]
    assert (a - b).abs().max() <= 1e-5


def test_random_init_has_the_architecture_and_fresh_weights(llm):
    """--random-init: the same config as the LLM's (first N blocks), MeDiM's own fresh init, no LLM weight in it."""
    vocab = type("V", (), dict(size=300, seq_len=40, mask_id=100, image_offset=101, text_rows=None))()
    log = lambda msg: None
    parse = lambda *flags: train.parse_args(["--init-from", llm, "--n-layers", "1", *flags])[0]
    torch.manual_seed(0)
    pre = train.build_model(parse(), vocab, log, text_rows=list(range(90)))
    torch.manual_seed(0)
    rnd = train.build_model(parse("--random-init"), vocab, log, text_rows=list(range(90)))
    torch.manual_seed(0)
    fresh = medim.MeDiM(rnd.cfg)
    assert rnd.cfg == pre.cfg and rnd.cfg.d_model == 32 and rnd.cfg.n_layers == 1 and rnd.cfg.n_kv_heads == 2
    ours, theirs, init = pre.state_dict(), rnd.state_dict(), fresh.state_dict()
    assert ours.keys() == theirs.keys() and all(ours[k].shape == theirs[k].shape for k in ours)
    assert all(torch.equal(theirs[k], init[k]) for k in init)
    assert not torch.equal(ours["model.layers.0.mlp.up_proj.weight"], theirs["model.layers.0.mlp.up_proj.weight"])

#### The run directory


def test_run_uses_the_llm_tokenizer_trimmed_and_records_what_it_did(llm, llm_run):
    config = json.load(open(os.path.join(llm_run, "config.json")))
    ck = torch.load(os.path.join(llm_run, "ckpt.pt"), weights_only=True)
    vocab = json.load(open(os.path.join(llm_run, "vocab.json")))
    record = config["pretrained"]
    assert record == ck["pretrained"]
    assert record["init_from"] == llm and record["dir"] == os.path.abspath(llm) and not record["random_init"]
    assert record["layers_kept"] == 1 and record["layers_in_llm"] == 2 and record["trimmed"]
    assert record["text_tokenizer"] == os.path.join(os.path.abspath(llm), "tokenizer.json")
    assert config["train"]["init_from"] == llm and config["train"]["text_tokenizer"] == "auto"
    assert vocab["n_text"] == record["text_ids"] == len(vocab["text_rows"]) < record["text_ids_in_tokenizer"]
    run_text = tk.load_text_tokenizer(os.path.join(llm_run, "tokenizer.json"))
    assert run_text.to_str() == tk.load_text_tokenizer(llm).to_str()
    assert ck["model_config"]["vocab_size"] == json.load(open(os.path.join(llm_run, "vocab.json")))["n_text"] + 4 + 2 + 1 + 64
    assert os.path.exists(os.path.join(llm_run, "metrics.json"))


@pytest.mark.parametrize("task", ["t2i", "i2t", "joint"])
def test_sample_works_from_the_run_directory_alone(llm_run, tmp_path, task):
    extra = {"t2i": ["--report", "FINDINGS: zebras graze. The heart is enlarged."], "joint": ["--prompt", "FINDINGS:"]}
    if task == "i2t":
        from PIL import Image
        from data.synthetic import SyntheticDataset
        Image.fromarray(SyntheticDataset("cxr", "test", image_size=64)[0].image).save(tmp_path / "xray.png")
        extra["i2t"] = ["--image", str(tmp_path / "xray.png")]
    out = str(tmp_path / task)
    run(["sample.py", "--ckpt", llm_run, "--task", task, "--n", "2", "--sample-steps", "2", "--out", out, *extra[task]])
    assert {"grid.png", "image_0.png", "text_0.txt"} <= set(os.listdir(out))


def test_eval_works_from_the_run_directory(llm_run, tmp_path):
    out = str(tmp_path / "m.json")
    run(["eval.py", "--run", llm_run, "--n-eval", "4", "--set", "sample_steps=2", "--out", out])
    m = json.load(open(out))
    assert 0 <= m["i2t"]["label_f1_macro"] <= 1 and "fd_oracle" in m["t2i"]


def copy_tokenizers(llm_run, run_dir):
    """The run's tokenizers and token cache, so a test's run trains only the diffusion model."""
    os.makedirs(run_dir)
    for f in ("vqvae.pt", "tokenizer.json", "vocab.json", "cache"):
        (shutil.copytree if f == "cache" else shutil.copy)(os.path.join(llm_run, f), os.path.join(run_dir, f))


def test_killed_run_resumes_from_its_directory_alone_bit_identical(llm, llm_run, tmp_path):
    """SIGKILL mid-run, then `train.py --out DIR --resume` with no other flag: the settings, the LLM and the trimmed
    tokenizer come back from the run directory, and the final weights equal an uninterrupted run's."""
    args = [*TINY, "--init-from", llm, "--steps", "45", "--ckpt-every", "3", "--skip-eval"]
    straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
    for d in (straight, killed):
        copy_tokenizers(llm_run, d)
    run(["train.py", *args, "--out", straight])
    step_at_kill = kill_once_checkpointed(["train.py", *args, "--out", killed], os.path.join(killed, "ckpt.pt"), 6)
    assert step_at_kill < 45, "the run finished before it could be killed"
    r = run(["train.py", "--out", killed, "--resume"])
    assert "the architecture of" in r.stdout + r.stderr  # the checkpoint brings the weights: the LLM's are not read
    a, b = (torch.load(os.path.join(d, "ckpt.pt"), weights_only=True) for d in (straight, killed))
    assert a["step"] == b["step"] == 45 and a["pretrained"] == b["pretrained"]
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_resume_when_the_llm_directory_is_gone_is_one_clear_error(llm, llm_run, tmp_path, capsys):
    gone = str(tmp_path / "llm")
    shutil.copytree(llm, gone)                       # a copy of the fixture's LLM, with the same tokenizer.json
    out = str(tmp_path / "run")
    copy_tokenizers(llm_run, out)
    run(["train.py", *TINY, "--init-from", gone, "--steps", "2", "--skip-eval", "--out", out])
    shutil.rmtree(gone)
    _, _, msg = cli_error(train.main, ["--out", out, "--resume", "--steps", "4"], capsys)
    assert f"error: --init-from {gone}" in msg and "resume" in msg and "Traceback" not in msg

#### Bad input and the override


def test_llm_directory_without_tokenizer_json_is_a_clear_error_and_bpe_overrides(tmp_path, capsys):
    llm = write_llm(tmp_path / "llm", with_tokenizer=False)
    out = str(tmp_path / "run")
    _, _, msg = cli_error(train.main, [*TINY, "--init-from", llm, "--steps", "2", "--skip-eval", "--out", out], capsys)
    assert f"{llm} has no tokenizer.json" in msg and "--text-tokenizer" in msg and "Traceback" not in msg
    run(["train.py", *TINY, "--init-from", llm, "--text-tokenizer", "bpe", "--text-vocab", "300", "--steps", "2",
         "--vq-steps", "2", "--skip-eval", "--out", out])  # the VQ-VAE's quality is not what is tested: 2 steps
    record = json.load(open(os.path.join(out, "config.json")))["pretrained"]
    assert record["text_tokenizer"].startswith("bpe") and not record["trimmed"]


@pytest.mark.parametrize("flags,words", [(["--init-from", "no-such-model"], ["error: --init-from no-such-model"]),
                                         (["--random-init"], ["--random-init needs --init-from"]),
                                         (["--text-tokenizer", "llm"], ["needs --init-from"])])
def test_bad_init_flags_are_one_clear_error(tmp_path, flags, words, capsys):
    _, _, msg = cli_error(train.main, [*TINY, *flags, "--steps", "2", "--out", str(tmp_path / "r")], capsys)
    assert all(w in msg for w in words) and "Traceback" not in msg


def test_trim_speed_bench_times_both_vocabularies(llm):
    import trim_speed
    r = trim_speed.main(["--init-from", llm, "--n-layers", "1", "--batch", "2", "--n-reports", "50", "--threads", "1",
                         "--warmup", "0", "--repeats", "1"])
    assert r["vocab"]["full"] > r["vocab"]["trimmed"] and set(r["ms"]) == {"full", "trimmed"} and r["speedup"] > 0


def test_tokenizers_of_another_kind_in_the_run_directory_are_refused(llm_run, tmp_path, capsys):
    """A run asking for our own BPE must not train on a trimmed LLM vocabulary copied into its directory."""
    out = tmp_path / "mixed"
    os.makedirs(out)
    for f in ("vqvae.pt", "tokenizer.json", "vocab.json"):
        shutil.copy(os.path.join(llm_run, f), out / f)
    _, _, msg = cli_error(train.main, [*TINY, "--steps", "1", "--skip-eval", "--out", str(out)], capsys)
    assert "not a BPE of its own" in msg and "Traceback" not in msg


def test_llm_readout_bench_scores_every_depth_attention_and_read_out(llm, llm_run):
    import llm_readout
    table = llm_readout.main(["--run", llm_run, "--layers", "1", "2", "--n", "4", "--threads", "1"])
    assert set(table) == {(n, c, s) for n in (1, 2) for c in (True, False) for s in (False, True)}
    assert all(len(ces) == 3 and all(0 < ce < 50 for ce in ces) for ces in table.values())
    assert table[2, True, False][0] != table[2, True, True][0]  # the two read-outs score different states
