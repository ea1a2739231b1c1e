// OpenAI fine-tuning JSONL → token ids and labels for causal-LM training. Two formats, one per file:
//   {"messages": [{"role": "system"|"user"|"assistant", "content": "…"}, …]}  loss on assistant messages
//   {"prompt": "…", "completion": "…"}                                       loss on the completion (+ eos)
// A conversation is cut into segments that are tokenized one by one: untrained text (system and
// user turns, the template's "assistant header") and trained spans (each assistant message through
// its end-of-turn marker). Tokenizing the text before an assistant message on its own is what the
// server does with a chat prompt, so training sees the same ids the model continues from at
// inference. With a chat template the spans come from rendering prefixes of the conversation
// (transformers' apply_chat_template); without one the plain format the server also uses
// (chat-template.ts plainChatTemplate: `role: content\n` lines, the reply after `assistant:`), the
// reply followed by the eos token so the model learns to stop.
import { path } from '../io/node.js';
import { fail } from '../io/errors.js';
import { hasChatTemplate, loadChatTemplate, type ChatMessage, type ChatTemplate } from './chat-template.js';
import { IGNORE_INDEX, encodeCut } from './jsonl.js';
import { loadTokenizer, type Tokenizer } from './tokenizer.js';

export const CHAT_ROLES = ['system', 'user', 'assistant'] as const;
export type ChatRole = (typeof CHAT_ROLES)[number];

/** One training example: ids and, aligned with them, the label of each position (IGNORE_INDEX: not trained). */
export interface TrainingExample {
  /** 1-based line of the file. */
  line: number;
  ids: Int32Array;
  labels: Int32Array;
  /** Positions t ≥ 1 whose label is trained (the loss terms of this example). */
  targets: number;
  /** Cut to the maximum length. */
  truncated: boolean;
}

export interface ChatDataOptions {
  tokenizer: Pick<Tokenizer, 'encode' | 'file'>;
  /** The model folder's chat template, or null for the plain `role: content\n` rendering. */
  template: ChatTemplate | null;
  /** Examples are cut to this many tokens (the model's context). */
  maxLength: number;
  /** Token ids must lie in [0, vocabSize). */
  vocabSize: number;
  /** Ends a completion and a plain-rendered assistant message (trained, so the model learns to stop); null: none. */
  eosTokenId: number | null;
}

export interface TrainingData {
  format: 'chat' | 'completion';
  examples: TrainingExample[];
  /** Tokens over all examples (after truncation). */
  tokens: number;
  /** Trained positions over all examples. */
  targets: number;
  /** Examples cut to maxLength. */
  truncated: number;
}

/** A chat message of a training example; `weight` 0 keeps an assistant message out of the loss (OpenAI's field). */
interface ParsedMessage extends ChatMessage {
  role: ChatRole;
  weight: number;
}

/** A piece of an example: text to tokenize, or ids as they are; `train`: its tokens are labels. */
interface Segment {
  text?: string;
  ids?: number[];
  train: boolean;
}

const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);


/**
 * The options for a model folder and its loaded model: its tokenizer.json (required), its chat
 * template when it has one, its context length and first eos id.
 */
export async function chatDataOptions(
  modelDir: string,
  model: { readonly contextLength: number | null; readonly eosTokenIds: readonly number[]; readonly config: { readonly vocabSize: number } },
  maxLength?: number,
): Promise<ChatDataOptions> {
  const tokenizer = await loadTokenizer(modelDir);
  if (tokenizer === null) fail(`${modelDir}: fine-tuning needs a tokenizer.json in the model folder`);
  const vocabSize = model.config.vocabSize;
  const context = model.contextLength ?? Infinity;
  const length = Math.min(maxLength ?? Infinity, context);
  if (!Number.isFinite(length)) fail(`${modelDir}: the model has no context length; give a maximum sequence length`);
  return {
    tokenizer,
    template: hasChatTemplate(modelDir) ? loadChatTemplate(modelDir) : null,
    maxLength: length,
    vocabSize,
    eosTokenId: model.eosTokenIds.find((id) => id >= 0 && id < vocabSize) ?? null,
  };
}

/**
 * Parses and tokenizes a training file. Every problem is one VeraError naming the file id and line:
 * "training_file file-abc line 3: messages[1].role must be one of system, user, assistant".
 */
export function parseTrainingData(text: string, fileId: string, opts: ChatDataOptions): TrainingData {
  if (!(Number.isInteger(opts.maxLength) && opts.maxLength >= 2)) fail(`training_file ${fileId}: the model's context (${opts.maxLength} tokens) is too short to train on`);
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  const lines = text.split('\n');
  const data: TrainingData = { format: 'chat', examples: [], tokens: 0, targets: 0, truncated: 0 };
  let format: TrainingData['format'] | null = null;
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i];
    if (raw.trim() === '') continue;
    const line = i + 1;
    const where = `training_file ${fileId} line ${line}`;
    let obj: unknown;
    try {
      obj = JSON.parse(raw);
    } catch {
      fail(`${where}: invalid JSON`);
    }
    if (!isObject(obj)) fail(`${where}: expected a JSON object with "messages" (or "prompt" and "completion")`);
    const lineFormat: TrainingData['format'] = 'messages' in obj ? 'chat' : 'prompt' in obj || 'completion' in obj ? 'completion' : fail(`${where}: expected "messages" (or "prompt" and "completion")`);
    if (format !== null && lineFormat !== format) {
      fail(`${where}: a ${lineFormat === 'chat' ? '"messages"' : '"prompt"/"completion"'} example in a file of ${format === 'chat' ? '"messages"' : '"prompt"/"completion"'} examples (one format per file)`);
    }
    format = lineFormat;
    const segments = lineFormat === 'chat' ? chatSegments(parseMessages(obj, where), opts, where) : completionSegments(obj, opts, where);
    const ex = tokenizeSegments(segments, opts, where, line);
    data.examples.push(ex);
    data.tokens += ex.ids.length;
    data.targets += ex.targets;
    if (ex.truncated) data.truncated++;
  }
  if (data.examples.length === 0) fail(`training_file ${fileId}: no examples (the file is empty)`);
  data.format = format ?? 'chat';
  return data;
}

/** parseTrainingData for checking a file before a job is queued: the counts, not the examples. */
export function validateTrainingData(text: string, fileId: string, opts: ChatDataOptions): Omit<TrainingData, 'examples'> & { examples: number } {
  const d = parseTrainingData(text, fileId, opts);
  return { format: d.format, examples: d.examples.length, tokens: d.tokens, targets: d.targets, truncated: d.truncated };
}

function parseMessages(obj: Record<string, unknown>, where: string): ParsedMessage[] {
  const messages = obj['messages'];
  if (!Array.isArray(messages) || messages.length === 0) fail(`${where}: "messages" must be a non-empty array`);
  return messages.map((m: unknown, j): ParsedMessage => {
    const at = `messages[${j}]`;
    if (!isObject(m)) fail(`${where}: ${at} must be an object with "role" and "content"`);
    const role = m['role'];
    if (typeof role !== 'string' || !(CHAT_ROLES as readonly string[]).includes(role)) fail(`${where}: ${at}.role must be one of ${CHAT_ROLES.join(', ')}`);
    const content = messageContent(m['content'], `${where}: ${at}.content`);
    const weight = m['weight'] ?? 1;
    if (weight !== 0 && weight !== 1) fail(`${where}: ${at}.weight must be 0 or 1`);
    if (weight === 0 && role !== 'assistant') fail(`${where}: ${at}.weight applies to assistant messages only`);
    return { role: role as ChatRole, content, weight };
  });
}

/** A string, or OpenAI's list of content parts of which only text parts are accepted here. */
function messageContent(v: unknown, where: string): string {
  if (typeof v === 'string') return v;
  if (Array.isArray(v) && v.every((p) => isObject(p) && p['type'] === 'text' && typeof p['text'] === 'string')) {
    return v.map((p) => (p as { text: string }).text).join('');
  }
  fail(`${where} must be a string (or a list of {"type": "text", "text": …} parts)`);
}

function chatSegments(messages: ParsedMessage[], opts: ChatDataOptions, where: string): Segment[] {
  const trained = messages.flatMap((m, j) => (m.role === 'assistant' && m.weight !== 0 ? [j] : []));
  if (trained.length === 0) fail(`${where}: no assistant message to train on (the loss covers assistant messages only)`);
  // messages after the last trained reply would only be context for nothing: left out
  const used = messages.slice(0, trained.at(-1)! + 1);
  return opts.template === null ? plainSegments(used, opts) : templateSegments(used, opts.template, where);
}

