#!/usr/bin/env python3
"""PyTorch side of `npm run bench`: the same measurements as bench/*.ts, on PyTorch's CPU kernels.

Run by bench/torch.ts, one process per measurement; each mode prints one JSON object on its last
stdout line.

    torch_bench.py info
    torch_bench.py gemm --sizes 256,512 --warmup 1 --runs 5 --min-seconds 1 --threads 2
    torch_bench.py train --method vera --layers 2 --width 128 --vocab 50257 --positions 1024 \
        --batch 8 --seq 128 --r 256 --warmup 1 --steps 3 --threads 2
    torch_bench.py decode --layers 30 --width 576 --intermediate 1536 --heads 9 --kv-heads 3 \
        --vocab 49152 --seq 32 --new-tokens 16 --batches 1,16 --runs 2 --threads 2

`decode` builds an independent Llama (SmolLM's shape: RMSNorm, rotary embeddings, grouped-query
attention, SwiGLU, tied lm_head; written here from the Llama paper and Hugging Face's
description, random weights) and times eager decoding with a KV cache grown by concatenation, as
transformers' eager generate does: a prompt, then one token per step for every row, logits of
the last position only.

`train` builds an independent GPT-2 (Hugging Face's modeling_gpt2 layout, written here from its
description: Conv1D weights stored (in, out), pre-LayerNorm blocks, tanh GELU, tied lm_head),
freezes it (requires_grad False everywhere), and adapts c_attn, attn.c_proj, c_fc and mlp.c_proj
of every block with VeRA (one shared Kaiming-uniform A/B pair, sliced per layer; λd, λb trained)
or LoRA (A Kaiming-uniform, B zero, scaling α/r). Only the adapter tensors go to
torch.optim.AdamW. Dropout is 0, so it is left out.
"""
import argparse
import json
import math
import resource
import statistics
import sys
import time


def max_rss_kib():
    # Linux reports ru_maxrss in KiB (macOS in bytes; the bench targets Linux).
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def loaded_blas_libraries():
    """Shared objects with BLAS in their name mapped into this process (Linux), after a matmul."""
    try:
        with open('/proc/self/maps') as f:
            paths = {line.split()[-1] for line in f if '/' in line}
    except OSError:
        return []
    names = ('blas', 'mkl', 'lapack', 'blis')
    return sorted(p for p in paths if any(n in p.rsplit('/', 1)[-1].lower() for n in names))


def mode_info(_args):
    import torch
    a = torch.randn(64, 64)
    (a @ a).sum().item()  # loads the BLAS library
    config = torch.__config__.show()
    libs = loaded_blas_libraries()
    blas = 'OpenBLAS' if any('openblas' in p.lower() for p in libs) or 'openblas' in config.lower() else (
        'MKL' if any('mkl' in p.lower() for p in libs) else 'unknown')
    return {
        'version': torch.__version__,
        'config': config,
        'blas': blas,
        'blas_libraries': libs,
        'default_threads': torch.get_num_threads(),
        'python': sys.version.split()[0],
        'executable': sys.executable,
    }


def mode_gemm(args):
    import torch
    torch.set_num_threads(args.threads)
    out = []
    for n in [int(s) for s in args.sizes.split(',')]:
        g = torch.Generator().manual_seed(n)
        a = torch.rand(n, n, generator=g) - 0.5
        b = torch.rand(n, n, generator=g) - 0.5
        c = torch.empty(n, n)
        for _ in range(args.warmup):
            torch.mm(a, b, out=c)
        times = []
        while len(times) < args.runs or sum(times) < args.min_seconds:
            t0 = time.perf_counter()
            torch.mm(a, b, out=c)
            times.append(time.perf_counter() - t0)
        out.append({'n': n, 'seconds': times})
    return {'threads': torch.get_num_threads(), 'results': out}


# ------------------------------------------------------------------ GPT-2 with adapters

