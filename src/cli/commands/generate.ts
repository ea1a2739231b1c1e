// `vera generate`: text from a causal LM (GPT-2 or the Llama family), optionally with an adapter,
// streamed to stdout as it is produced. Greedy by default; --temperature, --top-k or --top-p sample;
// --num-beams > 1 is beam search (printed once it ends).
import * as fs from 'node:fs';
import { InvalidArgumentError, type Command } from 'commander';
import { VeraError } from '../../io/errors.js';
import { loadPretrained, generateAsync, generationEosTokenIds as eosTokenIds, isCausalLM, type GenerationResult } from '../../models/index.js';
import { PeftModel } from '../../peft/index.js';
import { InferenceEngine, type EngineRequest } from '../../engine/index.js';
import { parsePromptsJsonl } from '../../data/prompts.js';
import { loadTokenizer, type Tokenizer } from '../../data/tokenizer.js';
import { loadChatTemplate } from '../../data/chat-template.js';
import type { WeightFormat } from '../../tensor/quant.js';
import { DOUBLE_QUANT_HELP, WEIGHTS_HELP, weightFormat, finiteNumber, noRepeatNgramSizeOption, nonNegativeInt, nonNegativeNumber, positiveInt } from '../options.js';

interface GenerateFlags {
  weights?: WeightFormat;
  doubleQuant?: boolean;
  model: string;
  adapter: string[];
  prompt?: string;
  prompts?: string;
  maxNewTokens: number;
  temperature?: number;
  topK?: number;
  topP?: number;
  seed: number;
  stop?: string[];
  numBeams: number;
  lengthPenalty: number;
  noRepeatNgramSize: number;
  chat?: boolean;
  json?: boolean;
  allowNonFinite?: boolean;
}

function topPValue(value: string): number {
  const n = finiteNumber(value);
  if (!(n > 0 && n <= 1)) throw new InvalidArgumentError('must be in (0, 1]');
  return n;
}

/**
 * The prompt's token ids. A chat template writes the bos token itself, so, as transformers'
 * apply_chat_template, the rendered chat is encoded without the template's special tokens.
 */
function promptIds(tokenizer: Tokenizer, text: string, chat: boolean): number[] {
  return tokenizer.encode(text, { addSpecialTokens: !chat });
}

function samplingFlags(o: Pick<GenerateFlags, 'temperature' | 'topK' | 'topP'>, names = ['--top-k', '--top-p', '--temperature']): { doSample: boolean; temperature?: number } {
  const filters = o.topK !== undefined || o.topP !== undefined;
  if (o.temperature === 0 && filters) throw new VeraError(`${o.topK !== undefined ? names[0] : names[1]} samples, but ${names[2]} 0 asks for greedy decoding; give ${names[2]} > 0 or drop it`);
  const doSample = (o.temperature !== undefined && o.temperature > 0) || filters;
  return { doSample, temperature: doSample ? o.temperature ?? 1 : undefined };
}

/** Text → prompt ids, through the chat template with --chat (whose turn-ending eos joins `eos`). */
function chatEncoder(o: GenerateFlags, tokenizer: Tokenizer, eos: number[]): (text: string) => number[] {
  if (!o.chat) return (text) => promptIds(tokenizer, text, false);
  const template = loadChatTemplate(o.model);
  // chat models end their turn with the tokenizer's eos token
  const turnEnd = template.eosToken === null ? null : tokenizer.tokenToId(template.eosToken);
  if (turnEnd !== null && !eos.includes(turnEnd)) eos.push(turnEnd);
  return (text) => promptIds(tokenizer, template.render([{ role: 'user', content: text }], { addGenerationPrompt: true }), true);
}

