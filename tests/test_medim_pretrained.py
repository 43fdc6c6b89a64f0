"""medim.from_pretrained against the oracle: tiny random HF transformers checkpoints of each family, written to temp dirs
with save_pretrained (safetensors). Our model with causal=True, time_cond='none' must give HF's logits."""
import json
import os
import shutil

import pytest
import torch
from transformers import (GemmaConfig, GemmaForCausalLM, LlamaConfig, LlamaForCausalLM, Qwen2Config,
                          Qwen2ForCausalLM)

import medim

V = 64
SMALL = dict(vocab_size=V, hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
             max_position_embeddings=64)
FAMILIES = {  # each one exercises its own knobs
    "llama": (LlamaForCausalLM, LlamaConfig(**SMALL, num_key_value_heads=2, rope_theta=500.0, rms_norm_eps=1e-5)),  # GQA
    "qwen2": (Qwen2ForCausalLM, Qwen2Config(**SMALL, num_key_value_heads=2, tie_word_embeddings=True)),  # qkv bias, tied
    "gemma": (GemmaForCausalLM, GemmaConfig(**SMALL, num_key_value_heads=4, head_dim=16)),  # (1+w), sqrt(d), GeGLU, hd≠d/H
}


def hf_model(family, seed=0):
    cls, cfg = FAMILIES[family]
    torch.manual_seed(seed)
    model = cls(cfg).eval()
    with torch.no_grad():  # move every weight off its init: Gemma's norms start at 0, biases at 0
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """family -> (HF model, dir with config.json + model.safetensors)."""
    out = {}
    for family in FAMILIES:
        model = hf_model(family)
        path = str(tmp_path_factory.mktemp(family))
        model.save_pretrained(path, safe_serialization=True)
        out[family] = (model, path)
    return out


def tokens(B=2, T=24, seed=0):
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_causal_no_time_model_matches_transformers_logits(checkpoints, family):
    hf, path = checkpoints[family]
    ours = medim.from_pretrained(path, causal=True, time_cond="none", seq_len=64).eval()
    x = tokens()
    with torch.no_grad():
        diff = (ours(x) - hf(x).logits).abs().max().item()
    assert diff <= 1e-4


@pytest.mark.parametrize("family", ["llama", "gemma"])
def test_next_token_readout_reads_each_token_where_the_llm_predicts_it(checkpoints, family):
    """Position i's logits are the LLM's logits at i-1 (its prediction of token i), also when only some are asked."""
    hf, path = checkpoints[family]
    ours = medim.from_pretrained(path, causal=True, time_cond="none", seq_len=64, next_token_readout=True).eval()
    x = tokens()
    with torch.no_grad():
        full, ref = ours(x), hf(x).logits
        picked = ours(x, logits_at=torch.tensor([1, 5, 24 + 3, 24 + 23]))  # flat indices into (B, T)
    assert (full[:, 1:] - ref[:, :-1]).abs().max() <= 1e-4
    assert (full[:, 1:] - ref[:, 1:]).abs().max() > 1e-2  # not the own-position read-out
    assert torch.equal(picked, full.flatten(0, 1)[[1, 5, 27, 47]])


