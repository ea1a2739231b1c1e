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
  multi    several VeRA adapters on one model, with real PEFT: replays the cases of
           test/fixtures/peft/multi-adapter.json (made by vera's independent PyTorch re-implementation)
           and compares PEFT's outputs with the fixture's; then PEFT's refusals and deletion rules
           that test/peft-parity-*.test.ts assert. Needs torch, peft, safetensors (no transformers model).

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
from peft import LoraConfig, PeftModel, VeraConfig, get_peft_model

ROOT = Path(__file__).resolve().parents[2]


def causal_lm(path, **kwargs):
    from transformers import AutoModelForCausalLM  # only export/import need transformers

    return AutoModelForCausalLM.from_pretrained(path, **kwargs)


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
        base = causal_lm(args.base, torch_dtype=torch.float32)
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
    base = causal_lm(args.base, torch_dtype=torch.float32)
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
        ours = causal_lm(args.vera_merged, torch_dtype=torch.float32)
        with torch.no_grad():
            err = (ours(TOKENS).logits - unmerged).abs().max().item()
        print(f"  logits: vera's merge vs PEFT's unmerged forward: max |diff| {err:.3g}")
        ok &= err <= 1e-3
    print("OK" if ok else "MISMATCH")
    return 0 if ok else 1


class MLP4(torch.nn.Module):
    """PEFT's test MLP (tests/test_vera.py): lin0 10->20, lin1 and lin2 20->20, lin3 20->2."""

    def __init__(self):
        super().__init__()
        self.lin0 = torch.nn.Linear(10, 20)
        self.lin1 = torch.nn.Linear(20, 20)
        self.lin2 = torch.nn.Linear(20, 20)
        self.lin3 = torch.nn.Linear(20, 2)

    def forward(self, x):
        h = torch.relu(self.lin0(x))
        h = torch.relu(self.lin1(h))
        h = torch.relu(self.lin2(h))
        return torch.log_softmax(self.lin3(h), dim=-1)


def do_multi(args):
    fixtures = Path(args.fixtures)
    st = load_file(str(fixtures / "multi-adapter.safetensors"))
    cases = json.loads((fixtures / "multi-adapter.json").read_text())
    x = st["x"]
    failures = []

    def fresh():
        m = MLP4()
        with torch.no_grad():
            for name, p in m.named_parameters():
                p.copy_(st[name])
        return m.eval()

    def set_lambdas(model, case, a):
        for layer in a["targets"]:
            mod = getattr(model.base_model.model, layer)
            with torch.no_grad():
                mod.vera_lambda_d[a["name"]].copy_(st[f"{case['name']}.{a['name']}.{layer}.lambda_d"])
                mod.vera_lambda_b[a["name"]].copy_(st[f"{case['name']}.{a['name']}.{layer}.lambda_b"])

    def check(what, got, want, tol=2e-5):
        err = (got - want).abs().max().item()
        print(f"{'ok ' if err <= tol else 'BAD'} {what}: max |diff| {err:.3g}")
        if err > tol:
            failures.append(what)

    for case in cases:
        first, *rest = case["adapters"]
        model = get_peft_model(fresh(), VeraConfig(target_modules=first["targets"], r=first["r"], projection_prng_key=case["key"]), adapter_name=first["name"])
        for a in rest:
            model.add_adapter(a["name"], VeraConfig(target_modules=a["targets"], r=a["r"], projection_prng_key=case["key"]))
        for a in case["adapters"]:
            set_lambdas(model, case, a)
        check(f"{case['name']} vera_A", model.base_model.vera_A[first["name"]], st[f"{case['name']}.vera_A"], 0)
        for active in case["actives"]:
            model.base_model.set_adapter(active)
            with torch.no_grad():
                check(f"{case['name']} {'+'.join(active)}", model(x), st[f"{case['name']}.out.{'+'.join(active)}"])
        for a in case["adapters"]:
            alone = get_peft_model(fresh(), VeraConfig(target_modules=a["targets"], r=a["r"], projection_prng_key=case["key"]), adapter_name=a["name"])
            set_lambdas(alone, case, a)
            with torch.no_grad():
                check(f"{case['name']} {a['name']} alone", alone(x), st[f"{case['name']}.alone.{a['name']}"])

    def expect_error(what, fn, needle):
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - any error type is reported
            ok = needle in str(e)
            print(f"{'ok ' if ok else 'BAD'} {what}: {type(e).__name__}: {e}")
            if not ok:
                failures.append(what)
            return
        print(f"BAD {what}: no error")
        failures.append(what)

    m = get_peft_model(fresh(), VeraConfig(target_modules=["lin1"], r=8))
    expect_error("key mismatch", lambda: m.add_adapter("k", VeraConfig(target_modules=["lin1"], r=8, projection_prng_key=1)), "Vera PRNG initialisation key must be the same")
    expect_error("save_projection mixed", lambda: m.add_adapter("s", VeraConfig(target_modules=["lin1"], r=8, save_projection=False)), "must be saved for all adapters or none")
    expect_error("higher rank", lambda: m.add_adapter("h", VeraConfig(target_modules=["lin1"], r=16)), "vera_A has a size of 8 but 16 or greater is required")
    m2 = get_peft_model(MLP4(), VeraConfig(target_modules=["lin3"], r=4))
    expect_error("wider input", lambda: m2.add_adapter("w", VeraConfig(target_modules=["lin0"], r=4)), "vera_B has a size of 2 but 20 or greater is required")
    m3 = get_peft_model(MLP4(), VeraConfig(target_modules=["lin1"], bias="all"))
    expect_error("bias guard", lambda: m3.add_adapter("b", VeraConfig(target_modules=["lin1"], bias="all")), "supports only 1 adapter with bias")
    m4 = get_peft_model(MLP4(), VeraConfig(target_modules=["lin0", "lin1"], r=4), adapter_name="zeta")
    m4.add_adapter("beta", VeraConfig(target_modules=["lin1"], r=4))
    m4.add_adapter("alpha", VeraConfig(target_modules=["lin1"], r=4))
    m4.delete_adapter("zeta")
    got = (m4.base_model.model.lin0.active_adapters, m4.base_model.model.lin1.active_adapters, m4.active_adapters)
    want = (["alpha"], ["alpha"], ["alpha"])
    print(f"{'ok ' if got == want else 'BAD'} next active after deleting the active adapter: {got}")
    if got != want:
        failures.append("delete active")
    m4.merge_adapter(["alpha"])
    expect_error("delete merged", lambda: m4.delete_adapter("alpha"), "Cannot delete adapter(s) ['alpha'] while they are merged")
    print("OK" if not failures else f"MISMATCH: {failures}")
    return 0 if not failures else 1


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
    mu = sub.add_parser("multi")
    mu.add_argument("--fixtures", default=str(ROOT / "test" / "fixtures" / "peft"))
    args = p.parse_args()
    if args.cmd == "multi":
        return do_multi(args)
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
