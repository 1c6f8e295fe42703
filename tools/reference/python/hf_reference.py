#!/usr/bin/env python3
"""Tiny Qwen2 / Qwen3 / Mistral checkpoints with fp32 reference outputs, for PpoSharp's HF loader tests.

This is an independent, compact re-implementation in PyTorch of the forward pass of Hugging Face transformers'
Qwen2ForCausalLM, Qwen3ForCausalLM and MistralForCausalLM, written from a reading of transformers' files
  src/transformers/models/qwen2/{modeling,modular,configuration}_qwen2.py
  src/transformers/models/qwen3/{modeling,modular,configuration}_qwen3.py
  src/transformers/models/mistral/{modeling,modular,configuration}_mistral.py
  src/transformers/models/llama/modeling_llama.py   (which the three inherit from)
  src/transformers/masking_utils.py                 (causal / padding / sliding-window masks)
It is not transformers itself (transformers and safetensors are not installable here), and it shares no code with
PpoSharp. Each function below names the HF class or function whose semantics it follows.

For each model it writes, under tests/PpoSharp.Tests/HfData/models/tiny-<name>/:
  config.json        as transformers 4.5x's save_pretrained writes it for that config class (sorted keys, indent 2)
  model.safetensors  written by hand here (HF tensor names; F32, or BF16 for qwen3)
  expected.json      the format of tiny-llama3/expected.json (see HfData/models/README.md)
The reference is computed in fp32 from the tensors read back from model.safetensors, so what the file holds is
exactly what the figures describe.

Run from the repository root:  python3 tools/reference/python/hf_reference.py [--out DIR]
"""

import os
import sys

# Debian's python3-torch lives in /usr/lib/python3/dist-packages, which another python3 on PATH (pyenv) does not see.
try:
    import torch  # noqa: F401
except ImportError:
    if os.path.exists("/usr/bin/python3") and os.path.realpath(sys.executable) != os.path.realpath("/usr/bin/python3"):
        os.execv("/usr/bin/python3", ["/usr/bin/python3"] + sys.argv)
    raise SystemExit("PyTorch is needed: apt-get install -y python3-torch")

import argparse
import json
import math
import struct

import numpy as np
import torch
import torch.nn.functional as F

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

# ------------------------------------------------------------------------------------------------------------------
# The three tiny models. Shared shape: vocab 512, hidden 32, 2 layers, 4 heads, 2 KV heads (GQA), SwiGLU 64.
# ------------------------------------------------------------------------------------------------------------------
COMMON = dict(vocab_size=512, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
              intermediate_size=64, max_position_embeddings=128, rms_norm_eps=1e-6, rope_theta=10000.0)

MODELS = {
    # Qwen2: biases on q, k, v and none on o (Qwen2Attention); tied head, as Qwen2.5-0.5B/1.5B ship.
    "tiny-qwen2": dict(architecture="Qwen2ForCausalLM", model_type="qwen2", head_dim=8, qkv_bias=True, qk_norm=False,
                       tied=True, dtype="F32", bos_token_id=500, eos_token_id=501, sliding_window=None, seed=2002),
    # Qwen3: per-head RMSNorm of q and k before RoPE (Qwen3Attention.q_norm/k_norm); head_dim 16 != 32 / 4; untied
    # head (Qwen3Config's default, as Qwen3-8B ships); weights stored as bf16.
    "tiny-qwen3": dict(architecture="Qwen3ForCausalLM", model_type="qwen3", head_dim=16, qkv_bias=False, qk_norm=True,
                       tied=False, dtype="BF16", bos_token_id=500, eos_token_id=501, sliding_window=None, seed=3003),
    # Mistral: Llama without biases, untied head, sliding_window 4096 (MistralConfig's default) applied to every
    # layer; all sequences here are far shorter than the window, so it masks nothing.
    "tiny-mistral": dict(architecture="MistralForCausalLM", model_type="mistral", head_dim=8, qkv_bias=False,
                         qk_norm=False, tied=False, dtype="F32", bos_token_id=1, eos_token_id=2, sliding_window=4096,
                         seed=4004),
}

MODELS = {name: {**COMMON, **m} for name, m in MODELS.items()}

PROBE_IDS = [0, 1, 2, 100, 200, 256, 510, 511]
SEQ_LENGTHS = [9, 17, 33]
GREEDY_NEW = 16


# ------------------------------------------------------------------------------------------------------------------
# config.json
# ------------------------------------------------------------------------------------------------------------------
def hf_config(m):
    """The dict that transformers 4.5x's save_pretrained writes (PretrainedConfig.to_json_string, use_diff=True).

    Keys follow Qwen2Config / Qwen3Config / MistralConfig.__init__ in configuration_{qwen2,qwen3,mistral}.py (4.5x):
    - Qwen2Config and Qwen3Config store sliding_window = sliding_window if use_sliding_window else None, so with
      use_sliding_window false the file says "sliding_window": null; they keep max_window_layers and
      rope_scaling (null). Qwen2Config has no attention_bias or head_dim key (its q/k/v biases are unconditional);
      Qwen3Config has both.
    - MistralConfig stores head_dim (hidden_size // num_attention_heads when not given) and sliding_window (default
      4096); it has no rope_scaling, attention_bias, use_sliding_window or max_window_layers.
    """
    c = {k: m[k] for k in COMMON}
    c.update(architectures=[m["architecture"]], model_type=m["model_type"], hidden_act="silu", initializer_range=0.02,
             attention_dropout=0.0, use_cache=True, tie_word_embeddings=m["tied"],
             torch_dtype="bfloat16" if m["dtype"] == "BF16" else "float32",
             bos_token_id=m["bos_token_id"], eos_token_id=m["eos_token_id"], sliding_window=m["sliding_window"])
    if m["model_type"] in ("qwen2", "qwen3"):
        c.update(use_sliding_window=False, max_window_layers=m["num_hidden_layers"], rope_scaling=None)
    if m["model_type"] == "qwen3":
        c.update(attention_bias=False, head_dim=m["head_dim"])
    if m["model_type"] == "mistral":
        c.update(head_dim=m["head_dim"])
    return c


# ------------------------------------------------------------------------------------------------------------------
# Random weights with HF's tensor names (shapes of nn.Linear: (out_features, in_features)).
# ------------------------------------------------------------------------------------------------------------------
def make_weights(m):
    g = torch.Generator().manual_seed(m["seed"])
    H, V, I = m["hidden_size"], m["vocab_size"], m["intermediate_size"]
    nh, nkv, hd = m["num_attention_heads"], m["num_key_value_heads"], m["head_dim"]

    def normal(*shape, std):
        return torch.randn(*shape, generator=g, dtype=torch.float32) * std

    def norm_weight(n):  # RMSNorm gains around 1, not all ones, so a loader that drops them is caught
        return 1.0 + normal(n, std=0.2)

    w = {"model.embed_tokens.weight": normal(V, H, std=0.3)}
    for i in range(m["num_hidden_layers"]):
        a, p = f"model.layers.{i}.self_attn.", f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = norm_weight(H)
        w[a + "q_proj.weight"] = normal(nh * hd, H, std=0.2)
        w[a + "k_proj.weight"] = normal(nkv * hd, H, std=0.2)
        w[a + "v_proj.weight"] = normal(nkv * hd, H, std=0.2)
        if m["qkv_bias"]:
            w[a + "q_proj.bias"] = normal(nh * hd, std=0.3)
            w[a + "k_proj.bias"] = normal(nkv * hd, std=0.3)
            w[a + "v_proj.bias"] = normal(nkv * hd, std=0.3)
        if m["qk_norm"]:
            w[a + "q_norm.weight"] = norm_weight(hd)
            w[a + "k_norm.weight"] = norm_weight(hd)
        w[a + "o_proj.weight"] = normal(H, nh * hd, std=0.2)
        w[p + "post_attention_layernorm.weight"] = norm_weight(H)
        w[p + "mlp.gate_proj.weight"] = normal(I, H, std=0.2)
        w[p + "mlp.up_proj.weight"] = normal(I, H, std=0.2)
        w[p + "mlp.down_proj.weight"] = normal(H, I, std=0.2)
    w["model.norm.weight"] = norm_weight(H)
    if not m["tied"]:
        w["lm_head.weight"] = normal(V, H, std=0.2)
    if m["dtype"] == "BF16":
        w = {k: round_to_bf16(v) for k, v in w.items()}
    return w


# ------------------------------------------------------------------------------------------------------------------
# bf16 and safetensors, by hand
# ------------------------------------------------------------------------------------------------------------------
def round_to_bf16(x):
    """fp32 -> nearest bf16 (ties to even), returned as fp32 holding a bf16 value. Checked against torch's cast."""
    bits = x.contiguous().numpy().view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16  # no NaN or inf among these weights
    out = torch.from_numpy(rounded.astype(np.uint32).view(np.float32).copy())
    assert torch.equal(out, x.to(torch.bfloat16).to(torch.float32)), "bf16 rounding disagrees with torch"
    return out


