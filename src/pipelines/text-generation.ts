// Text in, text out: prompts (a string, a conversation through the chat template, or a list of
// them) become token ids, run through `generate` with its options, and come back as text with
// their finish reasons and token ids, or as a stream of text deltas. Prompts of a list run one after
// another, each exactly as `generate` would run it alone (same tokens, same seed); the
// multi-adapter engine (src/engine) is the way to decode many prompts at once.
import { fail } from '../io/errors.js';
import { isFileSource, type FileSource } from '../io/source.js';
import {
  AutoModelForCausalLM, generateAsync, generationEosTokenIds, generationEosTokenIdsFrom, isCausalLM,
  type CausalLM, type CausalLMModel, type FinishReason, type GenerationOptions, type LoadPretrainedOptions,
} from '../models/index.js';
import { PeftModel } from '../peft/index.js';
import { AutoTokenizer } from '../data/auto-tokenizer.js';
import type { Tokenizer } from '../data/tokenizer.js';
import type { ChatMessage, ChatTemplate } from '../data/chat-template.js';

/** One prompt: a text, or a conversation (rendered with the chat template, ready for the assistant's turn). */
export type TextGenerationInput = string | readonly ChatMessage[];

/** `generate`'s options (less `decode`, `onToken` and `rng`, which the generator provides), and how prompts and text are handled. */
export interface TextGenerationOptions extends Omit<GenerationOptions, 'decode' | 'onToken' | 'rng'> {
  /** Send a text prompt as one user message through the chat template (a conversation always goes through it). Default false. */
  chat?: boolean;
  /** Leave special tokens out of the text (transformers' skip_special_tokens). Default false, as `vera generate`. */
  skipSpecialTokens?: boolean;
}

export interface TextGenerationOutput {
  /** The prompt as the model saw it: the text, or the conversation rendered by the chat template. */
  prompt: string;
  /** Its token ids. */
  promptTokens: number[];
  /** The generated text only (not the prompt): no eos token, a stop string kept as transformers keeps it. */
  text: string;
  /** Generated token ids (a final eos included). */
  tokens: number[];
  /** 'eos', 'stop_string' or 'length' (the maxNewTokens budget). */
  finishReason: FinishReason;
}

export interface TextGeneratorOptions {
  /** Options every call starts from; a call's own options override them. */
  defaults?: TextGenerationOptions;
  /**
   * The chat template of conversations. Default: the tokenizer's (`AutoTokenizer` attaches its
   * folder's); null: conversations are refused.
   */
  chatTemplate?: ChatTemplate | null;
  /**
   * Token ids that end generation. Default: the model's config.json eos_token_id
   * (`TextGenerator.fromPretrained` reads generation_config.json's, as `vera generate`). With a chat
   * template, the template's eos token is added for conversations: chat models end their turn with it.
   */
  eosTokenIds?: readonly number[];
}

/** A causal LM, or a PeftModel (anything with a `model`) wrapping one: its active adapters run. */
export type TextGeneratorModel = CausalLM | { readonly model: CausalLM };
/** A tokenizer; `AutoTokenizer`'s also carries its folder's chat template. */
export type TextGeneratorTokenizer = Tokenizer & { readonly chatTemplate?: ChatTemplate | null };

const isMessage = (m: unknown): m is ChatMessage =>
  typeof m === 'object' && m !== null && typeof (m as ChatMessage).role === 'string' && typeof (m as ChatMessage).content === 'string';

/** Whether `input` is a list of prompts rather than one prompt (a text or a conversation). */
function isBatch(input: TextGenerationInput | readonly TextGenerationInput[]): input is readonly TextGenerationInput[] {
  if (typeof input === 'string') return false;
  if (input.length === 0) fail('TextGenerator: the input is an empty list (give a prompt, a conversation, or a list of them)');
  const first: unknown = input[0];
  return typeof first === 'string' || Array.isArray(first);
}

/**
 * Generates text from prompts with a causal LM and its tokenizer. Construct it from a loaded model
 * (or a PeftModel, whose active adapter then applies) and tokenizer, with `pipeline('text-generation',
 * …)`, or from a folder with `TextGenerator.fromPretrained`.
 */
