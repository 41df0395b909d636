#!/usr/bin/env python3
"""Issue 7's real-client check, transformers' half: a randomly initialised
LlamaForCausalLM saved with save_pretrained, and what each of its decoder
layers receives and returns on a fixed token sequence.

    python3 examples/02_llama_layer/transformers_check.py OUT_DIR

needs PyTorch and Hugging Face transformers (the GPU machine has both; this
machine's Debian has neither transformers nor a way to fetch it). It writes

    OUT_DIR/config.json, OUT_DIR/model.safetensors   save_pretrained, float32
    OUT_DIR/layer_{i}_input.npy, layer_{i}_output.npy  float64, [tokens, hidden]
    OUT_DIR/meta.json   versions, the token ids, and how far transformers'
                        own float32 forward is from its float64 one

The inputs and outputs are caught by forward hooks on each LlamaDecoderLayer
while the whole model runs (model(input_ids)), so the mask, the position ids
and the rotary tables are the ones transformers itself builds. The model runs
in float64 on weights that are exactly the saved float32 values; transformers
still computes the RoPE angles in float32 (LlamaRotaryEmbedding), which is the
one difference from a float64 loop that the C++ side cannot remove.

tests/examples/transformers_parity_test.cpp reads the directory (copied to
tests/data/transformers_llama/) and checks oq's layer forward against it.
"""
import json
import os
import sys

import numpy as np
import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM

SEED = 0
TOKENS = 96


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(SEED)
    # Small (1.5 MB of float32 weights, kept in the repository as test data),
    # but with every feature the C++ layer implements: grouped-query attention
    # (4 query heads on 2 KV heads), head_dim 32, a non-default rope_theta and
    # rms_norm_eps, SwiGLU with an FFN that is not a multiple of the hidden
    # size. initializer_range 0.1 makes attention far from uniform.
    config = LlamaConfig(vocab_size=64, hidden_size=128, intermediate_size=344, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         rms_norm_eps=1e-6, rope_theta=50000.0, initializer_range=0.1,
                         tie_word_embeddings=False, attn_implementation="eager")
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        # Norm weights initialise to ones; make them matter.
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
    model.save_pretrained(out)  # safetensors, transformers' default format

    generator = torch.Generator().manual_seed(SEED + 1)
    ids = torch.randint(0, config.vocab_size, (1, TOKENS), generator=generator)
    ids[0, 0] = config.bos_token_id if config.bos_token_id is not None else 1

    def run(dtype):
        m = LlamaForCausalLM.from_pretrained(out, attn_implementation="eager").to(dtype).eval()
        caught = {}

        def hook(index):
            def fn(module, args, kwargs, output):
                x = args[0] if args else kwargs["hidden_states"]
                y = output[0] if isinstance(output, tuple) else output
                caught[index] = (x[0].detach().to(torch.float64).numpy(), y[0].detach().to(torch.float64).numpy())
            return fn

        handles = [layer.register_forward_hook(hook(i), with_kwargs=True) for i, layer in enumerate(m.model.layers)]
        with torch.no_grad():
            m(input_ids=ids)
        for h in handles:
            h.remove()
        if sorted(caught) != list(range(config.num_hidden_layers)):
            raise RuntimeError(f"forward hooks caught layers {sorted(caught)} of {config.num_hidden_layers}")
        return caught

    ref = run(torch.float64)
    f32 = run(torch.float32)
    meta = {"transformers": transformers.__version__, "torch": torch.__version__, "seed": SEED,
            "input_ids": ids[0].tolist(), "layers": config.num_hidden_layers, "float32_vs_float64": {}}
    for i, (x, y) in sorted(ref.items()):
        np.save(os.path.join(out, f"layer_{i}_input.npy"), x)
        np.save(os.path.join(out, f"layer_{i}_output.npy"), y)
        y32 = f32[i][1]
        meta["float32_vs_float64"][str(i)] = float(np.linalg.norm(y32 - y) / np.linalg.norm(y))
    with open(os.path.join(out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print(f"transformers {transformers.__version__}, torch {torch.__version__}: wrote {out}; "
          f"float32 vs float64 layer outputs: {meta['float32_vs_float64']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
