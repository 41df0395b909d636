#!/usr/bin/env python3
"""Runs third-party GPTQ loaders' own code on the gptq/ directory of `oq quantize`.

`oq quantize ... --method rtn --a-bits 16` writes, next to oq's own checkpoint,
gptq/: the same weights in the GPTQ checkpoint layout (docs/formats.md §6-§7).
This script checks that layout with code that oq did not write:

  * AutoGPTQ (github.com/AutoGPTQ/AutoGPTQ), from a checkout given by --autogptq:
    - auto_gptq/quantization/config.py, BaseQuantizeConfig.from_pretrained on
      gptq/ (what AutoGPTQForCausalLM.from_quantized reads first);
    - auto_gptq/nn_modules/qlinear/qlinear_cuda_old.py and qlinear_cuda.py,
      QuantLinear: load_state_dict(strict=True) of each linear's qweight,
      qzeros, scales and g_idx, then forward() on the CPU (their pure-torch
      path: the CUDA extension is absent); the identity matrix as input gives
      the dequantized weight, a random input the layer's output;
    - QuantLinear.pack of both files, fed oq's dequantized weight, scales and
      zeros: AutoGPTQ's own packer must produce oq's qweight and qzeros words.
  * GPTQModel (github.com/ModelCloud/GPTQModel), from a checkout given by
    --gptqmodel (optional): convert_gptq_v1_to_v2_format_module
    (gptqmodel/utils/model.py, what GPTQModel's loader and transformers'
    GPTQ integration run on a "gptq" checkpoint) and
    PackableQuantLinear.dequantize_weight / _dequantize_from_codes
    (gptqmodel/nn_modules/qlinear/__init__.py, the torch kernels'
    dequantization).

Each is compared with oq's own checkpoint (model.safetensors: u4 codes, F32
scales, I32 zeros; ŵ = s·(q − z)) and, when --model is the original model,
with the quantization of its weights recomputed here in numpy (oq's formulas,
docs/design.md §2, written again independently).

How the third-party code is loaded (nothing in it is edited):
  * AutoGPTQ: the three files above are loaded by path with
    importlib.util.spec_from_file_location, so that the package's __init__.py
    (which imports the whole library: transformers, peft, accelerate ...) does
    not run. Stubbed modules: `transformers` (pytorch_utils.Conv1D, an empty
    class for an isinstance test in pack; utils.hub.PushToHubMixin, an empty
    base class; utils.hub.cached_file, used for remote repositories only) and
    `huggingface_hub` (empty: used for remote repositories only).
  * GPTQModel's current sources need torch >= 2 and a dozen packages at import
    time (its package __init__ imports the whole library), so the functions
    named above are compiled from the file's own text (ast; the function
    bodies byte for byte) and called on a small torch.nn.Module holding the
    buffers a GPTQ linear has. Stubbed: `log` (a no-op logger) and
    `BaseQuantLinear` (that module class, for an isinstance assert).

Not a CI test: CI has neither torch nor these sources. Run it by hand:

  apt-get install python3-torch          # Debian's CPU build (1.13)
  cmake --build build --target oq_tool   # the oq tool, build/tools/oq
  # AutoGPTQ and GPTQModel sources, e.g. git clone (or git archive of a mirror)
  /usr/bin/python3 tools/oq/check_gptq_external.py --oq build/tools/oq \\
      --autogptq ~/src/AutoGPTQ --gptqmodel ~/src/GPTQModel --work /tmp/gptq_check

Without --model it writes a small random BF16 LlamaForCausalLM (byte-level,
vocab 256) and quantizes it per channel and with groups of 32, 64 and 128.
With --model MODEL --calib DATA it quantizes that model instead (any
LlamaForCausalLM oq reads). --quantized DIR checks an existing `oq quantize`
output (its gptq/ subdirectory) without running oq. Exit status 0 when every
check passes.
"""

