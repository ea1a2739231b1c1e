#!/usr/bin/env python3
"""Cross-check vera's adapters against the real PEFT library (needs torch, transformers, peft,
safetensors; none of them is available where vera is developed, so this script has not been run
there — see README.md).

  export   PEFT writes adapters (VeRA with and without projections, LoRA) for a GPT-2 folder, with
           non-trivial trained values, plus PEFT's merged checkpoints; vera then merges the same
           adapters (`vera merge`) and `compare` checks the two merges agree.
  import   PEFT loads an adapter saved by vera, merges it, and compares with vera's merge of it;
           also compares PEFT's unmerged forward with the merged model's logits.
  compare  two checkpoints (model.safetensors), tensor by tensor.

Example (GPT-2 small downloaded beforehand to ./gpt2):
  python peft_check.py export --base ./gpt2 --out ./from-peft
  for a in ./from-peft/*/adapter; do node bin/vera.js merge --model ./gpt2 --adapter $a --out $a/../vera-merged --quiet; done
  for d in ./from-peft/*/; do python peft_check.py compare $d/peft-merged/model.safetensors $d/vera-merged/model.safetensors; done

  node bin/vera.js train --model ./gpt2 --data data.jsonl --method vera --r 256 --target-modules c_attn \
       --no-save-projection --dtype f16 --out ./ours
  node bin/vera.js merge --model ./gpt2 --adapter ./ours --out ./ours-merged
  python peft_check.py import --base ./gpt2 --adapter ./ours --vera-merged ./ours-merged
"""
import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from peft import LoraConfig, PeftModel, VeraConfig, get_peft_model

TOKENS = torch.tensor([[464, 3290, 318, 257, 1332, 13, 383, 2068, 7586, 21831]])


def perturb(model, seed):
    """Give the trainable tensors non-trivial values (as if trained)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)


def export(args):
    cases = {
        "vera-noproj-k0-r16": VeraConfig(r=16, target_modules=["c_attn"], projection_prng_key=0, save_projection=False),
        "vera-proj-k42-r64": VeraConfig(r=64, target_modules=["c_attn", "c_proj", "c_fc"], projection_prng_key=42, save_projection=True),
        "vera-noproj-k12345-r256-layers": VeraConfig(r=256, target_modules=["c_fc"], layers_to_transform=[0, 5], projection_prng_key=12345, save_projection=False, d_initial=1.0),
        "vera-all-linear-k1-r8": VeraConfig(r=8, target_modules="all-linear", projection_prng_key=1, save_projection=False),
        "lora-r8": LoraConfig(r=8, lora_alpha=16, target_modules=["c_attn"], fan_in_fan_out=True),
        "lora-rslora-r4": LoraConfig(r=4, lora_alpha=8, use_rslora=True, target_modules=["c_attn", "c_proj"], fan_in_fan_out=True),
    }
    out = Path(args.out)
    for i, (name, cfg) in enumerate(cases.items()):
        base = AutoModelForCausalLM.from_pretrained(args.base, torch_dtype=torch.float32)
        model = get_peft_model(base, cfg)
        perturb(model, i)
        model.save_pretrained(out / name / "adapter")
        if args.f16:
            model.half().save_pretrained(out / name / "adapter-f16")
            model.float()
        with torch.no_grad():
            logits = model(TOKENS).logits
        merged = model.merge_and_unload()
        merged.save_pretrained(out / name / "peft-merged", safe_serialization=True)
        torch.save(logits, out / name / "peft-logits.pt")
        print(f"{name}: wrote adapter and PEFT's merge")


def compare_checkpoints(a, b, tol):
    ta, tb = load_file(a), load_file(b)
    ok = True
    for k in sorted(set(ta) | set(tb)):
        if k not in ta or k not in tb:
            print(f"  only in one file: {k}")
            ok = False
            continue
        err = (ta[k].float() - tb[k].float()).abs().max().item()
        if err > tol:
            print(f"  {k}: max |diff| {err:.3g} > {tol}")
            ok = False
    return ok


def do_import(args):
    base = AutoModelForCausalLM.from_pretrained(args.base, torch_dtype=torch.float32)
    config = json.loads((Path(args.adapter) / "adapter_config.json").read_text())
    print(f"loading a vera-saved {config['peft_type']} adapter (save_projection={config.get('save_projection')}) into PEFT")
    model = PeftModel.from_pretrained(base, args.adapter)
    with torch.no_grad():
        unmerged = model(TOKENS).logits
    merged = model.merge_and_unload()
    tmp = Path(args.adapter).parent / (Path(args.adapter).name + "-peft-merged")
    merged.save_pretrained(tmp, safe_serialization=True)
    ok = True
    if args.vera_merged:
        ok &= compare_checkpoints(str(tmp / "model.safetensors"), str(Path(args.vera_merged) / "model.safetensors"), args.tol)
        ours = AutoModelForCausalLM.from_pretrained(args.vera_merged, torch_dtype=torch.float32)
        with torch.no_grad():
            err = (ours(TOKENS).logits - unmerged).abs().max().item()
        print(f"  logits: vera's merge vs PEFT's unmerged forward: max |diff| {err:.3g}")
        ok &= err <= 1e-3
    print("OK" if ok else "MISMATCH")
    return 0 if ok else 1


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export")
    e.add_argument("--base", required=True)
    e.add_argument("--out", required=True)
    e.add_argument("--f16", action="store_true", help="also save each adapter in float16")
    i = sub.add_parser("import")
    i.add_argument("--base", required=True)
    i.add_argument("--adapter", required=True)
    i.add_argument("--vera-merged")
    i.add_argument("--tol", type=float, default=1e-5)
    c = sub.add_parser("compare")
    c.add_argument("a")
    c.add_argument("b")
    c.add_argument("--tol", type=float, default=1e-5)
    args = p.parse_args()
    if args.cmd == "export":
        export(args)
        return 0
    if args.cmd == "import":
        return do_import(args)
    ok = compare_checkpoints(args.a, args.b, args.tol)
    print("OK" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
