// `vera generate`: text from a causal LM (GPT-2 or the Llama family), optionally with an adapter,
// streamed to stdout as it is produced. Greedy by default; --temperature, --top-k or --top-p sample;
// --num-beams > 1 is beam search (printed once it ends).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { InvalidArgumentError, type Command } from 'commander';
import { VeraError } from '../../io/errors.js';
import { readJsonFile } from '../../io/atomic.js';
import { loadPretrained, generateAsync, isCausalLM, type CausalLM, type GenerationResult } from '../../models/index.js';
import { PeftModel } from '../../peft/index.js';
import { loadTokenizer, type Tokenizer } from '../../data/tokenizer.js';
import { loadChatTemplate } from '../../data/chat-template.js';
import { finiteNumber, noRepeatNgramSizeOption, nonNegativeInt, nonNegativeNumber, positiveInt } from '../options.js';

interface GenerateFlags {
  model: string;
  adapter?: string;
  prompt: string;
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

/** eos ids as generation would use them: generation_config.json's when present (chat models list several), else config.json's. */
function eosTokenIds(dir: string, model: CausalLM): number[] {
  const file = path.join(dir, 'generation_config.json');
  if (!fs.existsSync(file)) return [...model.eosTokenIds];
  const json = readJsonFile(file, 'generation config') as Record<string, unknown> | null;
  const v = json?.['eos_token_id'];
  if (v === undefined || v === null) return [...model.eosTokenIds];
  const list = Array.isArray(v) ? v : [v];
  if (!list.every((id) => Number.isSafeInteger(id) && (id as number) >= 0)) throw new VeraError(`${file}: field "eos_token_id" must be a token id or a list of token ids`);
  return list as number[];
}

function samplingFlags(o: GenerateFlags): { doSample: boolean; temperature?: number } {
  const filters = o.topK !== undefined || o.topP !== undefined;
  if (o.temperature === 0 && filters) throw new VeraError(`${o.topK !== undefined ? '--top-k' : '--top-p'} samples, but --temperature 0 asks for greedy decoding; give --temperature > 0 or drop it`);
  const doSample = (o.temperature !== undefined && o.temperature > 0) || filters;
  return { doSample, temperature: doSample ? o.temperature ?? 1 : undefined };
}

export function registerGenerate(program: Command): void {
  program
    .command('generate')
    .description('generate text from a causal LM (GPT-2, Llama, Mistral, Qwen2), optionally with an adapter; streams to stdout')
    .requiredOption('--model <dir>', 'model folder (config.json, safetensors, tokenizer.json)')
    .option('--adapter <dir>', 'adapter folder (PEFT layout)')
    .requiredOption('--prompt <text>', 'the prompt (or the user message, with --chat)')
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
    .action(async (o: GenerateFlags) => {
      const { doSample, temperature } = samplingFlags(o);
      if (o.stop?.some((s) => s === '')) throw new VeraError('--stop: a stop string must not be empty');
      if (o.numBeams > 1 && doSample) throw new VeraError('--num-beams > 1 is beam search, which does not sample; drop --temperature/--top-k/--top-p');
      if (o.numBeams > 1 && o.stop?.length) throw new VeraError('--stop is for greedy search and sampling, not --num-beams > 1');
      const loaded = loadPretrained(o.model);
      const model = loaded.model;
      if (!isCausalLM(model)) throw new VeraError(`${o.model}: generate needs a causal language model, this is a ${loaded.modelType}`);
      if (o.adapter !== undefined) PeftModel.fromPretrained(model, o.adapter);
      const tokenizer = await loadTokenizer(o.model);
      if (tokenizer === null) throw new VeraError(`${o.model}: no tokenizer.json (generate needs the model's tokenizer)`);
      const eos = eosTokenIds(o.model, model);
      let promptText = o.prompt;
      if (o.chat) {
        const template = loadChatTemplate(o.model);
        promptText = template.render([{ role: 'user', content: o.prompt }], { addGenerationPrompt: true });
        // chat models end their turn with the tokenizer's eos token
        const turnEnd = template.eosToken === null ? null : tokenizer.tokenToId(template.eosToken);
        if (turnEnd !== null && !eos.includes(turnEnd)) eos.push(turnEnd);
      }
      const prompt = promptIds(tokenizer, promptText, o.chat ?? false);
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
