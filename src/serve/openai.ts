// The OpenAI API as the server speaks it: request bodies checked field by field (one line naming the
// field, as OpenAI's own 400s do), and the response, chunk and error objects its reference defines.
// Fields OpenAI has but we cannot honour (logprobs, tools, penalties) are refused rather than ignored,
// so a client never gets an answer that silently differs from what it asked for.
import type { ChatMessage } from '../data/chat-template.js';
import type { FinishReason } from '../models/index.js';

/** An error answered to the client: HTTP status and OpenAI's error object. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type: string = 'invalid_request_error',
    readonly param: string | null = null,
    readonly code: string | null = null,
  ) {
    super(message);
  }

  body(): { error: { message: string; type: string; param: string | null; code: string | null } } {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

export const badRequest = (param: string, message: string): ApiError => new ApiError(400, message, 'invalid_request_error', param);
export const notFound = (message: string, code: string | null = null, param: string | null = null): ApiError => new ApiError(404, message, 'invalid_request_error', param, code);
export const modelNotFound = (model: string): ApiError =>
  notFound(`The model \`${model}\` does not exist or you do not have access to it.`, 'model_not_found', 'model');

/** What the server allows one request (vera serve's flags). */
export interface RequestLimits {
  /** max_tokens at most; also the default when a request gives none (capped by the context). */
  maxTokens: number;
  /** n (choices per prompt) at most. */
  maxChoices: number;
  /** Prompts in one /v1/completions request at most. */
  maxPrompts: number;
}

export interface SamplingParams {
  /** null: as many as the limit and the context allow. */
  maxTokens: number | null;
  temperature: number;
  topP: number;
  /** vLLM's extension; 0 = off (OpenAI has no top_k). */
  topK: number;
  stop: string[];
  seed: number | null;
  n: number;
  stream: boolean;
  includeUsage: boolean;
}

export interface CompletionParams extends SamplingParams {
  model: string;
  /** Each prompt: text, or token ids. */
  prompts: (string | number[])[];
}

export interface ChatParams extends SamplingParams {
  model: string;
  messages: ChatMessage[];
}

type Json = Record<string, unknown>;

const isObject = (v: unknown): v is Json => v !== null && typeof v === 'object' && !Array.isArray(v);
const show = (v: unknown): string => {
  const s = JSON.stringify(v) ?? String(v);
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
};

/** Fields accepted and ignored: they change nothing we compute. */
const IGNORED = new Set(['user', 'metadata', 'store', 'service_tier', 'parallel_tool_calls']);

function checkFields(body: Json, known: readonly string[]): void {
  for (const k of Object.keys(body)) {
    if (!known.includes(k) && !IGNORED.has(k)) throw badRequest(k, `Unrecognized request argument supplied: ${k}`);
  }
}

function optionalNumber(body: Json, field: string, lo: number, hi: number, loOpen = false): number | null {
  const v = body[field];
  if (v === undefined || v === null) return null;
  if (typeof v !== 'number' || !Number.isFinite(v) || (loOpen ? v <= lo : v < lo) || v > hi) {
    throw badRequest(field, `${field} must be a number in ${loOpen ? '(' : '['}${lo}, ${hi}], got ${show(v)}`);
  }
  return v;
}

function optionalInt(body: Json, field: string, lo: number, hi: number): number | null {
  const v = body[field];
  if (v === undefined || v === null) return null;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < lo || v > hi) throw badRequest(field, `${field} must be an integer in [${lo}, ${hi}], got ${show(v)}`);
  return v;
}

/** Fields we refuse unless they hold their no-op value. */
function refuseUnsupported(body: Json, fields: Record<string, (v: unknown) => boolean>): void {
  for (const [field, isNoOp] of Object.entries(fields)) {
    const v = body[field];
    if (v !== undefined && v !== null && !isNoOp(v)) throw badRequest(field, `${field} is not supported by this server`);
  }
}

const SAMPLING_FIELDS = ['model', 'max_tokens', 'temperature', 'top_p', 'top_k', 'stop', 'seed', 'n', 'stream', 'stream_options', 'presence_penalty', 'frequency_penalty', 'logit_bias', 'logprobs'];