export class TextGenerator {
  private readonly lm: CausalLM;
  private readonly template: ChatTemplate | null;
  private readonly eos: readonly number[];
  private readonly defaults: TextGenerationOptions;

  constructor(
    readonly model: TextGeneratorModel,
    readonly tokenizer: TextGeneratorTokenizer,
    opts: TextGeneratorOptions = {},
  ) {
    const lm = 'forward' in model ? model : model.model;
    // JavaScript callers get no type check: say what is wrong before the first prompt
    if (!isCausalLM(lm)) fail('TextGenerator: the model is not a causal language model (GPT-2 or the Llama family)');
    this.lm = lm;
    this.template = opts.chatTemplate !== undefined ? opts.chatTemplate : tokenizer.chatTemplate ?? null;
    this.eos = [...(opts.eosTokenIds ?? lm.eosTokenIds)];
    this.defaults = { ...opts.defaults };
  }

  /**
   * A generator for the model folder `dir`: the model (AutoModelForCausalLM), its tokenizer
   * (AutoTokenizer, so the folder must hold tokenizer.json), its chat template when it has one,
   * generation_config.json's eos ids, and with `adapter` a PEFT adapter folder applied.
   */
  static async fromPretrained(dir: string | FileSource, opts: LoadPretrainedOptions & TextGeneratorOptions & { adapter?: string | FileSource } = {}): Promise<TextGenerator> {
    if (isFileSource(dir)) {
      const model = await AutoModelForCausalLM.fromPretrained(dir, opts);
      const tokenizer = await AutoTokenizer.fromPretrained(dir);
      const eosTokenIds = opts.eosTokenIds ?? (await generationEosTokenIdsFrom(dir, model));
      const lm = opts.adapter === undefined ? model : await loadAdapterOnto(model, opts.adapter, opts.allowNonFinite);
      return new TextGenerator(lm, tokenizer, { ...opts, eosTokenIds });
    }
    const model = AutoModelForCausalLM.fromPretrained(dir, opts);
    const tokenizer = await AutoTokenizer.fromPretrained(dir);
    const eosTokenIds = opts.eosTokenIds ?? generationEosTokenIds(dir, model);
    const lm = opts.adapter === undefined ? model : await loadAdapterOnto(model, opts.adapter, opts.allowNonFinite);
    return new TextGenerator(lm, tokenizer, { ...opts, eosTokenIds });
  }

  /**
   * The prompt text and ids of `input`. A text is encoded with the tokenizer's special tokens (as
   * `tokenizer(text)`); a rendered conversation without them, since the template writes its own
   * (as transformers' apply_chat_template).
   */
  encodePrompt(input: TextGenerationInput, opts: { chat?: boolean } = {}): { prompt: string; ids: number[] } {
    const chat = typeof input !== 'string' || (opts.chat ?? this.defaults.chat ?? false);
    let prompt: string;
    if (chat) {
      const messages = typeof input === 'string' ? [{ role: 'user', content: input }] : input;
      if (messages.length === 0 || !messages.every(isMessage)) fail('TextGenerator: a conversation is a non-empty list of {role, content} messages with string fields');
      prompt = this.chatTemplate().render(messages, { addGenerationPrompt: true });
    } else prompt = input as string;
    const ids = this.tokenizer.encode(prompt, { addSpecialTokens: !chat });
    const vocab = this.lm.config.vocabSize;
    const bad = ids.find((id) => !(Number.isInteger(id) && id >= 0 && id < vocab));
    if (bad !== undefined) fail(`TextGenerator: ${this.tokenizer.file} gave token id ${bad}, outside the model's vocabulary [0, ${vocab}) (is it this model's tokenizer?)`);
    return { prompt, ids };
  }

  /**
   * Generates after one prompt, or after each prompt of a list (one after another, each as it would
   * run alone; results in input order). Decoding is greedy unless `doSample`; `seed` (default 0)
   * makes sampling reproducible, and every prompt of a list starts from it.
   */
  generate(input: TextGenerationInput, opts?: TextGenerationOptions): Promise<TextGenerationOutput>;
  generate(inputs: readonly TextGenerationInput[], opts?: TextGenerationOptions): Promise<TextGenerationOutput[]>;
  async generate(input: TextGenerationInput | readonly TextGenerationInput[], opts: TextGenerationOptions = {}): Promise<TextGenerationOutput | TextGenerationOutput[]> {
    if (!isBatch(input)) return this.drain(this.run(input, opts));
    const out: TextGenerationOutput[] = [];
    for (const one of input) out.push(await this.drain(this.run(one, opts)));
    return out;
  }