/** --prompts: every line through the multi-adapter engine at once; results in input order. */
async function generateMany(o: GenerateFlags): Promise<void> {
  if (o.numBeams > 1) throw new VeraError('--num-beams > 1 is not available with --prompts (the engine decodes greedily or by sampling)');
  if (o.stop?.some((s) => s === '')) throw new VeraError('--stop: a stop string must not be empty');
  const named = new Map<string, string>();
  for (const a of o.adapter) {
    const eq = a.indexOf('=');
    if (eq <= 0 || eq === a.length - 1) throw new VeraError(`--adapter ${a}: with --prompts, adapters are NAME=DIR`);
    const name = a.slice(0, eq);
    if (named.has(name)) throw new VeraError(`--adapter ${a}: the name '${name}' is given twice`);
    named.set(name, a.slice(eq + 1));
  }
  const loaded = loadPretrained(o.model, { allowNonFinite: o.allowNonFinite ?? false, weights: o.weights, doubleQuant: o.doubleQuant });
  const model = loaded.model;
  if (!isCausalLM(model)) throw new VeraError(`${o.model}: generate needs a causal language model, this is a ${loaded.modelType}`);
  const lines = parsePromptsJsonl(readTextFile(o.prompts!, 'prompts'), o.prompts!, model.config.vocabSize);
  for (const l of lines) if (l.adapter !== null && !named.has(l.adapter)) throw new VeraError(`${o.prompts}:${l.line}: field "adapter": no adapter named '${l.adapter}' (give it with --adapter ${l.adapter}=DIR)`);
  const tokenizer = await loadTokenizer(o.model);
  if (tokenizer === null && lines.some((l) => l.text !== undefined)) throw new VeraError(`${o.model}: no tokenizer.json (needed for "prompt" texts; "prompt_ids" need none)`);
  const eos = eosTokenIds(o.model, model);
  const toIds = tokenizer ? chatEncoder(o, tokenizer, eos) : null;
  const decode = tokenizer ? (ids: readonly number[]): string => tokenizer.decode(ids) : undefined;
  const engine = new InferenceEngine(model, { decode });
  for (const [name, dir] of named) engine.addAdapter(name, dir);
  const requests: EngineRequest[] = lines.map((l) => {
    const where = `${o.prompts}:${l.line}`;
    const own = { temperature: l.temperature ?? o.temperature, topK: l.topK ?? o.topK, topP: l.topP ?? o.topP };
    const { doSample, temperature } = samplingFlags(own, [`${where}: "top_k"`, `${where}: "top_p"`, `${where}: "temperature"`]);
    const stop = l.stop ?? o.stop;
    if (stop?.length && !decode) throw new VeraError(`${where}: "stop" needs the model's tokenizer.json`);
    return {
      promptIds: l.ids ?? toIds!(l.text!),
      adapter: l.adapter,
      maxNewTokens: l.maxNewTokens ?? o.maxNewTokens,
      doSample,
      temperature,
      topK: own.topK,
      topP: own.topP,
      seed: l.seed ?? o.seed,
      stopStrings: stop,
      eosTokenIds: eos,
    };
  });
  const results = await engine.generateAll(requests);
  results.forEach((r, i) => {
    const text = r.text ?? '';
    if (o.json) console.log(JSON.stringify({ line: lines[i].line, adapter: r.adapter, prompt_tokens: requests[i].promptIds, tokens: r.tokens, text, finish_reason: r.finishReason }));
    else process.stdout.write(`=== ${o.prompts}:${lines[i].line} (${r.adapter ?? 'base model'}) ===\n${text}\n`);
  });
  await engine.close();
}

