// Reference ids for PpoSharp's character tokenizer as Hugging Face files.
//
//   cd tools/reference && npm ci && node char-expected.mjs
//
// Reads tests/PpoSharp.Tests/HfData/char/ (tokenizer.json and tokenizer_config.json, as
// CharTokenizer.Save writes them; CharTokenizerTests checks that Save still writes these
// bytes), loads it with transformers.js (@huggingface/transformers: tokenizers from
// @huggingface/tokenizers, chat template with @huggingface/jinja), and writes
// tests/PpoSharp.Tests/HfData/reference/char.json: for each string the ids of
// encode(text, {add_special_tokens: false}) and encode(text), decode(ids) with and without
// skip_special_tokens; for each chat apply_chat_template's text and ids. Offline.

import { AutoTokenizer, env } from '@huggingface/transformers';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { toJson } from './json-out.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const dataDir = path.join(here, '..', '..', 'tests', 'PpoSharp.Tests', 'HfData');
const fixture = path.join(dataDir, 'char');

const stage = fs.mkdtempSync(path.join(os.tmpdir(), 'ppo-char-ref-'));
fs.cpSync(fixture, path.join(stage, 'local', 'char'), { recursive: true });
env.allowRemoteModels = false;
env.allowLocalModels = true;
env.useFSCache = false;
env.localModelPath = stage + path.sep;
const tok = await AutoTokenizer.from_pretrained('local/char');

// The fixture's alphabet is "abcdehlnorwxy 2+4?\n\t.日本😀é" plus U+0301 (combining acute) and U+200D (ZWJ).
const STRINGS = [
    { label: 'plain', text: 'hello world' },
    { label: 'whitespace and newlines', text: ' a\n\nb\tc  d. ' },
    { label: 'precomposed accent', text: 'héllo' },
    { label: 'combining accent (no normalisation)', text: 'he\u0301llo' },
    { label: 'CJK with an unknown character', text: '日本語' },
    { label: 'astral emoji, one known and one unknown', text: 'x😀y🙂' },
    { label: 'ZWJ sequence of known and unknown emoji', text: '😀\u200D👩\u200D😀' },
    { label: 'unknown capitals and symbols', text: 'HELLO € 100%' },
    { label: 'the unknown symbol itself', text: 'a\uFFFDb' },
    { label: 'role tokens', text: '<|system|>be brief<|end|><|user|>2+2?<|end|><|assistant|>4<|end|><|pad|>' },
    { label: 'partial role token', text: '<|user hello |>' },
];

const CHATS = [
    {
        messages: [
            { role: 'system', content: 'be clear' },
            { role: 'user', content: '2+2?' },
            { role: 'assistant', content: '4.' },
        ],
        add_generation_prompt: false,
    },
    { messages: [{ role: 'user', content: 'hello 😀\nworld 🙂' }], add_generation_prompt: true },
];

const version = (p) =>
    JSON.parse(fs.readFileSync(path.join(here, 'node_modules', ...p.split('/'), 'package.json'), 'utf8')).version;
const out = {
    generator: `tools/reference/char-expected.mjs with @huggingface/transformers@${version('@huggingface/transformers')} `
        + `@huggingface/tokenizers@${version('@huggingface/tokenizers')} @huggingface/jinja@${version('@huggingface/jinja')}`,
    strings: STRINGS.map(({ label, text }) => {
        const ids = tok.encode(text, { add_special_tokens: false });
        return {
            label, text, ids,
            ids_with_special: tok.encode(text),
            decoded: tok.decode(ids, { skip_special_tokens: true }),
            decoded_with_special: tok.decode(ids),
        };
    }),
    chats: CHATS.map((c) => {
        const opts = { add_generation_prompt: c.add_generation_prompt };
        return {
            ...c,
            text: tok.apply_chat_template(c.messages, { ...opts, tokenize: false }),
            ids: tok.apply_chat_template(c.messages, { ...opts, tokenize: true, return_tensor: false, return_dict: false }),
        };
    }),
};

// Checks that hold whatever PpoSharp does: one id per character, U+FFFD for what is unknown.
const unk = tok.convert_tokens_to_ids(['\uFFFD'])[0];
if (unk !== 0 || !out.strings.some((s) => s.ids.includes(0))) throw new Error(`unknown id ${unk}, expected 0 and used`);
const plain = out.strings[0];
if (plain.ids.length !== [...plain.text].length) throw new Error('plain text is not one id per character');

fs.writeFileSync(path.join(dataDir, 'reference', 'char.json'), toJson(out) + '\n');
fs.rmSync(stage, { recursive: true, force: true });
console.log(`char: ${out.strings.length} strings, ${out.chats.length} chats -> HfData/reference/char.json`);
