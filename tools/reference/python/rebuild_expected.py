#!/usr/bin/env python3
"""Rebuilds tiny-gpt2/expected.json and tiny-llama3/expected.json from their committed weights, and checks them.

Those two files were first computed with Karpathy's nanoGPT model.py (GPT-2) and llama2.c model.py (Llama), code that
is not in this repository. This script recomputes them from the committed config.json and model.safetensors with its
own compact PyTorch forward passes:
  GPT2LMHeadModel   written here from a reading of transformers' src/transformers/models/gpt2/modeling_gpt2.py,
                    pytorch_utils.Conv1D and activations.NewGELUActivation;
  LlamaForCausalLM  hf_reference.forward (modeling_llama.py), with no biases, no q/k norm and no window.
The input sequences are redrawn as they were first drawn (torch.Generator seeds 101 and 102, lengths 9, 17, 33, the
scheme of hf_reference.sequences); the probe ids are [0, 1, 2, 100, 1000, V/2, V-2, V-1]; 16 greedy tokens follow the
first sequence (full forward each step, no cache). Everything is computed in fp32 from the weights as stored (the
Llama ones are bf16). The weights themselves are not rebuilt: they came from outside with seeds this project does not
have.

Run from the repository root:
  python3 tools/reference/python/rebuild_expected.py [--out DIR] [--check] [--only NAME]
It writes DIR/<name>/expected.json (DIR defaults to a new temporary folder; it never writes over the committed files
unless DIR is their folder). --check then compares each with the committed file: input, probe and greedy ids and every
argmax identical, every float within TOLERANCE; it prints the largest differences and exits 1 on a mismatch.
"""

import hf_reference as hf  # first: re-runs this script under /usr/bin/python3 when the PATH python has no torch

import argparse
import json
import math
import os
import sys
import tempfile

import torch
import torch.nn.functional as F

TOLERANCE = 2e-5     # absolute, on logits, logsumexp and log-probabilities (fp32; figures around 1-20)
GREEDY_NEW = 16
SEQUENCE_SEEDS = {"tiny-llama3": 101, "tiny-gpt2": 102}


# ------------------------------------------------------------------------------------------------------------------
# GPT2LMHeadModel (modeling_gpt2.py), fp32
# ------------------------------------------------------------------------------------------------------------------
def conv1d(x, weight, bias):
    # pytorch_utils.Conv1D: the weight is stored (in_features, out_features), the transpose of nn.Linear's, and
    # forward is addmm(bias, x.view(-1, in), weight).
    return torch.addmm(bias, x.reshape(-1, x.shape[-1]), weight).view(*x.shape[:-1], weight.shape[-1])


def gelu_new(x):
    # activations.NewGELUActivation ("gelu_new"): the tanh approximation that GPT-2 was trained with.
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


def layer_norm(x, w, prefix, eps):
    return F.layer_norm(x, (x.shape[-1],), w[prefix + "weight"], w[prefix + "bias"], eps)


def gpt2_attention(w, a, x, mask, n_head):
    # GPT2Attention with eager_attention_forward: c_attn is one Conv1D whose output splits into q, k, v (in that
    # order, split_size = n_embd each); heads are contiguous slices of n_embd / n_head; scale_attn_weights divides the
    # scores by sqrt(head_dim); c_proj (Conv1D, with bias) merges the heads.
    b, t, d = x.shape
    hd = d // n_head
    q, k, v = conv1d(x, w[a + "c_attn.weight"], w[a + "c_attn.bias"]).split(d, dim=2)
    q, k, v = (z.view(b, t, n_head, hd).transpose(1, 2) for z in (q, k, v))           # (B, heads, T, hd)
    scores = torch.matmul(q, k.transpose(-1, -2)) / (hd ** 0.5) + mask                # (B, heads, T, T)
    probs = torch.softmax(scores, dim=-1)
    out = torch.matmul(probs, v).transpose(1, 2).reshape(b, t, d)                     # (B, T, n_embd)
    return conv1d(out, w[a + "c_proj.weight"], w[a + "c_proj.bias"])


