// The slice of the WebAssembly JavaScript API this backend uses, typed here: the project compiles
// against ES2022 and Node's types, which declare the WebAssembly namespace without its members.
export interface WasmMemory {
  readonly buffer: ArrayBuffer;
}
export type WasmModule = object;
export interface WasmInstance {
  readonly exports: Record<string, unknown>;
}
export type WasmImports = Record<string, Record<string, (...args: never[]) => unknown>>;
export interface WasmModuleImport {
  module: string;
  name: string;
  kind: string;
}
export interface WasmApi {
  Module: { new (bytes: ArrayBuffer | Uint8Array): WasmModule; imports(m: WasmModule): WasmModuleImport[] };
  Instance: new (m: WasmModule, imports: WasmImports) => WasmInstance;
  compile(bytes: ArrayBuffer | Uint8Array): Promise<WasmModule>;
  instantiate(m: WasmModule, imports: WasmImports): Promise<WasmInstance>;
}

export const WA = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;