import argparse
import ast
import importlib.util
import json
import os
import shutil
import struct
import subprocess
import sys
import types

import numpy as np

try:
    import torch
except ImportError:  # pragma: no cover - a message, not a test
    sys.exit("check_gptq_external.py needs torch (Debian: apt-get install python3-torch; run /usr/bin/python3)")

LINEARS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]


# --- safetensors, read and written here (numpy only) -------------------------

_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I32": np.int32, "I64": np.int64,
           "U8": np.uint8, "I8": np.int8, "BF16": np.uint16}


def read_safetensors(path):
    """name -> (dtype string, numpy array); BF16 comes back as float32."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    header.pop("__metadata__", None)
    out = {}
    for name, info in header.items():
        lo, hi = info["data_offsets"]
        raw = np.frombuffer(data, dtype=_DTYPES[info["dtype"]], count=(hi - lo) // np.dtype(_DTYPES[info["dtype"]]).itemsize,
                            offset=8 + n + lo).reshape(info["shape"])
        if info["dtype"] == "BF16":
            raw = (raw.astype(np.uint32) << 16).view(np.float32)
        out[name] = (info["dtype"], raw.copy())
    return out


def write_safetensors(path, tensors):
    """tensors: name -> float32 array, stored as BF16 (round to nearest even)."""
    header, blobs, offset = {}, [], 0
    for name, a in tensors.items():
        bits = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
        bf16 = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
        blob = bf16.tobytes()
        header[name] = {"dtype": "BF16", "shape": list(a.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def make_synthetic_llama(directory, seed=7, hidden=128, intermediate=384, layers=2, heads=4, kv_heads=2, vocab=256,
                         positive_row=False):
    """A small random byte-level LlamaForCausalLM in BF16 (tied embeddings). positive_row: row 0 of
    layer 0's o_proj has no negative weight, so its zero point is 0 and oq writes "gptq_v2"."""
    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(seed)
    g = lambda r, c, sd: (sd * rng.standard_normal((r, c))).astype(np.float32)  # noqa: E731
    head_dim = hidden // heads
    t = {"model.embed_tokens.weight": g(vocab, hidden, 1.0)}
    for layer in range(layers):
        p = f"model.layers.{layer}."
        t[p + "input_layernorm.weight"] = (1 + 0.05 * rng.standard_normal(hidden)).astype(np.float32)
        t[p + "self_attn.q_proj.weight"] = g(heads * head_dim, hidden, 0.5 / hidden ** 0.5)
        t[p + "self_attn.k_proj.weight"] = g(kv_heads * head_dim, hidden, 0.5 / hidden ** 0.5)
        t[p + "self_attn.v_proj.weight"] = g(kv_heads * head_dim, hidden, 1.0 / hidden ** 0.5)
        t[p + "self_attn.o_proj.weight"] = g(hidden, heads * head_dim, 0.5 / hidden ** 0.5)
        if positive_row and layer == 0:
            t[p + "self_attn.o_proj.weight"][0] = np.abs(t[p + "self_attn.o_proj.weight"][0])
        t[p + "post_attention_layernorm.weight"] = (1 + 0.05 * rng.standard_normal(hidden)).astype(np.float32)
        t[p + "mlp.gate_proj.weight"] = g(intermediate, hidden, 1.0 / hidden ** 0.5)
        t[p + "mlp.up_proj.weight"] = g(intermediate, hidden, 1.0 / hidden ** 0.5)
        # One column 20x the others: its groups' ranges (and zero points) differ.
        down = g(hidden, intermediate, 0.5 / intermediate ** 0.5)
        down[:, 3] *= 20
        t[p + "mlp.down_proj.weight"] = down
    t["model.norm.weight"] = np.ones(hidden, dtype=np.float32)
    write_safetensors(os.path.join(directory, "model.safetensors"), t)
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": vocab,
              "hidden_size": hidden, "intermediate_size": intermediate, "num_hidden_layers": layers,
              "num_attention_heads": heads, "num_key_value_heads": kv_heads, "max_position_embeddings": 128,
              "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "hidden_act": "silu", "tie_word_embeddings": True,
              "torch_dtype": "bfloat16"}
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    words = ["the ", "quick ", "brown ", "fox ", "jumps ", "over ", "a ", "lazy ", "dog. ", "and\n"]
    with open(os.path.join(directory, "calib.txt"), "w") as f:
        f.write("".join(words[i] for i in rng.integers(0, len(words), 2000)))