def gpt2_forward(w, m, input_ids, attention_mask=None, position_ids=None):
    """Logits (B, T, V): GPT2LMHeadModel.forward -> GPT2Model.forward. Keys carry GPT2LMHeadModel's "transformer."."""
    b, t, attention_mask, position_ids = hf.unpadded_defaults(input_ids, attention_mask, position_ids)
    eps, p = m["layer_norm_epsilon"], "transformer."
    # Learned absolute positions: inputs_embeds + position_embeds (wpe).
    h = w[p + "wte.weight"][input_ids] + w[p + "wpe.weight"][position_ids]            # (B, T, n_embd)
    mask = hf.additive_mask(attention_mask, None)                                     # (B, 1, T, T)
    for i in range(m["n_layer"]):
        blk = f"{p}h.{i}."
        # GPT2Block: pre-LayerNorm residual blocks.
        h = h + gpt2_attention(w, blk + "attn.", layer_norm(h, w, blk + "ln_1.", eps), mask, m["n_head"])
        x = layer_norm(h, w, blk + "ln_2.", eps)
        # GPT2MLP: c_proj(act(c_fc(x))), both Conv1D with biases; n_inner null means 4 * n_embd.
        x = gelu_new(conv1d(x, w[blk + "mlp.c_fc.weight"], w[blk + "mlp.c_fc.bias"]))
        h = h + conv1d(x, w[blk + "mlp.c_proj.weight"], w[blk + "mlp.c_proj.bias"])
    h = layer_norm(h, w, p + "ln_f.", eps)
    # lm_head has no bias and is tied to wte (tie_word_embeddings); the file stores no lm_head.weight.
    return F.linear(h, w[p + "wte.weight"])                                           # (B, T, V)


# ------------------------------------------------------------------------------------------------------------------
# The two committed models
# ------------------------------------------------------------------------------------------------------------------
def load_model(folder):
    """(config dict for the forward, forward function, fp32 weights) from a committed folder."""
    c = json.load(open(os.path.join(folder, "config.json")))
    w = hf.read_safetensors(os.path.join(folder, "model.safetensors"))
    if c["architectures"] == ["GPT2LMHeadModel"]:
        assert c["activation_function"] == "gelu_new" and c.get("n_inner") is None and c["tie_word_embeddings"]
        assert "lm_head.weight" not in w and w["transformer.h.0.mlp.c_fc.weight"].shape[1] == 4 * c["n_embd"]
        return c, gpt2_forward, w
    assert c["architectures"] == ["LlamaForCausalLM"] and c.get("rope_scaling") is None
    assert not c.get("attention_bias") and not c.get("mlp_bias") and c.get("hidden_act") == "silu"
    m = dict(c, head_dim=c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"], qkv_bias=False,
             qk_norm=False, sliding_window=None)
    return m, hf.forward, w


def eos_ids(m):
    e = m.get("eos_token_id")
    return set(e if isinstance(e, list) else [e])