function samplingParams(body: Json, limits: RequestLimits, maxTokensField: 'max_tokens' | 'max_completion_tokens'): SamplingParams {
  const maxTokens = optionalInt(body, maxTokensField, 1, Number.MAX_SAFE_INTEGER);
  if (maxTokens !== null && maxTokens > limits.maxTokens) throw badRequest(maxTokensField, `${maxTokensField} must be at most ${limits.maxTokens} on this server, got ${maxTokens}`);
  const temperature = optionalNumber(body, 'temperature', 0, 2) ?? 1;
  const topP = optionalNumber(body, 'top_p', 0, 1, true) ?? 1;
  const topK = optionalInt(body, 'top_k', -1, 1_000_000) ?? 0;
  const n = optionalInt(body, 'n', 1, limits.maxChoices) ?? 1;
  const seed = optionalInt(body, 'seed', Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER);
  let stop: string[] = [];
  const s = body['stop'];
  if (typeof s === 'string') stop = [s];
  else if (Array.isArray(s)) stop = s as string[];
  else if (s !== undefined && s !== null) throw badRequest('stop', `stop must be a string or a list of up to 4 strings, got ${show(s)}`);
  if (stop.length > 4 || !stop.every((x) => typeof x === 'string' && x !== '')) throw badRequest('stop', 'stop must be a string or a list of up to 4 non-empty strings');
  const stream = body['stream'];
  if (stream !== undefined && stream !== null && typeof stream !== 'boolean') throw badRequest('stream', `stream must be a boolean, got ${show(stream)}`);
  const so = body['stream_options'];
  let includeUsage = false;
  if (so !== undefined && so !== null) {
    if (stream !== true) throw badRequest('stream_options', "The 'stream_options' parameter is only allowed when 'stream' is enabled.");
    if (!isObject(so)) throw badRequest('stream_options', 'stream_options must be an object');
    for (const k of Object.keys(so)) if (k !== 'include_usage') throw badRequest(`stream_options.${k}`, `Unrecognized request argument supplied: stream_options.${k}`);
    const iu = so['include_usage'];
    if (iu !== undefined && iu !== null && typeof iu !== 'boolean') throw badRequest('stream_options.include_usage', 'stream_options.include_usage must be a boolean');
    includeUsage = iu === true;
  }
  refuseUnsupported(body, {
    presence_penalty: (v) => v === 0,
    frequency_penalty: (v) => v === 0,
    logit_bias: (v) => isObject(v) && Object.keys(v).length === 0,
    logprobs: (v) => v === false,
  });
  return { maxTokens, temperature, topP, topK: topK < 0 ? 0 : topK, stop, seed, n, stream: stream === true, includeUsage };
}

function modelField(body: Json): string {
  const model = body['model'];
  if (typeof model !== 'string' || model === '') throw badRequest('model', 'model must be a non-empty string (the base model or an adapter id)');
  return model;
}

function requireObject(body: unknown): Json {
  if (!isObject(body)) throw badRequest('body', 'the request body must be a JSON object');
  return body;
}

/** POST /v1/completions: prompt is text, a list of texts, token ids, or a list of token-id lists. */
export function parseCompletionRequest(raw: unknown, limits: RequestLimits, vocabSize: number): CompletionParams {
  const body = requireObject(raw);
  checkFields(body, [...SAMPLING_FIELDS, 'prompt', 'echo', 'best_of', 'suffix']);
  refuseUnsupported(body, { echo: (v) => v === false, best_of: (v) => v === 1 || v === body['n'], suffix: (v) => v === '' });
  const model = modelField(body);
  const p = body['prompt'];
  let prompts: (string | number[])[];
  const isIds = (v: unknown): v is number[] => Array.isArray(v) && v.length > 0 && v.every((x) => typeof x === 'number');
  if (typeof p === 'string') prompts = [p];
  else if (isIds(p)) prompts = [p];
  else if (Array.isArray(p) && p.length > 0 && p.every((x) => typeof x === 'string')) prompts = p as string[];
  else if (Array.isArray(p) && p.length > 0 && p.every(isIds)) prompts = p as number[][];
  else throw badRequest('prompt', 'prompt must be a string, a list of strings, a list of token ids, or a list of token-id lists (none empty)');
  if (prompts.length > limits.maxPrompts) throw badRequest('prompt', `at most ${limits.maxPrompts} prompts per request, got ${prompts.length}`);
  prompts.forEach((q, i) => {
    if (typeof q === 'string') return;
    const bad = q.findIndex((t) => !Number.isInteger(t) || t < 0 || t >= vocabSize);
    if (bad >= 0) throw badRequest('prompt', `prompt${prompts.length > 1 ? `[${i}]` : ''}[${bad}]: token id ${show(q[bad])} is not in [0, ${vocabSize})`);
  });
  return { model, prompts, ...samplingParams(body, limits, 'max_tokens') };
}

const CHAT_ROLES = ['system', 'developer', 'user', 'assistant'];