def build_model(args):
    import torch
    from torch import nn
    import torch.nn.functional as F

    class Conv1D(nn.Module):
        """GPT-2's linear layer: weight stored (in, out), y = x·W + b."""

        def __init__(self, nx, nf):
            super().__init__()
            self.in_features, self.out_features = nx, nf
            self.weight = nn.Parameter(torch.empty(nx, nf).normal_(0, 0.02))
            self.bias = nn.Parameter(torch.zeros(nf))

        def forward(self, x):
            y = torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight)
            return y.view(*x.shape[:-1], self.out_features)

    class VeraLayer(nn.Module):
        """h = W0·x + λb ⊙ B[:out]·(λd ⊙ A[:, :in]·x); A, B shared and frozen."""

        def __init__(self, base, shared_a, shared_b, r):
            super().__init__()
            self.base = base
            self.A = shared_a[:, :base.in_features]  # views of the shared pair, as PEFT slices them
            self.B = shared_b[:base.out_features, :]
            self.lambda_d = nn.Parameter(torch.full((r,), 0.1))
            self.lambda_b = nn.Parameter(torch.zeros(base.out_features))

        def forward(self, x):
            ax = x @ self.A.t()
            return self.base(x) + self.lambda_b * ((self.lambda_d * ax) @ self.B.t())

    class LoraLayer(nn.Module):
        """h = W0·x + (α/r)·B·A·x with A Kaiming-uniform (a=√5), B zero; both trained."""

        def __init__(self, base, r, alpha):
            super().__init__()
            self.base = base
            self.lora_A = nn.Parameter(torch.empty(r, base.in_features))
            nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
            self.lora_B = nn.Parameter(torch.zeros(base.out_features, r))
            self.scaling = alpha / r

        def forward(self, x):
            return self.base(x) + ((x @ self.lora_A.t()) @ self.lora_B.t()) * self.scaling

    class DoraMixin:
        """PEFT's DoRA formula (lora/dora.py) on top of a layer's ΔW: m = ‖W0‖ per output row at the
        start; y = base(x) + (g − 1)·(base(x) − b) + g·branch(x), g = m / ‖W0 + ΔW‖ (dense ΔW, norm
        detached), as PEFT computes it."""

        def init_magnitude(self):
            self.magnitude = nn.Parameter(self.base.weight.detach().norm(dim=0))  # Conv1D (in, out): row norms of Wᵀ

        def dora(self, x, branch, delta):
            w = self.base.weight.t() + delta  # (out, in)
            norm = w.norm(dim=1).detach()
            g = self.magnitude / norm
            result = self.base(x)
            return result + (g - 1) * (result - self.base.bias) + g * branch

    class DoraLayer(LoraLayer, DoraMixin):
        def __init__(self, base, r, alpha):
            super().__init__(base, r, alpha)
            self.init_magnitude()

        def forward(self, x):
            delta = (self.lora_B @ self.lora_A) * self.scaling
            return self.dora(x, ((x @ self.lora_A.t()) @ self.lora_B.t()) * self.scaling, delta.detach())

    class DvoraLayer(VeraLayer, DoraMixin):
        def __init__(self, base, shared_a, shared_b, r):
            super().__init__(base, shared_a, shared_b, r)
            self.init_magnitude()

        def forward(self, x):
            delta = (self.lambda_b[:, None] * self.B) @ (self.lambda_d[:, None] * self.A)
            branch = self.lambda_b * ((self.lambda_d * (x @ self.A.t())) @ self.B.t())
            return self.dora(x, branch, delta.detach())

    class Attention(nn.Module):
        def __init__(self, d, heads):
            super().__init__()
            self.heads, self.head_dim = heads, d // heads
            self.c_attn = Conv1D(d, 3 * d)
            self.c_proj = Conv1D(d, d)

        def forward(self, x):
            b, t, d = x.shape
            q, k, v = self.c_attn(x).split(d, dim=2)
            q, k, v = (z.view(b, t, self.heads, self.head_dim).transpose(1, 2) for z in (q, k, v))
            scores = (q @ k.transpose(-1, -2)) / math.sqrt(self.head_dim)
            causal = torch.ones(t, t, dtype=torch.bool).tril()
            scores = scores.masked_fill(~causal, torch.finfo(scores.dtype).min)
            y = scores.softmax(dim=-1) @ v
            return self.c_proj(y.transpose(1, 2).reshape(b, t, d))

    class MLP(nn.Module):
        def __init__(self, d):
            super().__init__()
            self.c_fc = Conv1D(d, 4 * d)
            self.c_proj = Conv1D(4 * d, d)

        def forward(self, x):
            return self.c_proj(F.gelu(self.c_fc(x), approximate='tanh'))

    class Block(nn.Module):
        def __init__(self, d, heads):
            super().__init__()
            self.ln_1 = nn.LayerNorm(d, eps=1e-5)
            self.attn = Attention(d, heads)
            self.ln_2 = nn.LayerNorm(d, eps=1e-5)
            self.mlp = MLP(d)

        def forward(self, x):
            x = x + self.attn(self.ln_1(x))
            return x + self.mlp(self.ln_2(x))

    class GPT2LMHead(nn.Module):
        def __init__(self, layers, d, heads, vocab, positions):
            super().__init__()
            self.wte = nn.Embedding(vocab, d)
            self.wpe = nn.Embedding(positions, d)
            nn.init.normal_(self.wte.weight, 0, 0.02)
            nn.init.normal_(self.wpe.weight, 0, 0.02)
            self.h = nn.ModuleList(Block(d, heads) for _ in range(layers))
            self.ln_f = nn.LayerNorm(d, eps=1e-5)
            with torch.no_grad():  # Hugging Face scales the residual projections by 1/√(2·n_layer)
                for block in self.h:
                    for proj in (block.attn.c_proj, block.mlp.c_proj):
                        proj.weight.normal_(0, 0.02 / math.sqrt(2 * layers))

        def forward(self, ids):
            pos = torch.arange(ids.shape[1])
            x = self.wte(ids) + self.wpe(pos)
            for block in self.h:
                x = block(x)
            return self.ln_f(x) @ self.wte.weight.t()  # lm_head tied to wte, frozen

    torch.manual_seed(0)
    heads = args.width // 64 if args.width >= 64 else 1
    model = GPT2LMHead(args.layers, args.width, heads, args.vocab, args.positions)
    model.requires_grad_(False)
    targets = []
    for block in model.h:
        targets += [(block.attn, 'c_attn'), (block.attn, 'c_proj'), (block.mlp, 'c_fc'), (block.mlp, 'c_proj')]
    if args.method in ('vera', 'dvora'):
        max_in = max(getattr(m, n).in_features for m, n in targets)
        max_out = max(getattr(m, n).out_features for m, n in targets)
        g = torch.Generator().manual_seed(0)
        shared_a = torch.empty(args.r, max_in)
        shared_b = torch.empty(max_out, args.r)
        for t in (shared_a, shared_b):  # PEFT's _kaiming_init: bound √(6 / fan_in), fan_in = columns
            bound = math.sqrt(6 / t.shape[1])
            t.uniform_(-bound, bound, generator=g)
        for m, n in targets:
            layer = VeraLayer if args.method == 'vera' else DvoraLayer
            setattr(m, n, layer(getattr(m, n), shared_a, shared_b, args.r))
    else:
        for m, n in targets:
            layer = LoraLayer if args.method == 'lora' else DoraLayer
            setattr(m, n, layer(getattr(m, n), args.r, args.alpha))
    return model


