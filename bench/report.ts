// BENCHMARKS.md from the bench's results: header (machine, versions, threads), GEMM, training
// steps, and VeRA against LoRA (the paper's Table 12 question) on both runtimes.
import type { BenchResults, Outcome, OursTrain, TrainEntry } from './main.js';
import type { TorchTrain } from './torch.js';
import { best, median } from './stats.js';
import type { DecodeRun } from './decode.js';

/** How each training method is named in the report (DVoRA / DoRA: use_dora on VeRA / LoRA). */
const METHOD_NAMES: Record<string, string> = { vera: 'VeRA', lora: 'LoRA', dvora: 'DVoRA', dora: 'DoRA' };

const NA = 'n/a';

function fixed(x: number, digits: number): string {
  return Number.isFinite(x) ? x.toFixed(digits) : NA;
}

function ratio(a: number | null, b: number | null, digits = 2): string {
  return a === null || b === null || !(b > 0) ? NA : `${fixed(a / b, digits)}×`;
}

function mib(kib: number): number {
  return kib / 1024;
}

function count(n: number): string {
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)}M`;
  if (n >= 1e4) return `${(n / 1e3).toFixed(1)}k`;
  return n.toLocaleString('en-US');
}

const value = <T>(o: Outcome<T> | null): T | null => (o !== null && o.ok ? o.value : null);

/** Tokens per second from the median timed step. */
export function tokensPerSecond(tokensPerStep: number, stepSeconds: readonly number[]): number {
  return tokensPerStep / median(stepSeconds);
}

const oursTokS = (r: OursTrain | null): number | null => (r === null ? null : tokensPerSecond(r.tokensPerStep, r.stepSeconds));
const torchTokS = (r: TorchTrain | null): number | null => (r === null ? null : tokensPerSecond(r.tokens_per_step, r.step_seconds));

/** "ok" when the run trained exactly the adapter tensors, else what went wrong. */
export function checkSummary(r: OursTrain): string {
  const c = r.checks;
  const problems: string[] = [];
  if (c.updated.length !== c.trainableNames.length) problems.push(`${c.trainableNames.length - c.updated.length} adapter tensors unchanged`);
  if (c.frozenChanged.length > 0) problems.push(`${c.frozenChanged.length} frozen tensors changed`);
  if (c.frozenWithGrad.length > 0) problems.push(`${c.frozenWithGrad.length} frozen tensors got gradients`);
  if (!r.losses.every(Number.isFinite)) problems.push('non-finite loss');
  return problems.length === 0 ? 'ok' : problems.join('; ');
}

function failures(label: string, o: Outcome<unknown> | null): string[] {
  return o !== null && !o.ok ? [`- ${label}: ${o.error}`] : [];
}

function header(r: BenchResults): string[] {
  const t = r.torch;
  const lines = [
    '# Benchmarks',
    '',
    `Produced by \`${r.command}\` on ${r.date.replace('T', ' ').replace(/\.\d+Z$/, ' UTC')}${r.seconds === undefined ? '' : `, taking ${r.seconds < 120 ? `${fixed(r.seconds, 0)} s` : `${fixed(r.seconds / 60, 1)} min`}`}${r.quick ? ' (quick mode: smaller shapes and fewer runs, for smoke testing only)' : ''}.`,
    'Both runtimes ran one after the other on this machine, each measurement in its own child process.',
    '',
    '| | |',
    '|---|---|',
    `| CPU | ${r.machine.cpu}, ${r.machine.cores} cores (${r.machine.platform}) |`,
    `| Node | ${r.machine.node} |`,
    `| load average (1 min) | ${fixed(r.load.start, 2)} at the start, ${fixed(r.load.end, 2)} at the end (over ${r.machine.cores} cores: above that, other work competed for the CPU) |`,
    `| our backend | ${r.backend ? `\`${r.backend.name}\`, ${r.backend.threads} thread${r.backend.threads === 1 ? '' : 's'}` : NA} |`,
  ];
  if (t.python === null) {
    lines.push(`| PyTorch | **not available** (${t.reason}); PyTorch columns are empty and ratios n/a |`);
  } else {
    const libs = t.info.blas_libraries.map((p) => p.split('/').pop()).join(', ');
    lines.push(`| PyTorch | ${t.info.version}, BLAS: ${t.info.blas}${libs ? ` (${libs} loaded)` : ''}, threads set to ours (torch.set_num_threads, and OMP/OPENBLAS/MKL_NUM_THREADS for the BLAS pool) |`);
    lines.push(`| Python | ${t.info.executable} (${t.info.python}) |`);
  }
  if (r.note) lines.push('', `Note: ${r.note}`);
  if (t.python !== null) {
    lines.push(
      '',
      '<details><summary><code>torch.__config__.show()</code></summary>',
      '',
      '```',
      t.info.config.trim(),
      '```',
      '',
      '</details>',
    );
    if (t.info.blas === 'OpenBLAS' && !/openblas/i.test(t.info.config)) {
      lines.push('', `\`torch.__config__.show()\` says \`BLAS_INFO=generic\` (a distribution build linked against the system libblas); the libraries mapped into the process after a matmul show which one that is: ${t.info.blas}.`);
    }
  }
  return lines;
}