def expected(name, models_dir):
    """The expected.json dict for one committed model; the smallest top-two logit gap among its argmaxes; the largest
    difference between the unpadded sequences' logits and the same sequences left-padded into one batch."""
    m, forward, w = load_model(os.path.join(models_dir, name))
    v = m["vocab_size"]
    probe_ids = [0, 1, 2, 100, 1000, v // 2, v - 2, v - 1]
    seqs = hf.sequences(SEQUENCE_SEEDS[name], v)
    with torch.no_grad():
        single = [forward(w, m, torch.tensor([s]))[0] for s in seqs]                  # each (T, V)
        pad_err = hf.check_padded_batch(w, m, seqs, single, forward)
        result = {"probe_ids": probe_ids,
                  "sequences": [{"input_ids": s, "positions": hf.positions_of(lg, s, probe_ids)}
                                for s, lg in zip(seqs, single)]}
        gap = min(hf.top2_gap(row) for lg in single for row in lg)
        ids, new_ids = list(seqs[0]), []
        for _ in range(GREEDY_NEW):
            last = forward(w, m, torch.tensor([ids]))[0, -1]                          # (V,)
            gap = min(gap, hf.top2_gap(last))
            new_ids.append(int(torch.argmax(last)))
            ids.append(new_ids[-1])
    assert not eos_ids(m) & set(new_ids), f"{name}: greedy continuation hits EOS"
    result["greedy"] = {"prompt_ids": seqs[0], "new_ids": new_ids}
    return result, gap, pad_err


# ------------------------------------------------------------------------------------------------------------------
# --check
# ------------------------------------------------------------------------------------------------------------------
def floats(position, key):
    """A position's figures under key as a list; empty where absent (the last position has no next-token log-prob)."""
    v = position.get(key, [])
    return v if isinstance(v, list) else [v]


def compare(name, got, want):
    """Ids must be equal; returns the largest absolute difference of each float field. Raises on any id mismatch."""
    def same(what, a, b):
        if a != b:
            raise SystemExit(f"{name}/expected.json: {what} differs: committed {b}, rebuilt {a}")

    same("probe_ids", got["probe_ids"], want["probe_ids"])
    same("greedy", got["greedy"], want["greedy"])
    same("number of sequences", len(got["sequences"]), len(want["sequences"]))
    worst = {"logsumexp": 0.0, "probe_logits": 0.0, "next_token_logprob": 0.0}
    for i, (gs, ws) in enumerate(zip(got["sequences"], want["sequences"])):
        same(f"sequences[{i}].input_ids", gs["input_ids"], ws["input_ids"])
        for t, (g, e) in enumerate(zip(gs["positions"], ws["positions"])):
            same(f"sequences[{i}].positions[{t}].argmax", g["argmax"], e["argmax"])
            same(f"sequences[{i}].positions[{t}] keys", sorted(g), sorted(e))
            for key in worst:
                diffs = [abs(a - b) for a, b in zip(floats(g, key), floats(e, key), strict=True)]
                worst[key] = max([worst[key]] + diffs)
    return worst


def check(name, models_dir, got):
    want = json.load(open(os.path.join(models_dir, name, "expected.json")))
    worst = compare(name, got, want)
    largest = max(worst.values())
    print(f"{name}: ids, argmaxes and greedy tokens equal; max |diff| "
          + ", ".join(f"{k} {v:.2e}" for k, v in worst.items()) + f" (tolerance {TOLERANCE:.0e})")
    if largest > TOLERANCE:
        raise SystemExit(f"{name}/expected.json: a figure differs by {largest:.2e} > {TOLERANCE:.0e}")
    return largest


def main():
    root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
    models_dir = os.path.join(root, "tests", "PpoSharp.Tests", "HfData", "models")
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", help="folder for <name>/expected.json (default: a new temporary folder)")
    ap.add_argument("--check", action="store_true", help="compare with the committed expected.json; exit 1 if off")
    ap.add_argument("--only", choices=sorted(SEQUENCE_SEEDS), action="append")
    args = ap.parse_args()
    out = args.out or tempfile.mkdtemp(prefix="ppo-sharp-expected-")
    print(f"torch {torch.__version__}, python {sys.version.split()[0]}; writing to {out}")
    for name in args.only or sorted(SEQUENCE_SEEDS):
        result, gap, pad_err = expected(name, models_dir)
        os.makedirs(os.path.join(out, name), exist_ok=True)
        with open(os.path.join(out, name, "expected.json"), "w") as f:
            f.write(json.dumps(result))                      # the committed files' format: one line, no newline
        print(f"{name}: padded-batch max |diff| {pad_err:.2e}, smallest top-2 logit gap {gap:.4f}")
        if args.check:
            check(name, models_dir, result)


if __name__ == "__main__":
    main()