@pytest.mark.parametrize("family", ["llama", "gemma"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_stored_weights_load_exactly(tmp_path, family, dtype):
    hf = hf_model(family, seed=1).to(dtype)
    hf.save_pretrained(tmp_path, safe_serialization=True)
    header, _ = medim.safetensors_header(str(tmp_path / "model.safetensors"))
    assert {e["dtype"] for e in header.values()} == {"BF16" if dtype == torch.bfloat16 else "F16"}
    oracle = type(hf).from_pretrained(tmp_path, dtype=torch.float32).eval()  # the same rounded weights, in fp32
    ours = medim.from_pretrained(str(tmp_path), causal=True, time_cond="none", seq_len=64).eval()
    x = tokens()
    with torch.no_grad():
        assert (ours(x) - oracle(x).logits).abs().max() <= 1e-4


def test_sharded_checkpoint_loads(tmp_path):
    hf = hf_model("llama", seed=2)
    hf.save_pretrained(tmp_path, safe_serialization=True, max_shard_size="20KB")
    shards = [f for f in os.listdir(tmp_path) if f.endswith(".safetensors")]
    assert len(shards) > 2 and (tmp_path / "model.safetensors.index.json").exists()
    ours = medim.from_pretrained(str(tmp_path), causal=True, time_cond="none", seq_len=64).eval()
    x = tokens()
    with torch.no_grad():
        assert (ours(x) - hf(x).logits).abs().max() <= 1e-4


@pytest.mark.parametrize("family", ["llama", "gemma"])
def test_layer_truncation_matches_transformers_with_fewer_layers(checkpoints, family):
    _, path = checkpoints[family]
    cls = FAMILIES[family][0]
    oracle = cls.from_pretrained(path, num_hidden_layers=1).eval()
    ours = medim.from_pretrained(path, n_layers=1, causal=True, time_cond="none", seq_len=64).eval()
    assert len(ours.model.layers) == 1
    x = tokens()
    with torch.no_grad():
        assert (ours(x) - oracle(x).logits).abs().max() <= 1e-4


@pytest.mark.parametrize("family", ["gemma", "llama"])  # tied and untied heads
def test_grown_vocabulary_keeps_old_logits_and_draws_new_rows_from_old_statistics(checkpoints, family):
    hf, path = checkpoints[family]
    extra = 3000
    ours = medim.from_pretrained(path, new_vocab_size=V + extra, causal=True, time_cond="none", seq_len=64,
                                 mask_id=V + 5).eval()
    x = tokens()
    with torch.no_grad():
        logits = ours(x)
        assert logits.shape[-1] == V + extra
        assert (logits[..., :V] - hf(x).logits).abs().max() <= 1e-4
    old = hf.model.embed_tokens.weight.detach()
    new = ours.model.embed_tokens.weight.detach()
    assert torch.equal(new[:V], old)
    se = old.std(0) / extra ** 0.5  # standard error of the new rows' mean
    assert ((new[V:].mean(0) - old.mean(0)).abs() < 5 * se).all()
    assert ((new[V:].std(0) / old.std(0) - 1).abs() < 0.1).all()


@pytest.mark.parametrize("family", list(FAMILIES))
def test_adaln_model_from_pretrained_is_exactly_the_bidirectional_pretrained_network(checkpoints, family):
    hf, path = checkpoints[family]
    plain = medim.from_pretrained(path, time_cond="none", seq_len=64).eval()
    adaln = medim.from_pretrained(path, time_cond="adaln", seq_len=64).eval()
    add = medim.from_pretrained(path, time_cond="add", seq_len=64).eval()
    posed = medim.from_pretrained(path, time_cond="adaln", seq_len=64, abs_pos=True).eval()  # train.py's default
    x = tokens()
    with torch.no_grad():
        ref = plain(x)
        for t in (torch.zeros(2), torch.tensor([0.2, 0.9]), torch.ones(2)):
            assert torch.equal(adaln(x, t), ref)
            assert torch.equal(add(x, t), ref)
            assert torch.equal(posed(x, t), ref)
        assert (ref - hf(x).logits).abs().max() > 1e-3  # bidirectional really is a different function from causal


def test_unknown_architecture_is_a_clear_error(checkpoints, tmp_path):
    shutil.copytree(checkpoints["llama"][1], tmp_path, dirs_exist_ok=True)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg.update(architectures=["MambaForCausalLM"], model_type="mamba")
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"config\.json.*MambaForCausalLM"):
        medim.from_pretrained(str(tmp_path))


def test_mismatched_shapes_name_the_file_and_key(checkpoints, tmp_path):
    shutil.copytree(checkpoints["llama"][1], tmp_path, dirs_exist_ok=True)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["intermediate_size"] = 40
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"model\.safetensors: model\.layers\.0\.mlp\.\w+_proj\.weight has shape"):
        medim.from_pretrained(str(tmp_path))


def test_missing_and_corrupt_files_are_clear_errors(checkpoints, tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        medim.from_pretrained(str(tmp_path))
    shutil.copy(os.path.join(checkpoints["llama"][1], "config.json"), tmp_path)
    with pytest.raises(FileNotFoundError, match="safetensors"):
        medim.from_pretrained(str(tmp_path))
    (tmp_path / "model.safetensors").write_bytes(b"\x00" * 7)
    with pytest.raises(ValueError, match="not a safetensors file"):
        medim.from_pretrained(str(tmp_path))
    with pytest.raises(ValueError, match="n_layers"):
        medim.from_pretrained(checkpoints["llama"][1], n_layers=9)


def test_safetensors_reader_round_trips_a_transformers_file(checkpoints):
    hf, path = checkpoints["qwen2"]
    file = os.path.join(path, "model.safetensors")
    header, start = medim.safetensors_header(file)
    w = medim.read_safetensor(file, header["model.layers.1.self_attn.q_proj.bias"], start)
    assert torch.equal(w, hf.model.layers[1].self_attn.q_proj.bias.detach())