/** POST /v1/chat/completions: text messages (string content or text parts). */
export function parseChatRequest(raw: unknown, limits: RequestLimits): ChatParams {
  const body = requireObject(raw);
  checkFields(body, [...SAMPLING_FIELDS, 'messages', 'max_completion_tokens', 'top_logprobs', 'tools', 'tool_choice', 'functions', 'function_call', 'response_format', 'modalities']);
  refuseUnsupported(body, {
    top_logprobs: (v) => v === 0,
    tools: (v) => Array.isArray(v) && v.length === 0,
    tool_choice: (v) => v === 'none',
    functions: (v) => Array.isArray(v) && v.length === 0,
    function_call: (v) => v === 'none',
    response_format: (v) => isObject(v) && v['type'] === 'text',
    modalities: (v) => Array.isArray(v) && v.every((m) => m === 'text'),
  });
  const model = modelField(body);
  if (body['max_tokens'] !== undefined && body['max_tokens'] !== null && body['max_completion_tokens'] !== undefined && body['max_completion_tokens'] !== null) {
    throw badRequest('max_tokens', 'give max_tokens or max_completion_tokens, not both');
  }
  const sampling = samplingParams(body, limits, body['max_completion_tokens'] !== undefined && body['max_completion_tokens'] !== null ? 'max_completion_tokens' : 'max_tokens');
  const list = body['messages'];
  if (!Array.isArray(list) || list.length === 0) throw badRequest('messages', 'messages must be a non-empty list');
  const messages = list.map((m: unknown, i): ChatMessage => {
    const where = `messages[${i}]`;
    if (!isObject(m)) throw badRequest(where, `${where} must be an object with role and content`);
    const role = m['role'];
    if (typeof role !== 'string' || !CHAT_ROLES.includes(role)) {
      throw badRequest(`${where}.role`, `${where}.role must be one of ${CHAT_ROLES.join(', ')}, got ${show(role)}${role === 'tool' ? ' (tools are not supported)' : ''}`);
    }
    if (m['tool_calls'] !== undefined || m['function_call'] !== undefined) throw badRequest(`${where}.tool_calls`, 'tool calls are not supported by this server');
    const c = m['content'];
    let content: string;
    if (typeof c === 'string') content = c;
    else if (Array.isArray(c)) {
      content = c
        .map((part: unknown, j) => {
          if (!isObject(part) || part['type'] !== 'text' || typeof part['text'] !== 'string') {
            throw badRequest(`${where}.content[${j}]`, `${where}.content[${j}] must be a text part ({"type": "text", "text": ...}); images and audio are not supported`);
          }
          return part['text'];
        })
        .join('');
    } else throw badRequest(`${where}.content`, `${where}.content must be a string or a list of text parts`);
    // developer messages are OpenAI's newer name for system messages
    return { role: role === 'developer' ? 'system' : role, content };
  });
  return { model, messages, ...sampling };
}

/** OpenAI's finish_reason for the engine's. */
export function finishReason(r: FinishReason): 'stop' | 'length' {
  return r === 'eos' || r === 'stop_string' ? 'stop' : 'length';
}

/**
 * Text deltas with OpenAI's stop semantics: the stop string and what follows never reach the
 * client, so text that might begin a stop string is held back until the next token settles it.
 */
export class StopTrimmer {
  private text = '';
  private sent = 0;
  private stopped = false;
  private readonly hold: number;

  constructor(private readonly stop: readonly string[]) {
    this.hold = Math.max(0, ...stop.map((s) => s.length - 1));
  }

  /** Add a delta; returns what may be sent now. */
  push(delta: string): string {
    if (this.stopped) return '';
    this.text += delta;
    const cut = this.firstStop();
    if (cut >= 0) {
      this.stopped = true;
      return this.take(cut);
    }
    return this.take(Math.max(this.sent, this.text.length - this.hold));
  }

  /** The rest once generation ended. */
  end(): string {
    if (this.stopped) return '';
    const cut = this.firstStop();
    return this.take(cut >= 0 ? cut : this.text.length);
  }

  private firstStop(): number {
    let at = -1;
    for (const s of this.stop) {
      const i = this.text.indexOf(s);
      if (i >= 0 && (at < 0 || i < at)) at = i;
    }
    return at;
  }

  private take(upTo: number): string {
    const out = this.text.slice(this.sent, upTo);
    this.sent = Math.max(this.sent, upTo);
    return out;
  }
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

export const usage = (prompt: number, completion: number): Usage => ({ prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion });
