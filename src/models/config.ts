// Config readers live in io/ (shared with PEFT configs).
export { ConfigReader, asJsonObject, type JsonObject } from '../io/config-reader.js';
