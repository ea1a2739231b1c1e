// AutoTokenizer: a model folder's tokenizer, loaded as the Auto model loaders load its model (a
// missing file is a one-line error, not null), with the folder's chat template attached, as
// transformers' tokenizers carry `chat_template`.
import { fs, path } from '../io/node.js';
import { readJsonFile } from '../io/atomic.js';
import { fail } from '../io/errors.js';
import { isFileSource, readJson, sourcePath, type FileSource } from '../io/source.js';
import { createTokenizer, readTokenizerConfig, readTokenizerConfigFrom, TOKENIZER_FILE, type Tokenizer } from './tokenizer.js';
import { chatTemplateFromConfig, hasChatTemplate, loadChatTemplate, loadChatTemplateFrom, type ChatMessage, type ChatTemplate } from './chat-template.js';

/** A Tokenizer with the chat template of the folder (or config) it came from. */
export interface PretrainedTokenizer extends Tokenizer {
  /** tokenizer_config.json's `chat_template` (or chat_template.jinja), compiled; null when there is none. */
  readonly chatTemplate: ChatTemplate | null;
  /**
   * The prompt text of a conversation through the chat template (transformers'
   * `apply_chat_template(messages, tokenize=False)`; `addGenerationPrompt` defaults to true). Throws a
   * one-line error when there is no template.
   */
  applyChatTemplate(messages: readonly ChatMessage[], opts?: { addGenerationPrompt?: boolean }): string;
}

function withTemplate(tokenizer: Tokenizer, template: ChatTemplate | null, where: string): PretrainedTokenizer {
  return Object.assign(tokenizer, {
    chatTemplate: template,
    applyChatTemplate(messages: readonly ChatMessage[], opts: { addGenerationPrompt?: boolean } = {}): string {
      if (template === null) fail(`${where}: has no chat template (no "chat_template" in tokenizer_config.json, no chat_template.jinja)`);
      return template.render(messages, opts);
    },
  });
}

/**
 * Tokenizers from a local Hugging Face folder (`tokenizer.json`, with `tokenizer_config.json` and
 * `special_tokens_map.json` when present). Loading is asynchronous (it resolves a Promise) because
 * the tokenizer library is imported on first use, which keeps it out of programs that never
 * tokenize; everything else about it matches the model loaders: a missing or invalid file is a
 * one-line `VeraError` naming it.
 */
export const AutoTokenizer = {
  /**
   * Loads `dir/tokenizer.json`; rejects with `<dir>/tokenizer.json: not found …` when the folder has
   * none. `dir` is a local folder (Node) or a FileSource (a URL, a page's files).
   */
  async fromPretrained(dir: string | FileSource): Promise<PretrainedTokenizer> {
    if (isFileSource(dir)) {
      const file = sourcePath(dir, TOKENIZER_FILE);
      const json = await readJson(dir, TOKENIZER_FILE, 'tokenizer');
      if (json === null) fail(`${file}: not found (is ${dir.label} a model folder with its tokenizer?)`);
      const config = await readTokenizerConfigFrom(dir);
      const tokenizer = await createTokenizer(json, config, file);
      return withTemplate(tokenizer, await loadChatTemplateFrom(dir, config), dir.label);
    }
    const file = path.join(dir, TOKENIZER_FILE);
    if (!fs.existsSync(file)) fail(`${file}: not found (is ${dir} a model folder with its tokenizer?)`);
    const config = readTokenizerConfig(dir);
    const tokenizer = await createTokenizer(readJsonFile(file, 'tokenizer'), config, file);
    return withTemplate(tokenizer, hasChatTemplate(dir) ? loadChatTemplate(dir) : null, dir);
  },
  /**
   * A tokenizer from parsed `tokenizer.json` contents and, optionally, `tokenizer_config.json`'s
   * (special tokens, model_max_length, padding side, chat_template).
   */
  async fromJson(tokenizerJson: unknown, tokenizerConfig: Record<string, unknown> = {}): Promise<PretrainedTokenizer> {
    const tokenizer = await createTokenizer(tokenizerJson, tokenizerConfig, TOKENIZER_FILE);
    const template = chatTemplateFromConfig(tokenizerConfig, 'tokenizer config');
    return withTemplate(tokenizer, template, 'tokenizer config');
  },
} as const;
