// Chat prompts as transformers' `apply_chat_template`: the `chat_template` of a model folder's
// tokenizer_config.json (Jinja) rendered with @huggingface/jinja, the implementation transformers.js
// uses, given the messages, `add_generation_prompt` and the special tokens.
import { fs, path } from '../io/node.js';
import { Template } from '@huggingface/jinja';
import { fail } from '../io/errors.js';
import { TOKENIZER_CONFIG_FILE, readTokenizerConfig, readTokenizerConfigFrom } from './tokenizer.js';
import { readText, sourcePath, type FileSource } from '../io/source.js';

export interface ChatMessage {
  role: string;
  content: string;
}

export interface ChatTemplate {
  /** The tokenizer_config.json it came from (for messages). */
  readonly file: string;
  readonly bosToken: string | null;
  readonly eosToken: string | null;
  /** The prompt text for `messages`; with `addGenerationPrompt` it ends where the assistant's reply begins. */
  render(messages: readonly ChatMessage[], opts?: { addGenerationPrompt?: boolean }): string;
}

export const CHAT_TEMPLATE_FILE = 'chat_template.jinja';
const SPECIAL_TOKEN_FIELDS = ['bos_token', 'eos_token', 'unk_token', 'pad_token', 'sep_token', 'cls_token', 'mask_token'] as const;

/** A special token as tokenizer_config.json writes it: a string or an AddedToken object with `content`. */
function tokenText(value: unknown, field: string, file: string): string | null {
  if (value === undefined || value === null) return null;
  if (typeof value === 'string') return value;
  if (typeof value === 'object' && typeof (value as { content?: unknown }).content === 'string') return (value as { content: string }).content;
  fail(`${file}: field "${field}" must be a string or an object with "content"`);
}

/** The template text: a string, or a list of {name, template} from which "default" is taken. */
function templateText(value: unknown, file: string): string {
  if (typeof value === 'string') return value;
  if (Array.isArray(value)) {
    const named = value.find((t: unknown) => (t as { name?: unknown })?.name === 'default') as { template?: unknown } | undefined;
    if (named && typeof named.template === 'string') return named.template;
    fail(`${file}: field "chat_template" is a list without a "default" template`);
  }
  fail(`${file}: field "chat_template" must be a string or a list of named templates`);
}

/** Compiles a chat template; `specialTokens` are bos_token, eos_token, … as the template sees them. */
export function compileChatTemplate(source: string, specialTokens: Record<string, string | null>, file: string): ChatTemplate {
  let template: Template;
  try {
    template = new Template(source);
  } catch (e) {
    fail(`${file}: chat_template does not parse: ${(e as Error)?.message ?? String(e)}`);
  }
  return {
    file,
    bosToken: specialTokens['bos_token'] ?? null,
    eosToken: specialTokens['eos_token'] ?? null,
    render(messages, opts = {}) {
      const context: Record<string, unknown> = {
        messages: messages.map((m) => ({ role: m.role, content: m.content })),
        add_generation_prompt: opts.addGenerationPrompt ?? true,
      };
      for (const [k, v] of Object.entries(specialTokens)) if (v !== null) context[k] = v;
      try {
        return template.render(context);
      } catch (e) {
        // includes the templates' own raise_exception('…'), which refuses a conversation
        fail(`${file}: chat_template failed to render: ${(e as Error)?.message ?? String(e)}`);
      }
    },
  };
}

/** The special tokens of a tokenizer config as a chat template sees them (bos_token, eos_token, …). */
function specialTokensOf(config: Record<string, unknown>, file: string): Record<string, string | null> {
  const specialTokens: Record<string, string | null> = {};
  for (const field of SPECIAL_TOKEN_FIELDS) specialTokens[field] = tokenText(config[field], field, file);
  return specialTokens;
}

/**
 * The chat template a tokenizer config holds (tokenizer_config.json's contents, its "chat_template"),
 * compiled; null when it has none. `file` names the config in messages.
 */
export function chatTemplateFromConfig(config: Record<string, unknown>, file: string): ChatTemplate | null {
  if (config['chat_template'] === undefined || config['chat_template'] === null) return null;
  return compileChatTemplate(templateText(config['chat_template'], file), specialTokensOf(config, file), file);
}

/** Loads the chat template of a model folder (from tokenizer_config.json); a one-line error when there is none. */
export function loadChatTemplate(dir: string): ChatTemplate {
  const file = path.join(dir, TOKENIZER_CONFIG_FILE);
  // the special tokens may be only in special_tokens_map.json, as transformers also reads it
  const config = readTokenizerConfig(dir);
  const inConfig = chatTemplateFromConfig(config, file);
  if (inConfig !== null) return inConfig;
  // newer transformers save the template beside the config
  const jinjaFile = path.join(dir, CHAT_TEMPLATE_FILE);
  if (fs.existsSync(jinjaFile)) return compileChatTemplate(fs.readFileSync(jinjaFile, 'utf8'), specialTokensOf(config, file), jinjaFile);
  fail(`${file}: has no "chat_template" (and there is no ${CHAT_TEMPLATE_FILE}): this model has no chat format`);
}

/**
 * The chat template of a FileSource's folder (tokenizer_config.json's, else chat_template.jinja's),
 * or null when it has none.
 */
export async function loadChatTemplateFrom(source: FileSource, config?: Record<string, unknown>): Promise<ChatTemplate | null> {
  const file = sourcePath(source, TOKENIZER_CONFIG_FILE);
  const cfg = config ?? (await readTokenizerConfigFrom(source));
  const inConfig = chatTemplateFromConfig(cfg, file);
  if (inConfig !== null) return inConfig;
  const jinja = await readText(source, CHAT_TEMPLATE_FILE);
  return jinja === null ? null : compileChatTemplate(jinja, specialTokensOf(cfg, file), sourcePath(source, CHAT_TEMPLATE_FILE));
}

/**
 * The chat format of a model folder without a chat template (GPT-2 and other base models): one
 * `role: content` line per message, and `assistant:` where the reply begins. Serving and
 * fine-tuning both use it, so an adapter trained on chats answers in the format it was taught.
 */
export function plainChatTemplate(file = 'plain chat format'): ChatTemplate {
  return {
    file,
    bosToken: null,
    eosToken: null,
    render(messages, opts = {}) {
      const lines = messages.map((m) => `${m.role}: ${m.content}\n`).join('');
      return (opts.addGenerationPrompt ?? true) ? `${lines}assistant:` : lines;
    },
  };
}

/** Whether a model folder has a chat template (tokenizer_config.json's chat_template or chat_template.jinja). */
export function hasChatTemplate(dir: string): boolean {
  const t = readTokenizerConfig(dir)['chat_template'];
  return (t !== undefined && t !== null) || fs.existsSync(path.join(dir, CHAT_TEMPLATE_FILE));
}

/** The folder's chat template when it has one, else the plain format. */
export function chatTemplateOrPlain(dir: string): ChatTemplate {
  return hasChatTemplate(dir) ? loadChatTemplate(dir) : plainChatTemplate();
}