function gemmSection(r: BenchResults): string[] {
  const g = r.gemm;
  if (g === null) return [];
  const ours = value(g.ours);
  const theirs = value(g.torch);
  const lines = [
    '',
    '## GEMM',
    '',
    `float32 C = A·B for square n×n matrices, 2n³ flops. ${g.spec.warmup} warm-up run${g.spec.warmup === 1 ? '' : 's'}, then at least ${g.spec.runs} timed runs and at least ${g.spec.minSeconds} s of them; GFLOP/s of the median run, best run in parentheses. Ours calls the backend's \`matmul\` kernel directly; PyTorch's is \`torch.mm(a, b, out=c)\`.`,
    '',
    '| n | ours GFLOP/s | PyTorch GFLOP/s | ours / PyTorch (median) | ours, % of peak (median) |',
    '|---:|---:|---:|---:|---:|',
  ];
  const peak = ours?.peakGflops ?? null;
  for (const n of g.spec.sizes) {
    const flops = 2 * n ** 3;
    const a = ours?.results.find((x) => x.n === n)?.seconds ?? null;
    const b = theirs?.results.find((x) => x.n === n)?.seconds ?? null;
    const gf = (s: number[] | null): [number | null, string] => {
      if (s === null) return [null, '—'];
      const m = flops / median(s) / 1e9;
      return [m, `${fixed(m, 1)} (${fixed(flops / best(s) / 1e9, 1)})`];
    };
    const [am, as] = gf(a);
    const [bm, bs] = gf(b);
    lines.push(`| ${n} | ${as} | ${bs} | ${ratio(am, bm)} | ${am === null || !peak ? NA : `${fixed((100 * am) / peak, 0)}%`} |`);
  }
  if (peak) {
    lines.push('', `Machine peak: ${fixed(peak, 1)} GFLOP/s, a register-only FMA loop (no memory operands, independent accumulators, the widest vectors the GEMM uses) on all ${ours!.threads} thread${ours!.threads === 1 ? '' : 's'}, best of about 1 s of runs. Our micro-kernel: \`${ours!.kernel ?? NA}\`.`);
  }
  lines.push(...failures('ours', g.ours), ...failures('PyTorch', g.torch));
  return lines;
}

