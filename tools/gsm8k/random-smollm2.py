#!/usr/bin/env python3
"""Writes a Hugging Face folder of SmolLM2-135M's shape with random weights (standard library only), to time a GSM8K
GRPO iteration where no pretrained model is at hand. LlamaForCausalLM: 30 layers, hidden 576, 9 heads, 3 key/value
heads, SwiGLU 1536, tied embeddings, RoPE theta 100000. GPT-2's tokenizer (50,257 tokens, from the test data) stands in
for SmolLM2's (49,152), with a ChatML chat template as SmolLM2-Instruct's. Weights: one block of N(0, 0.02) values
repeated (the values do not change the time; a random model never stops early, so every completion is
max_completion_length long: the slowest case).

usage: tools/gsm8k/random-smollm2.py OUT_DIR
"""
import array, gzip, json, os, random, shutil, struct, sys

H, I, L, HEADS, KV, V = 576, 1536, 30, 9, 3, 50257
D = H // HEADS
out = sys.argv[1]
os.makedirs(out, exist_ok=True)
root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "PpoSharp.Tests", "HfData", "tokenizers", "gpt2")

shapes = {"model.embed_tokens.weight": [V, H], "model.norm.weight": [H]}
for i in range(L):
    p = f"model.layers.{i}."
    shapes |= {p + "input_layernorm.weight": [H], p + "post_attention_layernorm.weight": [H],
               p + "self_attn.q_proj.weight": [H, H], p + "self_attn.k_proj.weight": [KV * D, H],
               p + "self_attn.v_proj.weight": [KV * D, H], p + "self_attn.o_proj.weight": [H, H],
               p + "mlp.gate_proj.weight": [I, H], p + "mlp.up_proj.weight": [I, H], p + "mlp.down_proj.weight": [H, I]}

random.seed(0)
block = array.array("f", (random.gauss(0, 0.02) for _ in range(1 << 16))).tobytes()
header, offset = {}, 0
for name, shape in shapes.items():
    n = 4 * shape[0] * (shape[1] if len(shape) > 1 else 1)
    header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + n]}
    offset += n
text = json.dumps(header).encode()
text += b" " * (-len(text) % 8)
with open(os.path.join(out, "model.safetensors"), "wb") as f:
    f.write(struct.pack("<Q", len(text)) + text)
    for name, shape in shapes.items():
        n = header[name]["data_offsets"][1] - header[name]["data_offsets"][0]
        data = array.array("f", [1.0]).tobytes() * (n // 4) if len(shape) == 1 else (block * (n // len(block) + 1))[:n]
        f.write(data)

json.dump({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": V, "hidden_size": H,
           "intermediate_size": I, "num_hidden_layers": L, "num_attention_heads": HEADS, "num_key_value_heads": KV,
           "head_dim": D, "hidden_act": "silu", "max_position_embeddings": 8192, "rms_norm_eps": 1e-5,
           "rope_theta": 100000.0, "tie_word_embeddings": True, "attention_bias": False, "mlp_bias": False,
           "bos_token_id": 50256, "eos_token_id": 50256, "torch_dtype": "float32"}, open(os.path.join(out, "config.json"), "w"), indent=2)
with gzip.open(os.path.join(root, "tokenizer.json.gz")) as src, open(os.path.join(out, "tokenizer.json"), "wb") as dst:
    shutil.copyfileobj(src, dst)
config = json.load(open(os.path.join(root, "tokenizer_config.json")))
config["chat_template"] = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
                           "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
json.dump(config, open(os.path.join(out, "tokenizer_config.json"), "w"), indent=2)
print(f"{out}: {sum(4 * s[0] * (s[1] if len(s) > 1 else 1) for s in shapes.values()) / 4e6:.1f} M parameters")