def mode_train(args):
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(args.threads)
    startup_kib = max_rss_kib()
    model = build_model(args)
    trainable = [p for p in model.parameters() if p.requires_grad]
    all_params = sum(p.numel() for p in model.parameters())
    # The shared VeRA pair is a buffer-like tensor outside parameters(); count it as frozen state.
    opt = torch.optim.AdamW(trainable, lr=1e-3, weight_decay=0.01)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, args.vocab, (args.batch, args.seq), generator=g)
    targets = torch.full_like(ids, -100)
    targets[:, :-1] = ids[:, 1:]  # position t predicts token t+1; the last position predicts nothing

    times, losses = [], []
    for step in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        logits = model(ids)
        loss = F.cross_entropy(logits.view(-1, args.vocab), targets.view(-1), ignore_index=-100)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        del logits, loss
        if step >= args.warmup:
            times.append(time.perf_counter() - t0)
    return {
        'threads': torch.get_num_threads(),
        'tokens_per_step': ids.numel(),
        'targets_per_step': int((targets != -100).sum()),
        'trainable_params': sum(p.numel() for p in trainable),
        'all_params': all_params,
        'step_seconds': times,
        'losses': losses,
        'startup_rss_kib': startup_kib,
        'max_rss_kib': max_rss_kib(),
    }


