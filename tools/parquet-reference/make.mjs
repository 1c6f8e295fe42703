// Writes tests/PpoSharp.Tests/ParquetData/: Parquet files written by DuckDB from the JSON Lines twins beside them, so
// that the C# reader can be checked against a writer nobody here wrote. Run: npm install && node make.mjs
import { DuckDBInstance } from '@duckdb/node-api';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const out = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'tests', 'PpoSharp.Tests', 'ParquetData');
const msg = (role, content) => ({ role, content });

// name -> { columns: DuckDB types (so lists and structs are typed, not JSON), rows }
const sets = {
  prompts: {
    columns: { messages: 'STRUCT(role VARCHAR, content VARCHAR)[]', solution: 'VARCHAR[]', answer: 'VARCHAR', id: 'BIGINT' },
    rows: [
      { messages: [msg('system', 'Be brief.'), msg('user', 'sort: cab')], solution: ['abc'], answer: 'abc', id: 1 },
      { messages: [msg('user', 'sort: ba')], solution: ['ab', 'a b'], answer: null, id: 2 },
      { messages: [msg('user', 'What is 6 × 7? Ünïcödé 😀')], solution: null, answer: '#### 42', id: 3 },
      { messages: [msg('user', 'quote " and \\ backslash\nnew line')], solution: ['x'], answer: '', id: 4 },
    ],
  },
  'prompt-completion': {
    columns: { prompt: 'VARCHAR', completion: 'VARCHAR' },
    rows: [{ prompt: 'The sky is', completion: ' blue.' }, { prompt: '2 + 2 =', completion: ' 4' }],
  },
  preference: {
    columns: { prompt: 'STRUCT(role VARCHAR, content VARCHAR)[]', chosen: 'STRUCT(role VARCHAR, content VARCHAR)[]', rejected: 'STRUCT(role VARCHAR, content VARCHAR)[]' },
    rows: [{ prompt: [msg('user', 'sort: ba')], chosen: [msg('assistant', 'ab')], rejected: [msg('assistant', 'ba')] }],
  },
  'wrong-types': {
    columns: { messages: 'STRUCT(role VARCHAR, content VARCHAR)[]', solution: 'INTEGER' },
    rows: [{ messages: [msg('user', 'q')], solution: 42 }],
  },
};

mkdirSync(out, { recursive: true });
const db = await DuckDBInstance.create(':memory:');
const con = await db.connect();
for (const [name, { columns, rows }] of Object.entries(sets)) {
  const jsonl = join(out, `${name}.jsonl`);
  writeFileSync(jsonl, rows.map(r => JSON.stringify(r)).join('\n') + '\n');
  const spec = '{' + Object.entries(columns).map(([k, t]) => `'${k}': '${t}'`).join(', ') + '}';
  await con.run(`COPY (SELECT * FROM read_json('${jsonl}', format = 'newline_delimited', columns = ${spec})) TO '${join(out, name + '.parquet')}' (FORMAT parquet)`);
}

// A Hugging Face dataset folder as `huggingface-cli download --repo-type dataset` leaves one: data/<split>-NNNNN-of-NNNNN.parquet
const gsm = (q, a) => ({ question: q, answer: a });
const shards = {
  'train-00000-of-00002': [gsm('Ana has 3 boxes of 12 eggs and breaks 5. How many eggs are left?', '3 * 12 = <<3*12=36>>36 eggs. 36 - 5 = <<36-5=31>>31.\n#### 31')],
  'train-00001-of-00002': [gsm('Tom reads 20 pages a day for 7 days. How many pages?', '20 * 7 = <<20*7=140>>140\n#### 140'), gsm('A pen costs $2. How much are 1,500 pens?', '2 * 1500 = 3000\n#### 3,000')],
  'test-00000-of-00001': [gsm('Sue has 10 apples and eats 4. How many are left?', '10 - 4 = 6\n#### 6')],
};
mkdirSync(join(out, 'gsm8k', 'data'), { recursive: true });
for (const [shard, rows] of Object.entries(shards)) {
  const jsonl = join(out, 'gsm8k', `${shard}.jsonl`);
  writeFileSync(jsonl, rows.map(r => JSON.stringify(r)).join('\n') + '\n');
  await con.run(`COPY (SELECT * FROM read_json('${jsonl}', format = 'newline_delimited', columns = {'question': 'VARCHAR', 'answer': 'VARCHAR'})) TO '${join(out, 'gsm8k', 'data', shard + '.parquet')}' (FORMAT parquet)`);
}
console.log(`wrote ${out}`);