function readTextFile(file: string, what: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new VeraError(`${file}: cannot read ${what} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
}

export function registerGenerate(program: Command): void {
  program
    .command('generate')
    .description('generate text from a causal LM (GPT-2, Llama, Mistral, Qwen2), optionally with an adapter; streams to stdout')
    .requiredOption('--model <dir>', 'model folder (config.json, safetensors, tokenizer.json)')
    .option('--adapter <dir|name=dir>', 'adapter folder (PEFT layout); NAME=DIR (repeatable) registers named adapters for --prompts', (v: string, acc: string[]) => [...acc, v], [] as string[])
    .option('--prompt <text>', 'the prompt (or the user message, with --chat)')
    .option('--prompts <file>', 'JSONL, one request per line: {"prompt" | "prompt_ids", "adapter", and optionally max_new_tokens, temperature, top_k, top_p, seed, stop}; all run together through the multi-adapter engine')
    .option('--max-new-tokens <n>', 'tokens to generate at most', positiveInt, 64)
    .option('--temperature <t>', 'sampling temperature; 0 = greedy (the default unless --top-k/--top-p are given)', nonNegativeNumber)
    .option('--top-k <k>', 'sample among the k most likely tokens (0 = all; default 50 when sampling)', nonNegativeInt)
    .option('--top-p <p>', 'nucleus sampling: the smallest set of tokens whose probability reaches p', topPValue)
    .option('--seed <s>', 'seed of the sampling generator', nonNegativeInt, 0)
    .option('--stop <strings...>', 'stop once the generated text contains one of these')
    .option('--num-beams <n>', 'beam search with n beams (1 = greedy search or sampling); not with sampling or --stop', positiveInt, 1)
    .option('--length-penalty <x>', 'beam search: a finished beam scores sum(log p) / length^x (length counts the prompt)', finiteNumber, 1)
    .addOption(noRepeatNgramSizeOption())
    .option('--chat', "format the prompt as a user message with the tokenizer_config.json's chat_template")
    .option('--json', 'print {"prompt_tokens", "tokens", "text", "finish_reason"} as one JSON line instead of streaming')
    .option('--allow-non-finite', 'load model weights (and a --prompt adapter) holding NaN/Inf instead of refusing them')
    .option('--weights <format>', WEIGHTS_HELP, weightFormat)
    .option('--double-quant', DOUBLE_QUANT_HELP)
    .action(async (o: GenerateFlags) => {
      if ((o.prompt === undefined) === (o.prompts === undefined)) throw new VeraError('give --prompt TEXT or --prompts FILE.jsonl (one of them)');
      const named = o.adapter.filter((a) => a.includes('='));
      if (o.prompts !== undefined) return generateMany(o);
      if (named.length > 0) throw new VeraError(`--adapter ${named[0]}: named adapters are for --prompts; with --prompt give --adapter DIR`);
      if (o.adapter.length > 1) throw new VeraError('--adapter: one adapter folder with --prompt (named NAME=DIR ones go with --prompts)');
      const prompt0 = o.prompt!;
      const { doSample, temperature } = samplingFlags(o);
      if (o.stop?.some((s) => s === '')) throw new VeraError('--stop: a stop string must not be empty');
      if (o.numBeams > 1 && doSample) throw new VeraError('--num-beams > 1 is beam search, which does not sample; drop --temperature/--top-k/--top-p');
      if (o.numBeams > 1 && o.stop?.length) throw new VeraError('--stop is for greedy search and sampling, not --num-beams > 1');
      const allowNonFinite = o.allowNonFinite ?? false;
      const loaded = loadPretrained(o.model, { allowNonFinite, weights: o.weights, doubleQuant: o.doubleQuant });
      const model = loaded.model;
      if (!isCausalLM(model)) throw new VeraError(`${o.model}: generate needs a causal language model, this is a ${loaded.modelType}`);
      if (o.adapter.length === 1) PeftModel.fromPretrained(model, o.adapter[0], { allowNonFinite });
      const tokenizer = await loadTokenizer(o.model);
      if (tokenizer === null) throw new VeraError(`${o.model}: no tokenizer.json (generate needs the model's tokenizer)`);
      const eos = eosTokenIds(o.model, model);
      const toIds = chatEncoder(o, tokenizer, eos);
      const prompt = toIds(prompt0);
      const stream = generateAsync(model, prompt, {
        maxNewTokens: o.maxNewTokens,
        doSample,
        temperature,
        topK: o.topK,
        topP: o.topP,
        seed: o.seed,
        eosTokenIds: eos,
        stopStrings: o.stop,
        numBeams: o.numBeams,
        lengthPenalty: o.lengthPenalty,
        noRepeatNgramSize: o.noRepeatNgramSize,
        decode: (ids) => tokenizer.decode(ids),
      });
      let result: GenerationResult;
      let streamed = '';
      for (;;) {
        const next = await stream.next();
        if (next.done) {
          result = next.value;
          break;
        }
        if (!o.json && next.value.text !== '') {
          process.stdout.write(next.value.text);
          streamed += next.value.text;
        }
      }
      const text = result.text ?? '';
      if (o.json) console.log(JSON.stringify({ prompt_tokens: prompt, tokens: result.tokens, text, finish_reason: result.finishReason }));
      // a character left incomplete by the last token was held back; print what it decodes to
      else process.stdout.write(`${text.startsWith(streamed) ? text.slice(streamed.length) : ''}\n`);
    });
}