function plainSegments(messages: ParsedMessage[], opts: ChatDataOptions): Segment[] {
  const out: Segment[] = [];
  for (const m of messages) {
    if (m.role !== 'assistant' || m.weight === 0) {
      out.push({ text: `${m.role}: ${m.content}\n`, train: false });
      continue;
    }
    // plainChatTemplate's generation prompt ends at "assistant:", so the reply is " content"
    out.push({ text: 'assistant:', train: false });
    if (opts.eosTokenId !== null) out.push({ text: ` ${m.content}`, train: true }, { ids: [opts.eosTokenId], train: true }, { text: '\n', train: false });
    else out.push({ text: ` ${m.content}\n`, train: true }); // no eos: the newline ends the reply
  }
  return out;
}

/** Spans through the chat template: reply i starts where the prompt for it ends and ends where the conversation through it ends. */
function templateSegments(messages: ParsedMessage[], template: ChatTemplate, where: string): Segment[] {
  const plain = messages.map(({ role, content }) => ({ role, content }));
  const full = template.render(plain, { addGenerationPrompt: false });
  const out: Segment[] = [];
  let at = 0;
  messages.forEach((m, j) => {
    if (m.role !== 'assistant' || m.weight === 0) return;
    const startText = template.render(plain.slice(0, j), { addGenerationPrompt: true });
    const endText = template.render(plain.slice(0, j + 1), { addGenerationPrompt: false });
    const start = startText.length;
    if (!full.startsWith(startText) || !full.startsWith(endText) || start < at || endText.length <= start) {
      fail(`${where}: the chat template of ${path.basename(template.file)} does not render the conversation before messages[${j}] as a prefix of the whole one, so the assistant reply cannot be located`);
    }
    if (start > at) out.push({ text: full.slice(at, start), train: false });
    out.push({ text: full.slice(start, endText.length), train: true });
    at = endText.length;
  });
  return out;
}

function completionSegments(obj: Record<string, unknown>, opts: ChatDataOptions, where: string): Segment[] {
  const prompt = obj['prompt'];
  const completion = obj['completion'];
  if (typeof prompt !== 'string') fail(`${where}: "prompt" must be a string`);
  if (typeof completion !== 'string') fail(`${where}: "completion" must be a string`);
  if (completion === '' && opts.eosTokenId === null) fail(`${where}: "completion" is empty: nothing to train on`);
  const out: Segment[] = [{ text: prompt, train: false }, { text: completion, train: true }];
  if (opts.eosTokenId !== null) out.push({ ids: [opts.eosTokenId], train: true });
  return out;
}

function tokenizeSegments(segments: Segment[], opts: ChatDataOptions, where: string, line: number): TrainingExample {
  const ids: number[] = [];
  const labels: number[] = [];
  // a chat template writes the bos token itself (apply_chat_template encodes without special
  // tokens); plain text gets the tokenizer's own (Llama's <s>) once, at the start
  let first = opts.template === null;
  for (const s of segments) {
    let piece: number[];
    if (s.ids !== undefined) piece = s.ids;
    else if (s.text === '') piece = [];
    else {
      const addSpecialTokens = first;
      // only maxLength tokens can be kept: a huge segment is cut before it is encoded
      piece = encodeCut((t) => opts.tokenizer.encode(t, { addSpecialTokens }), s.text!, opts.maxLength);
      first = false;
    }
    for (const id of piece) {
      if (!(Number.isInteger(id) && id >= 0 && id < opts.vocabSize)) fail(`${where}: ${path.basename(opts.tokenizer.file)} gave token id ${id}, outside the model's vocabulary [0, ${opts.vocabSize})`);
      ids.push(id);
      labels.push(s.train ? id : IGNORE_INDEX);
    }
  }
  const truncated = ids.length > opts.maxLength;
  const n = Math.min(ids.length, opts.maxLength);
  let targets = 0;
  for (let t = 1; t < n; t++) if (labels[t] !== IGNORE_INDEX) targets++;
  if (targets === 0) {
    const firstTrained = labels.findIndex((l) => l !== IGNORE_INDEX);
    const why = firstTrained < 0 ? 'the trained text tokenizes to nothing' : truncated ? `the text to train on starts at token ${firstTrained}, beyond the model's context of ${opts.maxLength} tokens` : 'the text to train on starts at the first token, which nothing predicts';
    fail(`${where}: no token to train on (${why})`);
  }
  return { line, ids: Int32Array.from(ids.slice(0, n)), labels: Int32Array.from(labels.slice(0, n)), targets, truncated };
}