function trainSection(r: BenchResults): string[] {
  if (r.train.length === 0) return [];
  const s0 = r.train[0].spec;
  const rs = [...new Set(r.train.map((e) => `${METHOD_NAMES[e.spec.method]} r ${e.spec.r}`))].join(', ');
  const lines = [
    '',
    '## Training step (VeRA and LoRA on GPT-2 shapes)',
    '',
    `One step = forward, causal-LM loss, backward, AdamW on the adapter tensors only. GPT-2 models built from a GPT-2 config (layers × width, heads = width/64, vocab ${s0.vocab}, n_positions ${s0.positions}, random weights, dropout 0, lm_head tied to wte and frozen), adapters on every block's c_attn, attn.c_proj, c_fc and mlp.c_proj (${rs}; LoRA α = ${s0.alpha}); batch ${s0.batch} × sequence ${s0.seq} of random tokens. ${s0.warmup} warm-up step${s0.warmup === 1 ? '' : 's'}, then tokens/s from the median of ${s0.steps} timed steps. Peak RSS is the child process's maxRSS (whole process: runtime, model, activations). PyTorch runs an independent GPT-2 written in bench/torch_bench.py with the base frozen (requires_grad False), one shared Kaiming-uniform A/B pair sliced per layer for VeRA, and torch.optim.AdamW over the same tensors. Attention differs by design: PyTorch's side is eager attention (the full T×T scores with a causal mask, as transformers' GPT-2 runs on torch 1.13, which has no public fused attention), while ours is a fused kernel that skips the keys the causal mask hides, about half the score and P·V work; attention is a small part of these steps (T = 128 against widths of 128–768 and a 50257-word head).`,
    '',
    '| model | method | base params | trainable | ours tok/s | PyTorch tok/s | ours / PyTorch | ours peak RSS MiB | PyTorch peak RSS MiB | ours / PyTorch | checks |',
    '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|',
  ];
  const errors: string[] = [];
  for (const e of r.train) {
    const ours = value(e.ours);
    const theirs = value(e.torch);
    const label = `${e.spec.layers}×${e.spec.width}`;
    const method = `${METHOD_NAMES[e.spec.method]} r ${e.spec.r}`;
    const ot = oursTokS(ours);
    const tt = torchTokS(theirs);
    const om = ours ? mib(ours.maxRssKiB) : null;
    const tm = theirs ? mib(theirs.max_rss_kib) : null;
    lines.push(
      `| ${label} | ${method} | ${ours ? count(ours.allParams - ours.trainableParams) : '—'} | ${ours ? count(ours.trainableParams) : theirs ? count(theirs.trainable_params) : '—'} | ${ot === null ? (e.ours.ok ? '—' : 'failed') : fixed(ot, 0)} | ${tt === null ? (e.torch === null ? '—' : 'failed') : fixed(tt, 0)} | ${ratio(ot, tt)} | ${om === null ? '—' : fixed(om, 0)} | ${tm === null ? '—' : fixed(tm, 0)} | ${ratio(om, tm)} | ${ours ? checkSummary(ours) : '—'} |`,
    );
    errors.push(...failures(`${method} ${label}, ours`, e.ours), ...failures(`${method} ${label}, PyTorch`, e.torch));
  }
  lines.push(
    '',
    '"checks" (ours): every adapter tensor changed, no frozen parameter or buffer changed (Σx² before and after) and none got a gradient buffer, every loss finite.',
  );
  const startup = r.train.map((e) => value(e.ours)?.startupRssKiB).filter((x): x is number => x !== undefined);
  const tStartup = r.train.map((e) => value(e.torch)?.startup_rss_kib).filter((x): x is number => x !== undefined);
  if (startup.length > 0) {
    lines.push(`RSS at process start, before the model is built: ours ${fixed(mib(median(startup)), 0)} MiB${tStartup.length > 0 ? `, PyTorch ${fixed(mib(median(tStartup)), 0)} MiB (after \`import torch\`)` : ''}.`);
  }
  lines.push(...losses(r.train));
  if (errors.length > 0) lines.push('', 'Failures:', ...errors);
  return lines;
}

function losses(entries: TrainEntry[]): string[] {
  const show = (xs: number[]): string => xs.map((x) => fixed(x, 4)).join(' → ');
  const out = ['', 'Loss per step (warm-up included), ours | PyTorch — both start near ln(vocab) on random tokens:', ''];
  for (const e of entries) {
    const ours = value(e.ours);
    const theirs = value(e.torch);
    out.push(`- ${METHOD_NAMES[e.spec.method]} ${e.spec.layers}×${e.spec.width}: ${ours ? show(ours.losses) : '—'} | ${theirs ? show(theirs.losses) : '—'}`);
  }
  return out;
}

/** Adapter multiply-adds per token over the adapted layers' own: Σ r·(in + out) / Σ in·out over c_attn, attn.c_proj, c_fc, mlp.c_proj. */
export function adapterWork(spec: { r: number; width: number }): number {
  const w = spec.width;
  const layers: [number, number][] = [[w, 3 * w], [w, w], [w, 4 * w], [4 * w, w]];
  const adapter = layers.reduce((sum, [i, o]) => sum + spec.r * (i + o), 0);
  return adapter / layers.reduce((sum, [i, o]) => sum + i * o, 0);
}

function veraVsLora(r: BenchResults): string[] {
  const pairs = new Map<string, { vera?: TrainEntry; lora?: TrainEntry }>();
  for (const e of r.train) {
    const key = `${e.spec.layers}×${e.spec.width}`;
    pairs.set(key, { ...pairs.get(key), [e.spec.method]: e });
  }
  const rows = [...pairs].filter(([, p]) => p.vera && p.lora);
  if (rows.length === 0) return [];
  const lines = [
    '',
    '## VeRA against LoRA (the paper\'s Table 12 question)',
    '',
    'Step time and peak RSS of VeRA divided by LoRA\'s on the same model, per runtime (below 1: VeRA is faster / smaller). Time ratio = LoRA tok/s ÷ VeRA tok/s. "Adapter work" is the multiply-adds per token the adapter adds to the adapted layers, as a share of those layers\' own (forward; backward scales alike): both methods add r·(in + out) per layer, r·16·width per block against the block\'s 12·width² (4r / 3·width). The frozen lm_head (width·vocab per token) and attention come on top for both methods and dilute the difference, most in the small models.',
    '',
    '| model | trainable VeRA / LoRA | adapter work VeRA / LoRA | ours: time | ours: peak RSS | PyTorch: time | PyTorch: peak RSS |',
    '|---|---:|---:|---:|---:|---:|---:|',
  ];
  for (const [label, p] of rows) {
    const ov = value(p.vera!.ours);
    const ol = value(p.lora!.ours);
    const tv = value(p.vera!.torch);
    const tl = value(p.lora!.torch);
    const tokRatio = (v: number | null, l: number | null): string => ratio(l, v, 3);
    lines.push(
      `| ${label} | ${ov && ol ? `${count(ov.trainableParams)} / ${count(ol.trainableParams)}` : '—'} | ${fixed(100 * adapterWork(p.vera!.spec), 1)}% / ${fixed(100 * adapterWork(p.lora!.spec), 1)}% | ${tokRatio(oursTokS(ov), oursTokS(ol))} | ${ratio(ov ? ov.maxRssKiB : null, ol ? ol.maxRssKiB : null, 3)} | ${tokRatio(torchTokS(tv), torchTokS(tl))} | ${ratio(tv ? tv.max_rss_kib : null, tl ? tl.max_rss_kib : null, 3)} |`,
    );
  }
  const [label, p] = rows[rows.length - 1];
  const ov = value(p.vera!.ours);
  const ol = value(p.lora!.ours);
  const percent = (a: number | null, b: number | null): string => (a === null || b === null || !(b > 0) ? NA : `${a >= b ? '+' : '−'}${fixed((100 * Math.abs(a - b)) / b, 1)}%`);
  const oursTime = percent(ov ? median(ov.stepSeconds) : null, ol ? median(ol.stepSeconds) : null);
  const oursMem = percent(ov ? ov.maxRssKiB : null, ol ? ol.maxRssKiB : null);
  const tv = value(p.vera!.torch);
  const tl = value(p.lora!.torch);
  const torchSide = tv && tl ? ` (PyTorch: ${percent(median(tv.step_seconds), median(tl.step_seconds))} time, ${percent(tv.max_rss_kib, tl.max_rss_kib)} peak RSS)` : '';
  lines.push(
    '',
    `The paper's Table 12 (LLaMA 7B on a GPU, both methods at rank 64) has VeRA at +1.8% training time and −7.4% memory against LoRA. Here, at the ranks each method is used with (VeRA ${p.vera!.spec.r}, LoRA ${p.lora!.spec.r}) on the ${label} model, VeRA's step on our runtime takes ${oursTime} time and ${oursMem} peak RSS against LoRA's${torchSide}. ` +
      'What differs between the two: LoRA keeps a gradient and two AdamW moments for r·(in + out) floats per layer, VeRA for r + out; VeRA keeps the (tokens × r) activation x·Aₛᵀ of each adapted layer for backward and runs two r-wide matmuls per layer, at r 256 against LoRA\'s 8. The frozen weights and the vocab-sized logits and their gradient are common to both and dominate peak memory.',
  );
  return lines;
}

/** The decode section: batch 1 against the bandwidth bound, batch N, and adapters mixed in one batch. */
function decodeSection(r: BenchResults): string[] {
  const d = r.decode;
  if (!d) return [];
  const s = d.spec;
  const lines = ['', '## Decoding with many adapters (the multi-adapter engine)', ''];
  const ours = value(d.ours);
  const theirs = value(d.torch);
  lines.push(
    `A Llama of SmolLM-135M's shape (${s.shape.layers} layers, width ${s.shape.hidden}, ${s.shape.heads} heads / ${s.shape.kvHeads} kv heads, vocab ${s.shape.vocab.toLocaleString('en-US')}, random float32 weights) decodes through \`InferenceEngine\`: ${s.prompt}-token prompts, ${s.newTokens} new tokens each, greedy. ` +
      'Rates are steady decoding (after every request has its first token): tokens per second over all requests. ' +
      `VeRA adapters: r ${s.veraR} on q, k, v, o, gate, up and down of every layer; LoRA r ${s.loraR} on the same. ` +
      'The PEFT-style loop runs each adapter\'s rows as their own batch (PEFT cannot batch VeRA adapters: its `adapter_names` is LoRA-only), one request at a time. ' +
      'PyTorch: an independent eager Llama (torch_bench.py decode), KV cache grown by concatenation as transformers\' eager generate.',
    '',
  );
  if (!ours) return [...lines, ...failures('ours', d.ours), ...failures('PyTorch', d.torch)];
  const bound = median(ours.readSeconds);
  const rate = (runs: { tokensPerSecond: number }[]): number => median(runs.map((x) => x.tokensPerSecond));
  const step1 = median(ours.batch1.map((x) => x.stepSeconds));
  const torch1 = theirs ? median(theirs.batch1_step_seconds ?? []) : null;
  const torchN = theirs ? median(theirs[`batch${s.batch}_step_seconds`] ?? []) : null;
  const torchPrefill = theirs?.prefill_seconds ? median(theirs.prefill_seconds) : null;
  const oursN = rate(ours.batchN);
  const mixed = rate(ours.mixedVera);
  // the loop and the one-adapter run each run next to a mixed run: a ratio is the median of the
  // pairs' ratios (this host's speed drifts between runs), each pair's listed; not the ratio of the
  // two medians
  const paired = (other: DecodeRun[], what: string): string => {
    const pairs = other.length === ours.mixedVera.length ? other.map((l, i) => ours.mixedVera[i].tokensPerSecond / l.tokensPerSecond) : [];
    return pairs.length > 1
      ? `${fixed(median(pairs), 2)}×: the median of the ratios of ${pairs.length} runs, each next to a mixed run${what}: ${pairs.map((r) => `${fixed(r, 2)}×`).join(', ')}`
      : ratio(mixed, rate(other));
  };
  const loopRatio = paired(ours.peftLoop, '');
  const singleRatio = paired(ours.singleVera, ' (right after it)');
  lines.push(
    '| measurement | ours | PyTorch | ours ÷ PyTorch (speed) |',
    '|---|---:|---:|---:|',
    `| read every weight once (${fixed(ours.weightBytes / 2 ** 20, 0)} MiB): the batch-1 bound | ${fixed(1000 * bound, 1)} ms (${fixed(ours.weightBytes / bound / 1e9, 1)} GB/s) | | |`,
    `| batch 1: time per token | ${fixed(1000 * step1, 1)} ms (${fixed(100 * (bound / step1), 0)}% of the bound) | ${torch1 === null ? NA : `${fixed(1000 * torch1, 1)} ms`} | ${ratio(torch1, step1)} |`,
    `| batch ${s.batch}: tokens/s | ${fixed(oursN, 1)} (${ratio(oursN, rate(ours.batch1))} batch 1) | ${torchN === null ? NA : fixed(s.batch / torchN, 1)} | ${torchN === null ? NA : ratio(oursN, s.batch / torchN)} |`,
    `| ${s.mixed} requests, ${s.mixed} distinct VeRA adapters: tokens/s | ${fixed(mixed, 1)} | | |`,
    `| ${s.mixed} requests, one VeRA adapter | ${fixed(rate(ours.singleVera), 1)} (mixed ÷ this: ${singleRatio}) | | |`,
    `| ${s.mixed} requests, base model | ${fixed(rate(ours.base), 1)} | | |`,
    `| ${s.wide} requests, base model | ${fixed(rate(ours.wideBase), 1)} (${ratio(rate(ours.wideBase), rate(ours.base))} ${s.mixed} requests) | | |`,
    `| prefill: one ${s.prefill}-token prompt to its first token, prompt tokens/s | ${fixed(s.prefill / median(ours.prefillSeconds), 0)} | ${torchPrefill === null ? NA : fixed(s.prefill / torchPrefill, 0)} | ${ratio(torchPrefill, median(ours.prefillSeconds))} |`,
    `| ${s.mixed} requests, ${s.mixed} distinct LoRA r ${s.loraR} adapters | ${fixed(rate(ours.mixedLora), 1)} | | |`,
    `| PEFT-style loop over the ${s.mixed} VeRA adapters | ${fixed(rate(ours.peftLoop), 1)} (mixed ÷ loop: ${loopRatio}) | | |`,
    `| resident bytes per VeRA adapter (r ${s.veraR} on q_proj and v_proj; ${ours.memory.adapters.toLocaleString('en-US')} registered) | ${ours.memory.bytesPerAdapter.toLocaleString('en-US')} B of vectors (${fixed(ours.memory.arrayBufferBytesPerAdapter, 0)} B of ArrayBuffers per adapter, slab headroom and cold copies included) | | |`,
    '',
    `Peak RSS: ours ${fixed(mib(ours.maxRssKiB), 0)} MiB${theirs ? `, PyTorch ${fixed(mib(theirs.max_rss_kib), 0)} MiB` : ''}.`,
  );
  return [...lines, ...failures('PyTorch', d.torch)];
}

const MB = (b: number): string => `${fixed(b / 1e6, 1)} MB`;

function quantSection(r: BenchResults): string[] {
  const q = r.quant;
  if (!q) return [];
  const lines = ['', '## Compact weight formats (bf16, int8, nf4)'];
  if (!q.ours.ok) return [...lines, '', ...failures('ours', q.ours)];
  const v = q.ours.value;
  const gflops = (n: number, fmt: string): number | null => {
    const row = v.gemm.find((x) => x.n === n && x.format === fmt);
    return row ? (2 * n ** 3) / median(row.seconds) / 1e9 : null;
  };
  lines.push(
    '',
    `GEMM: y = x·Wᵀ with x (n×n) float32 and an (n×n) nn.Linear weight held in the format (\`Kernels.quantMatmul\`, which dequantizes tiles of W as it goes; f32: \`matmul\` with transB), 2n³ flops, GFLOP/s of the median of at least ${q.spec.runs} runs and ${q.spec.minSeconds} s, and against f32.${v.peakGflops ? ` Machine peak (register-only FMA loop, all threads): ${fixed(v.peakGflops, 1)} GFLOP/s.` : ''}`,
    '',
    '| n | f32 | bf16 | int8 | nf4 |',
    '|---:|---:|---:|---:|---:|',
  );
  for (const n of q.spec.sizes) {
    const f = gflops(n, 'f32');
    const cell = (fmt: string): string => {
      const g = gflops(n, fmt);
      return g === null ? NA : fmt === 'f32' ? fixed(g, 1) : `${fixed(g, 1)} (${ratio(g, f)})`;
    };
    lines.push(`| ${n} | ${cell('f32')} | ${cell('bf16')} | ${cell('int8')} | ${cell('nf4')} |`);
  }
  const d = q.spec.decode;
  const sh = d.shape;
  const f32 = v.decode.find((x) => x.format === 'f32');
  lines.push(
    '',
    `Batch-1 decoding, greedy, KV cache, on a SmolLM-135M-shaped Llama (${sh.layers} layers, hidden ${sh.hidden}, intermediate ${sh.intermediate}, ${sh.heads} heads / ${sh.kvHeads} KV heads, vocab ${sh.vocab}, lm_head tied; random weights), ${d.prompt}-token prompt then ${d.newTokens} tokens, median seconds per token over ${d.runs} run${d.runs === 1 ? '' : 's'} after a warm-up. Bytes read per token: the linear weights in the format, plus lm_head (the embedding matrix) and the norms in f32. The bound is the time to read exactly those bytes once (Σx² over them, all threads): a step can go no faster.`,
    '',
    '| weights | linear weights | + lm_head, norms | bytes / token vs f32 (linear only) | ms / token | vs f32 | bound ms (read once) | % of bound |',
    '|---|---:|---:|---:|---:|---:|---:|---:|',
  );
  for (const row of v.decode) {
    const t = median(row.tokenSeconds);
    const bound = median(row.readSeconds);
    const total = row.linearBytes + row.otherBytes;
    const fTotal = f32 ? f32.linearBytes + f32.otherBytes : null;
    lines.push(`| ${row.format} | ${MB(row.linearBytes)} | ${MB(total)} | ${fTotal === null ? NA : `${ratio(fTotal, total)} (${ratio(f32!.linearBytes, row.linearBytes)})`} | ${fixed(1000 * t, 2)} | ${f32 ? ratio(median(f32.tokenSeconds), t) : NA} | ${fixed(1000 * bound, 2)} | ${fixed((100 * bound) / t, 0)}% |`);
  }
  const a = q.spec.accuracy;
  if (a && v.accuracy) {
    lines.push(
      '',
      `Accuracy on \`${a.model.split('/').slice(-2).join('/')}\`: perplexity of the first ${a.fortunes} fortunes of \`${a.evalFile.split('/').slice(-3).join('/')}\` (joined by blank lines, as the README's table, ${v.accuracy[0]?.tokens ?? NA} tokens), and max |Δlogit| against f32 over the first ${a.logitTokens} tokens.`,
      '',
      '| weights | perplexity | max \\|Δlogit\\| |',
      '|---|---:|---:|',
      ...v.accuracy.map((x) => `| ${x.format} | ${fixed(x.perplexity, 2)} | ${fixed(x.maxDeltaLogit, 3)} |`),
    );
  } else if (v.accuracyError) lines.push('', `- accuracy: ${v.accuracyError}`);
  return lines;
}

const GIB = (kib: number): string => `${fixed(kib / 1024 / 1024, 2)} GiB`;

function qloraSection(r: BenchResults): string[] {
  const q = r.qlora;
  if (!q) return [];
  const lines = ['', '## A 7B-class model in nf4 (the paper\'s QLoRA setting)'];
  if (!q.ours.ok) return [...lines, '', ...failures('ours', q.ours)];
  const v = q.ours.value;
  const sh = q.spec.shape;
  lines.push(
    '',
    `A ${sh.hidden === 4096 && sh.layers === 32 ? 'Llama-2-7B-shaped' : 'Llama'} model (${sh.layers} layers, hidden ${sh.hidden}, intermediate ${sh.intermediate}, ${sh.heads} heads, vocab ${sh.vocab}, untied head) built in memory: its ${v.linearLayers} linear layers but the head in nf4 with double-quantized block scales (${MB(v.nf4Bytes)}), the embedding, head and norms in float32 (${MB(v.f32Bytes)}). Random weights: each linear shape is drawn and quantized once and every layer holds its own copy of those bytes (the memory and arithmetic of a real 7B; values repeat across layers). VeRA r ${q.spec.r} on q, k, v, o, gate, up and down of every layer (${v.trainableParams.toLocaleString('en-US')} trainable values); one sequence of ${q.spec.seq} tokens per step, causal-LM loss, AdamW. The first step includes one-time costs (VeRA's shared projections, the optimizer's state).`,
    '',
    '| measurement | value |',
    '|---|---:|',
    `| build (draw, quantize, copy) | ${fixed(v.buildSeconds, 1)} s |`,
    `| peak RSS, model built | ${GIB(v.builtRssKiB)} |`,
    ...v.stepSeconds.map((t, i) => `| step ${i + 1}: seconds (loss ${fixed(v.losses[i], 3)}) | ${fixed(t, 1)} s |`),
    `| peak RSS, after the steps | ${GIB(v.maxRssKiB)} (of this machine's ${GIB(r.machine.memoryKiB ?? NaN)}) |`,
  );
  return lines;
}

/** Our WebAssembly backend against TF.js's and jax-js's wasm GEMMs, and its VeRA step against native's. */
function wasmSection(r: BenchResults): string[] {
  const w = r.wasm;
  if (w === undefined) return [];
  const ours = value(w.ours);
  const oursT = w.oursThreads ? value(w.oursThreads) : null;
  const tf = value(w.tfjs);
  const jax = value(w.jax);
  const gflops = (res: { n: number; seconds: number[] }[] | undefined, n: number, pick: (s: number[]) => number): number | null => {
    const s = res?.find((x) => x.n === n)?.seconds;
    return s === undefined ? null : (2 * n ** 3) / pick(s) / 1e9;
  };
  const cell = (res: { n: number; seconds: number[] }[] | undefined, n: number): string => {
    const m = gflops(res, n, median);
    return m === null ? '—' : `${fixed(m, 1)} (${fixed(gflops(res, n, best)!, 1)})`;
  };
  const threads = (p: { threads: number; threadsNote: string } | null): string => (p === null ? NA : `${p.threads} (${p.threadsNote})`);
  const lines = [
    '',
    '## WebAssembly backend',
    '',
    `Our \`wasm\` backend (the native/ kernels compiled to WebAssembly, SIMD128: wasm/vera.wasm on one thread, and wasm/vera-threads.wasm on workers over a shared memory) against the other WebAssembly runtimes for JavaScript, in Node ${r.machine.node}, each in its own child process, in turn, twice (the two rounds' runs pooled). float32 C = A·B for square n×n matrices; GFLOP/s of the median run, best run in parentheses, of at least ${w.spec.gemm.runs} timed runs a round after ${w.spec.gemm.warmup} warm-up; the ratios are of the best runs, the least disturbed by other work on the machine. TF.js: \`tf.matMul\` then \`dataSync\`; jax-js: \`np.matmul\` then \`blockUntilReady\`; ours: the \`matmul\` kernel.`,
    '',
    `Threads — ours: 1, and ${oursT?.threads ?? w.threads ?? NA} (the threaded module, as the child reported it); TF.js: ${threads(tf)}; jax-js: ${threads(jax)}.`,
    '',
    `| n | ours (wasm, 1 thread) | ours (wasm, ${oursT?.threads ?? w.threads ?? '?'} threads) | ${tf?.label ?? 'TF.js wasm'} | ${jax?.label ?? 'jax-js wasm'} | ours / TF.js (best) | ours / jax-js (best) | ours threaded / TF.js (best) | ours threaded / jax-js (best) |`,
    '|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const n of w.spec.gemm.sizes) {
    const a = gflops(ours?.results, n, best);
    const t = gflops(oursT?.results, n, best);
    const b = gflops(tf?.results, n, best);
    const c = gflops(jax?.results, n, best);
    lines.push(`| ${n} | ${cell(ours?.results, n)} | ${cell(oursT?.results, n)} | ${cell(tf?.results, n)} | ${cell(jax?.results, n)} | ${ratio(a, b)} | ${ratio(a, c)} | ${ratio(t, b)} | ${ratio(t, c)} |`);
  }
  const tw = value(w.trainWasm);
  const tn = value(w.trainNative);
  const s = w.spec.train;
  lines.push(
    '',
    `VeRA training step (r ${s.r}) on the GPT-2 ${s.layers}×${s.width} shape (vocabulary ${s.vocab}), batch ${s.batch} × ${s.seq} tokens, median of ${s.steps} steps after ${s.warmup} warm-up, both backends on one thread:`,
    '',
    '| backend | tokens/s | step (ms) | checks |',
    '|---|---:|---:|---|',
  );
  for (const [name, t] of [['wasm', tw], ['native', tn]] as const) {
    lines.push(`| ${name} | ${t === null ? NA : fixed(oursTokS(t)!, 0)} | ${t === null ? NA : fixed(1000 * median(t.stepSeconds), 0)} | ${t === null ? NA : checkSummary(t)} |`);
  }
  lines.push('', `wasm / native: ${ratio(oursTokS(tw), oursTokS(tn))} of the tokens per second.`);
  lines.push(...failures('ours (wasm GEMM)', w.ours), ...(w.oursThreads ? failures('ours (threaded wasm GEMM)', w.oursThreads) : []), ...failures('TF.js', w.tfjs), ...failures('jax-js', w.jax), ...failures('VeRA step on wasm', w.trainWasm), ...failures('VeRA step on native', w.trainNative));
  return lines;
}

function webgpuSection(r: BenchResults): string[] {
  const w = r.webgpu;
  if (!w) return [];
  const lines = ['', '## WebGPU (headless Chromium)'];
  if (!w.ours.ok) return [...lines, '', ...failures('ours', w.ours)];
  const v = w.ours.value;
  const t = v.train;
  const sec = median(t.stepSeconds);
  lines.push(
    '',
    `Adapter: ${v.adapter}.${v.swiftshader ? ' **SwiftShader is Chromium\'s CPU fallback: these figures are not GPU speed**, only proof that the path runs (GEMM sizes above 512 and the full training shape are skipped there).' : ''} Kernels are encoded and submitted in batches; each figure waits for the GPU (queue.onSubmittedWorkDone, or the loss read back).`,
    '',
    '| GEMM n | GFLOP/s (median) |',
    '|---:|---:|',
    ...v.gemm.map((g) => `| ${g.n} | ${fixed((2 * g.n ** 3) / median(g.seconds) / 1e9, 1)} |`),
    '',
    `VeRA training step (forward, backward, AdamW, loss read back) on GPT-2 ${t.shape.layers}x${t.shape.width}, vocab ${t.shape.vocab}, ${t.shape.batch}×${t.shape.seq} tokens, r ${t.shape.r} on c_attn, c_proj, c_fc: ${fixed(1000 * sec, 0)} ms per step, ${fixed((t.shape.batch * t.shape.seq) / sec, 0)} tokens/s (median of ${t.stepSeconds.length} after a warm-up).`,
  );
  return lines;
}

export function renderMarkdown(r: BenchResults): string {
  return [...header(r), ...gemmSection(r), ...trainSection(r), ...veraVsLora(r), ...decodeSection(r), ...quantSection(r), ...qloraSection(r), ...wasmSection(r), ...webgpuSection(r), ''].join('\n');
}
