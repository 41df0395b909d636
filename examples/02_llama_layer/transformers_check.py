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
still computes three things in float32 whatever the model's dtype: the RoPE
angles (LlamaRotaryEmbedding), RMSNorm's normalisation (LlamaRMSNorm casts to
float32 and back) and the attention softmax (eager_attention_forward's
softmax(..., dtype=float32)). Those are the differences from a float64 loop
that the C++ side cannot remove; together they stay near 1e-6 relative.

Self-checks (the config that took effect, dtypes, shapes, the embedding
lookup, the rotary frequencies) go into meta.json's "checks" and are printed;
the script fails only when it cannot write the files, so that a run on a
lent machine always brings its data back and the C++ test judges it.

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
HIDDEN = 128
HEADS = 4
HEAD_DIM = 64
ROPE_THETA = 50000.0
RMS_NORM_EPS = 1e-5


def guarded(make_checks, what):
    """The checks, or what stopped them: internal names may move between
    transformers versions, and the data must still be written."""
    try:
        return make_checks()
    except Exception as error:  # noqa: BLE001 - any failure is reported, not raised
        return {what: f"could not run: {error!r}"}


def config_checks(out):
    """What config.json says of the fields the C++ side reads, as written."""
    with open(os.path.join(out, "config.json")) as f:
        saved = json.load(f)
    # transformers 4.x writes rope_theta at the top level, 5.x under rope_parameters.
    theta = saved.get("rope_theta", (saved.get("rope_parameters") or {}).get("rope_theta"))
    return {"config.json rope_theta": theta == ROPE_THETA,
            "config.json rms_norm_eps": saved.get("rms_norm_eps") == RMS_NORM_EPS,
            "config.json head_dim": saved.get("head_dim", HIDDEN // HEADS) == HEAD_DIM}


def model_checks(m, dtype, ids, caught):
    """Facts about a loaded model and its run that the comparison relies on."""
    checks = {f"parameters are {dtype}": all(p.dtype == dtype for p in m.parameters()),
              "parameters on the CPU": all(p.device.type == "cpu" for p in m.parameters()),
              "q_proj is heads*head_dim x hidden":
                  tuple(m.model.layers[0].self_attn.q_proj.weight.shape) == (HEADS * HEAD_DIM, HIDDEN)}
    for i, (x, y) in caught.items():
        checks[f"layer {i} input and output are tokens x hidden"] = x.shape == y.shape == (TOKENS, HIDDEN)
    embedded = m.model.embed_tokens.weight[ids[0]].detach().to(torch.float64).numpy()
    checks["layer 0 input is the embedding lookup"] = bool(np.array_equal(caught[0][0], embedded))
    # The rotary table's frequencies (the module moved from each attention
    # layer to the model in 4.4x; internal, so a missing one is reported, not fatal).
    rotary = getattr(m.model, "rotary_emb", None) or getattr(m.model.layers[0].self_attn, "rotary_emb", None)
    if rotary is not None and hasattr(rotary, "inv_freq"):
        expected = 1.0 / ROPE_THETA ** (np.arange(0, HEAD_DIM, 2) / HEAD_DIM)
        got = rotary.inv_freq.detach().to(torch.float64).cpu().numpy()
        checks["rotary inv_freq is rope_theta^(-2i/head_dim)"] = bool(
            got.shape == expected.shape and np.allclose(got, expected, rtol=1e-6, atol=0))
    else:
        checks["rotary inv_freq is rope_theta^(-2i/head_dim)"] = "not found"
    return checks


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(SEED)
    # Small (about 2 MB of float32 weights, kept in the repository as test
    # data), but with every feature the C++ layer implements: grouped-query
    # attention (4 query heads on 2 KV heads), a head_dim (64) that is not
    # hidden / heads (32), so q_proj is 256 x 128 and config.json's head_dim
    # is what sets it; a rope_theta (50000) and an rms_norm_eps (1e-5,
    # LLaMA-2's) that are neither LlamaConfig's defaults (10000, 1e-6) nor the
    # C++ side's fallbacks, so a field misread shows; SwiGLU with an FFN that
    # is not a multiple of the hidden size. initializer_range 0.1 makes
    # attention far from uniform.
    config = LlamaConfig(vocab_size=64, hidden_size=HIDDEN, intermediate_size=344, num_hidden_layers=2,
                         num_attention_heads=HEADS, num_key_value_heads=2, head_dim=HEAD_DIM,
                         max_position_embeddings=512, rms_norm_eps=RMS_NORM_EPS, rope_theta=ROPE_THETA,
                         initializer_range=0.1, tie_word_embeddings=False, attn_implementation="eager")
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
        m = LlamaForCausalLM.from_pretrained(out, attn_implementation="eager").to(device="cpu", dtype=dtype).eval()
        caught = {}

        def hook(index):
            def fn(module, args, kwargs, output):
                x = args[0] if args else kwargs["hidden_states"]
                y = output[0] if isinstance(output, tuple) else output
                caught[index] = (x[0].detach().cpu().to(torch.float64).numpy(),
                                 y[0].detach().cpu().to(torch.float64).numpy())
            return fn

        handles = [layer.register_forward_hook(hook(i), with_kwargs=True) for i, layer in enumerate(m.model.layers)]
        with torch.no_grad():
            m(input_ids=ids)
        for h in handles:
            h.remove()
        if sorted(caught) != list(range(config.num_hidden_layers)):
            raise RuntimeError(f"forward hooks caught layers {sorted(caught)} of {config.num_hidden_layers}")
        return caught, guarded(lambda: model_checks(m, dtype, ids, caught), "model checks")

    ref, checks = run(torch.float64)
    f32, _ = run(torch.float32)
    checks.update(guarded(lambda: config_checks(out), "config checks"))
    meta = {"transformers": transformers.__version__, "torch": torch.__version__, "seed": SEED,
            "input_ids": ids[0].tolist(), "layers": config.num_hidden_layers, "float32_vs_float64": {},
            "checks": checks}
    for i, (x, y) in sorted(ref.items()):
        np.save(os.path.join(out, f"layer_{i}_input.npy"), x)
        np.save(os.path.join(out, f"layer_{i}_output.npy"), y)
        y32 = f32[i][1]
        meta["float32_vs_float64"][str(i)] = float(np.linalg.norm(y32 - y) / np.linalg.norm(y))
    with open(os.path.join(out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print(f"transformers {transformers.__version__}, torch {torch.__version__}: wrote {out}; "
          f"float32 vs float64 layer outputs: {meta['float32_vs_float64']}")
    failed = [name for name, ok in checks.items() if ok is not True]
    for name in failed:
        print(f"CHECK FAILED (data kept for the C++ test to judge): {name}: {checks[name]}", file=sys.stderr)
    print(f"self-checks: {len(checks) - len(failed)} of {len(checks)} hold")
    return 0


if __name__ == "__main__":
    sys.exit(main())