def tensor_bytes(t, dtype):
    a = t.contiguous().numpy()
    assert a.dtype == np.float32
    if dtype == "F32":
        return a.astype("<f4").tobytes(order="C")
    if dtype == "BF16":
        upper = (a.view(np.uint32) >> 16).astype("<u2")  # the upper 16 bits of an fp32 that holds a bf16 value
        assert np.array_equal(upper.astype(np.uint32) << 16, a.view(np.uint32)), "value is not a bf16"
        return upper.tobytes(order="C")
    raise ValueError(dtype)


def write_safetensors(path, weights, dtype):
    """The safetensors layout: u64 little-endian header length N, N bytes of JSON (padded with spaces to a multiple
    of 8), then the tensors' raw little-endian C-order bytes at the header's data_offsets (relative to the data)."""
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name in sorted(weights):
        data = tensor_bytes(weights[name], dtype)
        header[name] = {"dtype": dtype, "shape": list(weights[name].shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    hb = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hb += b" " * (-len(hb) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for b in blobs:
            f.write(b)


def read_safetensors(path):
    """Reads F32 / BF16 safetensors into fp32 tensors, checking the layout strictly."""
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    assert n % 8 == 0 and 8 + n <= len(raw)
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    assert header.pop("__metadata__") == {"format": "pt"}
    data, out, end = raw[8 + n:], {}, 0
    for name, e in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        b0, b1 = e["data_offsets"]
        assert b0 == end, f"{name}: gap or overlap in data"
        count = math.prod(e["shape"])
        if e["dtype"] == "F32":
            assert b1 - b0 == 4 * count
            a = np.frombuffer(data[b0:b1], dtype="<f4").astype(np.float32)
        elif e["dtype"] == "BF16":
            assert b1 - b0 == 2 * count
            a = (np.frombuffer(data[b0:b1], dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            raise ValueError(e["dtype"])
        out[name] = torch.from_numpy(a.reshape(e["shape"]).copy())
        end = b1
    assert end == len(data), "trailing bytes after the last tensor"
    return out


# ------------------------------------------------------------------------------------------------------------------
# The model (fp32 throughout)
# ------------------------------------------------------------------------------------------------------------------
def rms_norm(x, weight, eps):
    # Qwen2RMSNorm / Qwen3RMSNorm / MistralRMSNorm (= LlamaRMSNorm): in fp32, x * rsqrt(mean(x^2) + eps), then gain.
    x = x.float()
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def rope_cos_sin(position_ids, head_dim, theta):
    # LlamaRotaryEmbedding / Qwen3RotaryEmbedding, "default" rope type (modeling_rope_utils
    # _compute_default_rope_parameters): inv_freq = 1 / theta^(arange(0, d, 2) / d) in fp32; freqs = inv_freq x pos
    # in fp32; emb = cat(freqs, freqs) so the two halves of a head share a frequency (the rotate_half layout).
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    freqs = (inv_freq[None, :, None].expand(position_ids.shape[0], -1, 1) @ position_ids[:, None, :].float())
    emb = torch.cat((freqs.transpose(1, 2),) * 2, dim=-1)  # (batch, seq, head_dim)
    return emb.cos(), emb.sin()


def rotate_half(x):
    # modeling_llama.rotate_half: (x1, x2) -> (-x2, x1) over the two halves of the head dimension.
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x, cos, sin):
    # modeling_llama.apply_rotary_pos_emb with unsqueeze_dim=1: x is (batch, heads, seq, head_dim).
    return x * cos[:, None] + rotate_half(x) * sin[:, None]


def repeat_kv(x, n_rep):
    # modeling_llama.repeat_kv: KV head j serves query heads j*n_rep .. j*n_rep+n_rep-1.
    b, nkv, t, d = x.shape
    return x[:, :, None].expand(b, nkv, n_rep, t, d).reshape(b, nkv * n_rep, t, d)


def additive_mask(attention_mask, sliding_window):
    # masking_utils.create_causal_mask / create_sliding_window_causal_mask, as the eager path sees it: key k is visible
    # to query q iff k <= q, attention_mask[k] == 1, and (with a window) k > q - sliding_window; hidden keys get the
    # dtype's minimum added to their score.
    b, t = attention_mask.shape
    q = torch.arange(t)[:, None]
    k = torch.arange(t)[None, :]
    allowed = (k <= q)[None] & attention_mask.bool()[:, None, :]
    if sliding_window is not None:
        allowed = allowed & (k > q - sliding_window)[None]
    mask = torch.zeros(b, 1, t, t, dtype=torch.float32)
    return mask.masked_fill(~allowed[:, None], torch.finfo(torch.float32).min)


def attention(w, a, x, cos, sin, mask, m):
    # Qwen2Attention / Qwen3Attention / MistralAttention with eager_attention_forward.
    b, t, _ = x.shape
    nh, nkv, hd = m["num_attention_heads"], m["num_key_value_heads"], m["head_dim"]
    q = F.linear(x, w[a + "q_proj.weight"], w.get(a + "q_proj.bias")).view(b, t, nh, hd)
    k = F.linear(x, w[a + "k_proj.weight"], w.get(a + "k_proj.bias")).view(b, t, nkv, hd)
    v = F.linear(x, w[a + "v_proj.weight"], w.get(a + "v_proj.bias")).view(b, t, nkv, hd)
    if m["qk_norm"]:
        # Qwen3Attention: q_norm / k_norm are RMSNorms over head_dim, applied per head before the rotary embedding.
        q = rms_norm(q, w[a + "q_norm.weight"], m["rms_norm_eps"])
        k = rms_norm(k, w[a + "k_norm.weight"], m["rms_norm_eps"])
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (batch, heads, seq, head_dim)
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    k, v = repeat_kv(k, nh // nkv), repeat_kv(v, nh // nkv)
    scores = torch.matmul(q, k.transpose(2, 3)) * (hd ** -0.5) + mask  # scaling = head_dim ** -0.5
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32)
    out = torch.matmul(probs, v).transpose(1, 2).reshape(b, t, nh * hd)
    return F.linear(out, w[a + "o_proj.weight"])  # o_proj never has a bias in these three architectures


def unpadded_defaults(input_ids, attention_mask, position_ids):
    """(B, T) and, where not given, the mask and position ids of unpadded sequences: all ones, and 0..T-1 per row."""
    b, t = input_ids.shape
    if attention_mask is None:
        attention_mask = torch.ones(b, t, dtype=torch.int64)
    if position_ids is None:
        position_ids = torch.arange(t)[None].expand(b, t)
    return b, t, attention_mask, position_ids


def forward(w, m, input_ids, attention_mask=None, position_ids=None):
    """Logits (batch, seq, vocab) in fp32: {Qwen2,Qwen3,Mistral}ForCausalLM.forward -> *Model.forward."""
    b, t, attention_mask, position_ids = unpadded_defaults(input_ids, attention_mask, position_ids)
    eps = m["rms_norm_eps"]
    h = w["model.embed_tokens.weight"][input_ids]
    cos, sin = rope_cos_sin(position_ids, m["head_dim"], m["rope_theta"])
    mask = additive_mask(attention_mask, m["sliding_window"])
    for i in range(m["num_hidden_layers"]):
        p = f"model.layers.{i}."
        # LlamaDecoderLayer (Qwen2/Qwen3/Mistral decoder layers): pre-norm residual blocks.
        h = h + attention(w, p + "self_attn.", rms_norm(h, w[p + "input_layernorm.weight"], eps), cos, sin, mask, m)
        x = rms_norm(h, w[p + "post_attention_layernorm.weight"], eps)
        # LlamaMLP / Qwen2MLP / Qwen3MLP / MistralMLP: down(silu(gate(x)) * up(x)), no biases.
        gate = F.linear(x, w[p + "mlp.gate_proj.weight"])
        h = h + F.linear(F.silu(gate) * F.linear(x, w[p + "mlp.up_proj.weight"]), w[p + "mlp.down_proj.weight"])
    h = rms_norm(h, w["model.norm.weight"], eps)
    # lm_head; with tie_word_embeddings it is the embedding matrix (PreTrainedModel.tie_weights).
    return F.linear(h, w.get("lm_head.weight", w["model.embed_tokens.weight"]))


# ------------------------------------------------------------------------------------------------------------------
# Reference figures and self-checks
# ------------------------------------------------------------------------------------------------------------------
def sequences(seed, vocab_size=COMMON["vocab_size"]):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab_size, (n,), generator=g).tolist() for n in SEQ_LENGTHS]


def positions_of(logits, ids, probe_ids=PROBE_IDS):
    lse = torch.logsumexp(logits, dim=-1)
    logp = torch.log_softmax(logits, dim=-1)
    out = []
    for t in range(len(ids)):
        p = {"argmax": int(torch.argmax(logits[t])), "logsumexp": float(lse[t]),
             "probe_logits": [float(logits[t, i]) for i in probe_ids]}
        if t + 1 < len(ids):
            p["next_token_logprob"] = float(logp[t, ids[t + 1]])
        out.append(p)
    return out


def top2_gap(logits_row):
    top = torch.topk(logits_row, 2).values
    return float(top[0] - top[1])


def check_padded_batch(w, m, seqs, single_logits, forward=forward):
    """Left-padded batch with attention mask and position_ids = cumsum(mask) - 1 (pads get position 1, as
    GenerationMixin does) must reproduce each unpadded sequence's logits."""
    t = max(len(s) for s in seqs)
    ids = torch.zeros(len(seqs), t, dtype=torch.int64)
    mask = torch.zeros(len(seqs), t, dtype=torch.int64)
    for r, s in enumerate(seqs):
        ids[r, t - len(s):] = torch.tensor(s)
        mask[r, t - len(s):] = 1
    pos = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
    batch = forward(w, m, ids, mask, pos)
    worst = 0.0
    for r, s in enumerate(seqs):
        worst = max(worst, float((batch[r, t - len(s):] - single_logits[r]).abs().max()))
    assert worst <= 1e-5, f"padded batch differs from unpadded sequences by {worst}"
    return worst


def check_against_llama3(models_dir):
    """Checks this implementation against figures it did not produce: tiny-llama3/expected.json came from llama2.c's
    model.py (see HfData/models/README.md). With no biases, no q/k norm and no window, the code above is a
    LlamaForCausalLM, so rebuild_expected.py, which runs it on tiny-llama3's config.json and bf16 model.safetensors,
    must reproduce that file."""
    if not os.path.exists(os.path.join(models_dir, "tiny-llama3", "expected.json")):
        print("tiny-llama3 not found: cross-check skipped")
        return
    import rebuild_expected  # here, not at the top: it imports this module
    result, _, _ = rebuild_expected.expected("tiny-llama3", models_dir)
    rebuild_expected.check("tiny-llama3", models_dir, result)


def build(name, m, out_dir):
    folder = os.path.join(out_dir, name)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        f.write(json.dumps(hf_config(m), indent=2, sort_keys=True) + "\n")

    written = make_weights(m)
    st_path = os.path.join(folder, "model.safetensors")
    write_safetensors(st_path, written, m["dtype"])
    w = read_safetensors(st_path)
    assert sorted(w) == sorted(written)
    for k in w:  # bit-exact read-back
        assert w[k].shape == written[k].shape and torch.equal(w[k].view(torch.int32), written[k].view(torch.int32)), k

    with torch.no_grad():
        seqs = sequences(m["seed"] + 1)
        single = [forward(w, m, torch.tensor([s]))[0] for s in seqs]
        pad_err = check_padded_batch(w, m, seqs, single)
        result = {"probe_ids": PROBE_IDS,
                  "sequences": [{"input_ids": s, "positions": positions_of(l, s)} for s, l in zip(seqs, single)]}
        min_gap = min(top2_gap(row) for l in single for row in l)

        # Greedy: re-run the full forward each step (no cache), take the last position's argmax.
        ids = list(seqs[0])
        new_ids, greedy_gap = [], float("inf")
        for _ in range(GREEDY_NEW):
            last = forward(w, m, torch.tensor([ids]))[0, -1]
            greedy_gap = min(greedy_gap, top2_gap(last))
            nxt = int(torch.argmax(last))
            new_ids.append(nxt)
            ids.append(nxt)
        assert m["eos_token_id"] not in new_ids, "greedy continuation hits EOS: pick another seed"
        result["greedy"] = {"prompt_ids": seqs[0], "new_ids": new_ids}
        # Argmaxes whose top two logits are this close would make comparisons flaky across implementations.
        assert min(min_gap, greedy_gap) > 1e-3, f"near-tie argmax (gap {min(min_gap, greedy_gap)}): pick another seed"

    with open(os.path.join(folder, "expected.json"), "w") as f:
        f.write(json.dumps(result))
    sizes = {fn: os.path.getsize(os.path.join(folder, fn)) for fn in ("config.json", "model.safetensors", "expected.json")}
    print(f"{name}: padded-batch max |diff| {pad_err:.2e}, smallest top-2 logit gap {min(min_gap, greedy_gap):.4f}, "
          f"logit std {float(torch.cat(single).std()):.2f}, sizes {sizes}")


def main():
    root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(root, "tests", "PpoSharp.Tests", "HfData", "models"))
    ap.add_argument("--only", choices=sorted(MODELS), action="append")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, numpy {np.__version__}, python {sys.version.split()[0]}")
    check_against_llama3(os.path.join(root, "tests", "PpoSharp.Tests", "HfData", "models"))
    for name in args.only or MODELS:
        build(name, MODELS[name], args.out)


if __name__ == "__main__":
    main()