# --- oq's own checkpoint, and the quantization recomputed here ----------------

def oq_linear(oq_tensors, prefix):
    """Codes (N x K), scales and zeros (N x G) of oq's checkpoint (docs/formats.md §7)."""
    packed = oq_tensors[prefix + ".qweight"][1]  # U8 [N, K/2]: input 2j in bits 3..0, 2j+1 in bits 7..4
    n = packed.shape[0]
    codes = np.empty((n, packed.shape[1] * 2), dtype=np.int64)
    codes[:, 0::2] = packed & 0xF
    codes[:, 1::2] = packed >> 4
    scales = oq_tensors[prefix + ".scales"][1].astype(np.float32)
    zeros = oq_tensors[prefix + ".zeros"][1].astype(np.int64)
    return codes, scales, zeros


def requantize(w, group, clip):
    """oq's W4A16 rtn of a weight (docs/design.md §2), in float32 as oq computes it:
    asymmetric, range widened to hold 0, each bound times the clip ratio,
    s = (c·max − c·min)/15, z = rne(−c·min/s), q = clamp(rne(w/s) + z, 0, 15)."""
    n, k = w.shape
    g = group if group > 0 else k
    blocks = w.reshape(n, k // g, g)
    lo = np.minimum(blocks.min(axis=2), np.float32(0))
    hi = np.maximum(blocks.max(axis=2), np.float32(0))
    c = np.float32(clip)
    cmin, cmax = c * lo, c * hi
    scale = (cmax - cmin) / np.float32(15)
    assert np.all(scale > 0), "a zero weight group: not in this check's synthetic models"
    zero = np.rint(-cmin / scale)  # numpy's rint rounds half to even, as oq
    zero = np.maximum(zero, 0)
    q = np.clip(np.rint(blocks / scale[:, :, None]) + zero[:, :, None], 0, 15)
    return q.reshape(n, k).astype(np.int64), scale.astype(np.float32), zero.astype(np.int64)


def expand(params, k):
    """N x G -> N x K, group of input j = j // (K / G)."""
    return np.repeat(params, k // params.shape[1], axis=1)


# --- AutoGPTQ ---------------------------------------------------------------

def _stub_module(name, **attrs):
    m = types.ModuleType(name)
    m.__dict__.update(attrs)
    return m


def load_autogptq(root):
    """AutoGPTQ's QuantLinear classes and BaseQuantizeConfig, loaded by path (module docstring)."""
    def cached_file(*args, **kwargs):
        raise RuntimeError("stub: remote repositories are not used by this check")

    class Conv1D:  # transformers.pytorch_utils.Conv1D: only an isinstance test in pack()
        pass

    class PushToHubMixin:  # transformers.utils.hub.PushToHubMixin: a base class only
        pass

    hub = _stub_module("transformers.utils.hub", PushToHubMixin=PushToHubMixin, cached_file=cached_file)
    utils = _stub_module("transformers.utils", hub=hub)
    pytorch_utils = _stub_module("transformers.pytorch_utils", Conv1D=Conv1D)
    transformers = _stub_module("transformers", utils=utils, pytorch_utils=pytorch_utils)
    for m in (transformers, utils, hub, pytorch_utils):
        sys.modules.setdefault(m.__name__, m)
    sys.modules.setdefault("huggingface_hub", _stub_module("huggingface_hub"))

    def load(relative, name):
        path = os.path.join(root, relative)
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return {
        "qlinear_cuda_old": load("auto_gptq/nn_modules/qlinear/qlinear_cuda_old.py", "autogptq_qlinear_cuda_old").QuantLinear,
        "qlinear_cuda": load("auto_gptq/nn_modules/qlinear/qlinear_cuda.py", "autogptq_qlinear_cuda").QuantLinear,
        "config": load("auto_gptq/quantization/config.py", "autogptq_quantization_config").BaseQuantizeConfig,
    }


# --- GPTQModel --------------------------------------------------------------

def _functions(path, names, class_name=None):
    """The source text of the named functions of a file (or of one class in it)."""
    with open(path) as f:
        source = f.read()
    tree = ast.parse(source)
    body = tree.body
    if class_name is not None:
        body = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name).body
    found = {n.name: n for n in body if isinstance(n, ast.FunctionDef) and n.name in names}
    missing = set(names) - set(found)
    if missing:
        raise RuntimeError(f"{path}: {sorted(missing)} not found (another GPTQModel version?)")
    return {name: ast.get_source_segment(source, node) for name, node in found.items()}


def load_gptqmodel(root):
    """GPTQModel's v1 -> v2 qzeros conversion and torch dequantization (module docstring)."""
    qlinear = os.path.join(root, "gptqmodel/nn_modules/qlinear/__init__.py")
    model = os.path.join(root, "gptqmodel/utils/model.py")

    class Log:  # the library's logger: messages are not checked here
        def __getattr__(self, name):
            return self

        def __call__(self, *args, **kwargs):
            return None

    class GptqLinear(torch.nn.Module):
        """The attributes GPTQModel's GPTQ linears carry (GPTQQuantLinear, PackableQuantLinear)."""

        def __init__(self, bits, tensors):
            super().__init__()
            self.bits = bits
            self.pack_dtype = torch.int32
            self.pack_dtype_bits = 32
            self.pack_factor = 32 // bits
            self.maxq = 2 ** bits - 1
            self.dequant_dtype = torch.int8  # TorchLinear's for bits < 8
            self.planar = False
            self.enable_wf_unsqueeze = True
            self._qzeros_format = 1
            for name, value in tensors.items():
                self.register_buffer(name, value)

        def qzero_format(self, format=None):  # GPTQQuantLinear.qzero_format, without its checks
            if format is not None:
                self._qzeros_format = format
            return self._qzeros_format

    namespace = {"t": torch, "torch": torch, "nn": torch.nn, "log": Log(), "BaseQuantLinear": GptqLinear}
    module_functions = _functions(qlinear, ["_torch_shift_factor", "_torch_right_shift", "_torch_left_shift"])
    methods = _functions(qlinear, ["_wf_device", "_init_wf_unsqueeze_buffers", "dequantize_weight",
                                   "_dequantize_from_codes"], class_name="PackableQuantLinear")
    convert = _functions(model, ["convert_gptq_v1_to_v2_format_module"])
    for text in module_functions.values():
        exec(compile(text, qlinear, "exec"), namespace)
    for name, text in methods.items():
        exec(compile(text, qlinear, "exec"), namespace)
        setattr(GptqLinear, name, namespace[name])
    # utils/model.py starts with `from __future__ import annotations`: compiled the same way.
    import __future__
    exec(compile(convert["convert_gptq_v1_to_v2_format_module"], model, "exec",
                 flags=__future__.annotations.compiler_flag, dont_inherit=True), namespace)
    return GptqLinear, namespace["convert_gptq_v1_to_v2_format_module"]


# --- the checks ---------------------------------------------------------------

class Report:
    def __init__(self):
        self.failures = 0

    def check(self, ok, what):
        print(("  ok    " if ok else "  FAIL  ") + what)
        if not ok:
            self.failures += 1


def check_directory(quantized, original, autogptq, gptqmodel, report):
    gptq_dir = os.path.join(quantized, "gptq")
    with open(os.path.join(quantized, "config.json")) as f:
        oq_config = json.load(f)
    options = oq_config["oq_quantization"]
    group = int(options["weight_group"])
    with open(os.path.join(gptq_dir, "config.json")) as f:
        qc = json.load(f)["quantization_config"]
    fmt = qc["checkpoint_format"]
    print(f"{quantized}: group {group}, quantization_config {json.dumps(qc, sort_keys=True)}")
    report.check(qc.get("format") == fmt, f"\"format\" = \"checkpoint_format\" = {fmt}")

    # AutoGPTQ's config loading (from_quantized's first step) on gptq/.
    if fmt == "gptq":
        try:
            cfg = autogptq["config"].from_pretrained(gptq_dir)
        except Exception as e:  # noqa: BLE001 - reported, not hidden
            report.check(False, f"AutoGPTQ BaseQuantizeConfig.from_pretrained: {type(e).__name__}: {e}")
            cfg = None
        if cfg is not None:
            parsed = (cfg.bits, cfg.group_size, cfg.desc_act, cfg.sym, cfg.checkpoint_format, cfg.quant_method)
            report.check(parsed == (4, group if group > 0 else -1, False, False, "gptq", "gptq"),
                         f"AutoGPTQ BaseQuantizeConfig.from_pretrained: bits {cfg.bits}, group_size "
                         f"{cfg.group_size}, desc_act {cfg.desc_act}, sym {cfg.sym}, checkpoint_format "
                         f"{cfg.checkpoint_format}")
    else:
        try:
            autogptq["config"].from_pretrained(gptq_dir)
            report.check(False, "AutoGPTQ BaseQuantizeConfig.from_pretrained accepts checkpoint_format gptq_v2, "
                                "which its kernels would misread")
        except ValueError as e:  # its refusal of a format it does not know
            report.check(True, f"AutoGPTQ refuses gptq_v2 with ValueError: {e}")
        except Exception as e:  # noqa: BLE001 - anything else is a failure to read the directory
            report.check(False, f"AutoGPTQ BaseQuantizeConfig.from_pretrained: {type(e).__name__}: {e}")

    oq_tensors = read_safetensors(os.path.join(quantized, "model.safetensors"))
    gptq_tensors = read_safetensors(os.path.join(gptq_dir, "model.safetensors"))
    original_tensors = read_safetensors(os.path.join(original, "model.safetensors")) if original else None
    layers = int(oq_config["num_hidden_layers"])
    rng = np.random.default_rng(0)
    worst = {"autogptq_vs_oq": 0.0, "gptqmodel_vs_oq": 0.0, "vs_oq_f32_scales": 0.0, "forward_rel": 0.0,
             "vs_original_in_steps": 0.0}
    for layer in range(layers):
        for lin in LINEARS:
            prefix = f"model.layers.{layer}.{lin}"
            codes, scales, zeros = oq_linear(oq_tensors, prefix)
            n, k = codes.shape
            scales16 = scales.astype(np.float16).astype(np.float32)  # the checkpoint's binary16 scales
            w_oq = (codes - expand(zeros, k)) * expand(scales, k).astype(np.float64)
            w_oq16 = ((codes - expand(zeros, k)) * expand(scales16, k)).astype(np.float32)  # exact in float32
            state = {name: torch.from_numpy(gptq_tensors[f"{prefix}.{name}"][1].copy())
                     for name in ("qweight", "qzeros", "scales", "g_idx")}
            failed = []  # the sub-checks of this linear that failed

            if original_tensors is not None:
                w = original_tensors[prefix + ".weight"][1]
                q_ref, s_ref, z_ref = requantize(w, group, float(options["weight_clip"]))
                if not (np.array_equal(q_ref, codes) and np.array_equal(z_ref, zeros) and
                        np.array_equal(s_ref.view(np.uint32), scales.view(np.uint32))):
                    failed.append(f"oq's codes/scales/zeros differ from the recomputed quantization "
                                  f"({int((q_ref != codes).sum())} codes, {int((z_ref != zeros).sum())} zeros)")
                # Within the grid's range the rounding error is at most s/2; outside it, the clipped part.
                s_full = expand(scales, k).astype(np.float64)
                inside = (w >= expand(-zeros, k) * s_full - s_full / 2) & (w <= expand(15 - zeros, k) * s_full + s_full / 2)
                err = np.abs(w_oq - w) / s_full
                worst["vs_original_in_steps"] = max(worst["vs_original_in_steps"], float(err[inside].max()))
                if not np.all(err[inside] <= 0.5 + 1e-6):
                    failed.append("oq's weights further than s/2 from the original inside the grid")

            if fmt == "gptq":
                # The v1 convention: zero - 1 stored; oq never stores nibble 15 (docs/formats.md §6).
                q = state["qzeros"].numpy().view(np.uint32)
                if np.any(np.stack([(q >> (4 * j)) & 0xF for j in range(8)]) == 15):
                    failed.append("a qzeros nibble of 15 in a \"gptq\" checkpoint")
                # AutoGPTQ reads "gptq" only (it refuses "gptq_v2", checked above).
                for kind in ("qlinear_cuda_old", "qlinear_cuda"):
                    cls = autogptq[kind]
                    module = cls(4, group if group > 0 else -1, k, n, False, weight_dtype=torch.float32)
                    module.load_state_dict(state, strict=True)  # names, shapes and dtypes as a loader does
                    module.eval()
                    with torch.no_grad():
                        dense = module(torch.eye(k, dtype=torch.float32)).numpy().T  # N x K
                        x = torch.from_numpy(rng.standard_normal((5, k)).astype(np.float32))
                        y = module(x).numpy().astype(np.float64)
                    d16 = float(np.abs(dense - w_oq16).max())
                    worst["autogptq_vs_oq"] = max(worst["autogptq_vs_oq"], d16)
                    if d16 != 0.0:
                        failed.append(f"AutoGPTQ {kind} weight != oq's with binary16 scales (max {d16:.3g})")
                    # Against oq's float32 scales: the binary16 rounding of s, times |q - z|, and no more.
                    bound = np.abs(codes - expand(zeros, k)) * np.abs(expand(scales.astype(np.float64) - scales16, k))
                    worst["vs_oq_f32_scales"] = max(worst["vs_oq_f32_scales"], float(np.abs(dense - w_oq).max()))
                    if not np.all(np.abs(dense - w_oq) <= bound + 1e-12):
                        failed.append(f"AutoGPTQ {kind} weight further from oq's than the scales' rounding")
                    y_ref = x.numpy().astype(np.float64) @ w_oq16.astype(np.float64).T
                    rel = float(np.abs(y - y_ref).max() / np.abs(y_ref).max())
                    worst["forward_rel"] = max(worst["forward_rel"], rel)
                    if not rel < 1e-5:
                        failed.append(f"AutoGPTQ {kind} forward differs from x·Ŵᵀ by {rel:.3g} (relative)")
                    # AutoGPTQ's packer, given oq's dequantized weight and parameters, writes oq's words.
                    # pack() takes scales and zeros as N x G (it transposes them) and rounds the weight
                    # back to codes, (ŵ + z·s) / s: exact here, as ŵ = s·(q - z) is.
                    linear = torch.nn.Linear(k, n, bias=False)
                    with torch.no_grad():
                        linear.weight.copy_(torch.from_numpy(w_oq16))
                    repack = cls(4, group if group > 0 else -1, k, n, False, weight_dtype=torch.float32)
                    repack.pack(linear, torch.from_numpy(scales16), torch.from_numpy(zeros.astype(np.int32)),
                                torch.from_numpy(state["g_idx"].numpy().copy()))
                    if not torch.equal(repack.qweight, state["qweight"]):
                        failed.append(f"AutoGPTQ {kind}.pack: qweight differs from oq's")
                    if not torch.equal(repack.qzeros, state["qzeros"]):
                        failed.append(f"AutoGPTQ {kind}.pack: qzeros differs from oq's")

            if gptqmodel is not None:
                GptqLinear, convert = gptqmodel
                module = GptqLinear(4, {"qweight": state["qweight"].clone(), "qzeros": state["qzeros"].clone(),
                                        "scales": state["scales"].to(torch.float32), "g_idx": state["g_idx"].clone()})
                if fmt == "gptq":  # the v1 -> v2 conversion GPTQModel's torch kernels get on loading
                    convert(module, bits=4, pack_dtype=torch.int32)
                with torch.no_grad():
                    dense_m = module.dequantize_weight().numpy().T  # [K, N] -> N x K
                dm = float(np.abs(dense_m - w_oq16).max())
                worst["gptqmodel_vs_oq"] = max(worst["gptqmodel_vs_oq"], dm)
                if dm != 0.0:
                    failed.append(f"GPTQModel dequantize_weight != oq's with binary16 scales (max {dm:.3g})")
            report.check(not failed, f"{prefix}: {n} x {k}" + "".join(f"\n          {f}" for f in failed))
    print("  worst: " + ", ".join(f"{key} {value:.3g}" for key, value in worst.items()))
    return worst


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--autogptq", required=True, help="an AutoGPTQ checkout (holding auto_gptq/)")
    ap.add_argument("--gptqmodel", help="a GPTQModel checkout (holding gptqmodel/)")
    ap.add_argument("--oq", help="the oq tool (build/tools/oq); needed unless --quantized")
    ap.add_argument("--model", help="a LlamaForCausalLM to quantize (default: a small random one)")
    ap.add_argument("--calib", help="calibration data for --model (text or .npy token ids)")
    ap.add_argument("--quantized", action="append", default=[],
                    help="an existing `oq quantize --method rtn --a-bits 16` output to check (repeatable)")
    ap.add_argument("--groups", default="0,32,64,128", help="group sizes to quantize with (0: per channel)")
    ap.add_argument("--work", default="/tmp/oq_gptq_check", help="directory for the model and outputs")
    args = ap.parse_args()

    autogptq = load_autogptq(args.autogptq)
    gptqmodel = load_gptqmodel(args.gptqmodel) if args.gptqmodel else None
    report = Report()
    targets = [(q, args.model) for q in args.quantized]
    if not targets:
        if not args.oq:
            ap.error("--oq is needed to quantize (or give --quantized)")
        model, calib = args.model, args.calib
        runs = []
        if model is None:
            model = os.path.join(args.work, "model")
            make_synthetic_llama(model)
            calib = os.path.join(model, "calib.txt")
            # A model with a zero point of 0, which oq writes as "gptq_v2".
            model_v2 = os.path.join(args.work, "model_v2")
            make_synthetic_llama(model_v2, positive_row=True)
            runs.append((model_v2, 32, "w4a16_v2_g32"))
        if calib is None:
            ap.error("--calib is needed with --model")
        runs = [(model, int(g), f"w4a16_g{int(g)}") for g in args.groups.split(",")] + runs
        for model, g, name in runs:
            out = os.path.join(args.work, name)
            if os.path.exists(out):
                shutil.rmtree(out)  # oq refuses an existing output directory
            cmd = [args.oq, "quantize", model, "--calib", calib, "--seq-len", "64", "--sequences", "4",
                   "--method", "rtn", "--a-bits", "16", "--group", str(g), "--out", out]
            print("$ " + " ".join(cmd), flush=True)
            subprocess.run(cmd, check=True)
            targets.append((out, model))
    for quantized, original in targets:
        check_directory(quantized, original, autogptq, gptqmodel, report)
    print(f"{report.failures} failure(s)")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