def llama_class():
    """The decode benchmark's Llama (defined here: torch is imported lazily, as in the other modes)."""
    import torch

    class Llama(torch.nn.Module):
        def __init__(self, layers, width, inter, heads, kv_heads, vocab):
            super().__init__()
            nn = torch.nn
            self.heads, self.kv_heads, self.hd = heads, kv_heads, width // heads
            self.embed = nn.Embedding(vocab, width)
            self.blocks = nn.ModuleList()
            for _ in range(layers):
                b = nn.Module()
                b.q = nn.Linear(width, heads * self.hd, bias=False)
                b.k = nn.Linear(width, kv_heads * self.hd, bias=False)
                b.v = nn.Linear(width, kv_heads * self.hd, bias=False)
                b.o = nn.Linear(heads * self.hd, width, bias=False)
                b.gate = nn.Linear(width, inter, bias=False)
                b.up = nn.Linear(width, inter, bias=False)
                b.down = nn.Linear(inter, width, bias=False)
                b.n1 = torch.nn.Parameter(torch.ones(width))
                b.n2 = torch.nn.Parameter(torch.ones(width))
                self.blocks.append(b)
            self.norm = torch.nn.Parameter(torch.ones(width))
            inv = 1.0 / (10000 ** (torch.arange(0, self.hd, 2, dtype=torch.float64) / self.hd))
            self.register_buffer('inv_freq', inv, persistent=False)

        @staticmethod
        def rms(x, w, eps=1e-5):
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w

        def rope(self, x, pos):
            ang = pos[:, None].double() * self.inv_freq[None, :]
            cos = torch.cat([ang.cos(), ang.cos()], -1).float()
            sin = torch.cat([ang.sin(), ang.sin()], -1).float()
            half = x.shape[-1] // 2
            rot = torch.cat([-x[..., half:], x[..., :half]], -1)
            return x * cos + rot * sin

        def forward(self, ids, cache, past):
            bsz, t = ids.shape
            pos = torch.arange(past, past + t)
            h = self.embed(ids)
            for i, b in enumerate(self.blocks):
                x = self.rms(h, b.n1)
                q = self.rope(b.q(x).view(bsz, t, self.heads, self.hd).transpose(1, 2), pos)
                k = self.rope(b.k(x).view(bsz, t, self.kv_heads, self.hd).transpose(1, 2), pos)
                v = b.v(x).view(bsz, t, self.kv_heads, self.hd).transpose(1, 2)
                if i < len(cache):
                    k = torch.cat([cache[i][0], k], 2)
                    v = torch.cat([cache[i][1], v], 2)
                    cache[i] = (k, v)
                else:
                    cache.append((k, v))
                rep = self.heads // self.kv_heads
                kk = k.repeat_interleave(rep, 1)
                vv = v.repeat_interleave(rep, 1)
                scores = (q @ kk.transpose(-1, -2)) / math.sqrt(self.hd)
                if t > 1:  # the prompt: causal over its own positions (past is 0 there)
                    scores = scores + torch.full((t, t), float('-inf')).triu(1)
                a = torch.softmax(scores, -1) @ vv
                h = h + b.o(a.transpose(1, 2).reshape(bsz, t, -1))
                x = self.rms(h, b.n2)
                h = h + b.down(torch.nn.functional.silu(b.gate(x)) * b.up(x))
            last = self.rms(h[:, -1:], self.norm)
            return last @ self.embed.weight.t()

    return Llama


def mode_decode(args):
    import torch

    Llama = llama_class()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = Llama(args.layers, args.width, args.intermediate, args.heads, args.kv_heads, args.vocab).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    out = {'threads': torch.get_num_threads()}
    for bsz in [int(b) for b in args.batches.split(',')]:
        per_token = []
        for run in range(args.runs + 1):
            ids = torch.randint(0, args.vocab, (bsz, args.seq))
            with torch.no_grad():
                cache = []
                logits = model(ids, cache, 0)
                nxt = logits[:, -1].argmax(-1, keepdim=True)
                t0 = time.perf_counter()
                for step in range(args.new_tokens - 1):
                    logits = model(nxt, cache, args.seq + step)
                    nxt = logits[:, -1].argmax(-1, keepdim=True)
                seconds = (time.perf_counter() - t0) / (args.new_tokens - 1)
            if run > 0:
                per_token.append(seconds)
        out[f'batch{bsz}_step_seconds'] = per_token
    if args.prefill > 0:
        prefill = []
        for run in range(args.runs + 1):
            ids = torch.randint(0, args.vocab, (1, args.prefill))
            with torch.no_grad():
                t0 = time.perf_counter()
                model(ids, [], 0)
                seconds = time.perf_counter() - t0
            if run > 0:
                prefill.append(seconds)
        out['prefill_seconds'] = prefill
    out['max_rss_kib'] = max_rss_kib()
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('mode', choices=['info', 'gemm', 'train', 'decode'])
    p.add_argument('--intermediate', type=int, default=1536)
    p.add_argument('--heads', type=int, default=9)
    p.add_argument('--kv-heads', type=int, default=3)
    p.add_argument('--new-tokens', type=int, default=16)
    p.add_argument('--batches', default='1,16')
    p.add_argument('--prefill', type=int, default=0, help='decode: also time one forward over a prompt of this many tokens')
    p.add_argument('--sizes', default='256,512,1024,2048')
    p.add_argument('--warmup', type=int, default=1)
    p.add_argument('--runs', type=int, default=5)
    p.add_argument('--min-seconds', type=float, default=0)
    p.add_argument('--steps', type=int, default=3)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--method', choices=['vera', 'lora', 'dvora', 'dora'], default='vera')
    p.add_argument('--layers', type=int, default=2)
    p.add_argument('--width', type=int, default=128)
    p.add_argument('--vocab', type=int, default=50257)
    p.add_argument('--positions', type=int, default=1024)
    p.add_argument('--batch', type=int, default=8)
    p.add_argument('--seq', type=int, default=128)
    p.add_argument('--r', type=int, default=256)
    p.add_argument('--alpha', type=float, default=8)
    args = p.parse_args()
    result = {'info': mode_info, 'gemm': mode_gemm, 'train': mode_train, 'decode': mode_decode}[args.mode](args)
    print(json.dumps(result))


if __name__ == '__main__':
    main()