  /**
   * The generated text of one prompt as it is produced: each value is a non-empty text delta, and
   * the deltas concatenate to the final `text`, which the iterator returns with the rest of the
   * output (`for await` ignores it; call `next()` to get it). The event loop runs between tokens.
   */
  stream(input: TextGenerationInput, opts: TextGenerationOptions = {}): AsyncGenerator<string, TextGenerationOutput> {
    return this.run(input, opts);
  }

  private chatTemplate(): ChatTemplate {
    if (this.template === null) fail(`TextGenerator: chat input needs a chat template; ${this.tokenizer.file}'s folder has none (pass chatTemplate, or give the prompt as text)`);
    return this.template;
  }

  private async drain(steps: AsyncGenerator<string, TextGenerationOutput>): Promise<TextGenerationOutput> {
    for (;;) {
      const next = await steps.next();
      if (next.done) return next.value;
    }
  }

  private async *run(input: TextGenerationInput, callOpts: TextGenerationOptions): AsyncGenerator<string, TextGenerationOutput> {
    const o: TextGenerationOptions = { ...this.defaults, ...callOpts };
    const chat = typeof input !== 'string' || (o.chat ?? false);
    const { prompt, ids } = this.encodePrompt(input, { chat });
    const eos = [...(o.eosTokenIds ?? this.eos)];
    if (chat) {
      // chat models end their turn with the tokenizer's eos token (Qwen2's <|im_end|>), which config.json may not list
      const eosToken = this.template?.eosToken ?? null;
      const turnEnd = eosToken === null ? null : this.tokenizer.tokenToId(eosToken);
      if (turnEnd !== null && !eos.includes(turnEnd)) eos.push(turnEnd);
    }
    const skipSpecialTokens = o.skipSpecialTokens ?? false;
    const stream = generateAsync(this.model, ids, {
      maxNewTokens: o.maxNewTokens,
      doSample: o.doSample,
      temperature: o.temperature,
      topK: o.topK,
      topP: o.topP,
      seed: o.seed,
      stopStrings: o.stopStrings,
      numBeams: o.numBeams,
      lengthPenalty: o.lengthPenalty,
      earlyStopping: o.earlyStopping,
      noRepeatNgramSize: o.noRepeatNgramSize,
      eosTokenIds: eos,
      decode: (t) => this.tokenizer.decode(t, { skipSpecialTokens }),
    });
    let streamed = '';
    for (;;) {
      const next = await stream.next();
      if (next.done) {
        const r = next.value;
        const text = r.text ?? '';
        // a character left incomplete by the last token was held back: hand out what it decodes to
        if (text.length > streamed.length && text.startsWith(streamed)) yield text.slice(streamed.length);
        return { prompt, promptTokens: ids, text, tokens: r.tokens, finishReason: r.finishReason };
      }
      if (next.value.text !== '') {
        streamed += next.value.text;
        yield next.value.text;
      }
    }
  }
}

/** The tasks `pipeline` builds. */
export type PipelineTask = 'text-generation';

/**
 * transformers' `pipeline(task, model, tokenizer)`: for 'text-generation', a `TextGenerator`
 * (`await generator.generate('Once upon a time')`). The model may be a PeftModel.
 */
export function pipeline(task: PipelineTask, model: TextGeneratorModel, tokenizer: TextGeneratorTokenizer, opts: TextGeneratorOptions = {}): TextGenerator {
  if (task !== 'text-generation') fail(`pipeline: unsupported task ${JSON.stringify(task)} (supported: text-generation)`);
  return new TextGenerator(model, tokenizer, opts);
}

/** A PEFT adapter (a local folder, or a FileSource) applied to `model` for inference. */
async function loadAdapterOnto(model: CausalLMModel, adapter: string | FileSource, allowNonFinite?: boolean): Promise<PeftModel<CausalLMModel>> {
  return isFileSource(adapter) ? PeftModel.fromPretrained(model, adapter, { allowNonFinite }) : PeftModel.fromPretrained(model, adapter, { allowNonFinite });
}
