// The official OpenAI Node SDK against nsa-server's OpenAI-compatible API (real process,
// loopback, port 0, the tiny model, an API key): completions and chat, streaming and not, the
// usage chunk, n > 1, stop, seed reproducibility, logprobs, and API errors surfacing as the SDK's
// exception classes with their status codes.
//   NSA_SERVER=build/server/nsa-server NSA_MODEL=build/tests/models/tiny node --test openai_sdk_test.mjs
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import OpenAI from 'openai';

const KEY = 'sk-test-key';
let server;
let client;
let baseURL;

before(async () => {
  server = spawn(process.env.NSA_SERVER, ['--model', process.env.NSA_MODEL, '--host', '127.0.0.1', '--grpc-port', '0',
    '--metrics-port', '0', '--http-port', '0', '--api-key', `${KEY},second-key`, '--seed', '3'],
  { stdio: ['ignore', 'pipe', 'inherit'] });
  const lines = createInterface({ input: server.stdout });
  const port = await new Promise((resolve, reject) => {
    server.on('exit', (code) => reject(new Error(`nsa-server exited with ${code}`)));
    lines.on('line', (line) => {
      const m = line.match(/ http 127\.0\.0\.1:(\d+) ready$/);
      if (m) resolve(Number(m[1]));
    });
  });
  baseURL = `http://127.0.0.1:${port}/v1`;
  client = new OpenAI({ apiKey: KEY, baseURL, maxRetries: 0 });
});

after(async () => {
  const exited = new Promise((resolve) => server.on('exit', resolve));
  server.kill('SIGTERM');
  assert.equal(await exited, 0);
});

test('models lists the served model with root and max_model_len', async () => {
  const models = await client.models.list();
  assert.equal(models.data.length, 1);
  assert.equal(models.data[0].id, 'tiny');
  assert.equal(models.data[0].root, 'tiny');
  assert.equal(models.data[0].max_model_len, 4096);
});

test('completion, non-streaming and streaming give the same text', async () => {
  const params = { model: 'tiny', prompt: 'Permission is hereby granted', max_tokens: 20, temperature: 0 };
  const whole = await client.completions.create(params);
  assert.equal(whole.object, 'text_completion');
  assert.equal(whole.choices[0].finish_reason, 'length');
  assert.equal(whole.usage.completion_tokens, 20);
  assert.equal(whole.usage.total_tokens, whole.usage.prompt_tokens + 20);
  const stream = await client.completions.create({ ...params, stream: true });
  let text = '';
  let finish = null;
  const ids = new Set();
  for await (const chunk of stream) {
    ids.add(chunk.id);
    text += chunk.choices[0]?.text ?? '';
    finish = chunk.choices[0]?.finish_reason ?? finish;
  }
  assert.equal(text, whole.choices[0].text);
  assert.equal(finish, 'length');
  assert.equal(ids.size, 1, 'one id through the stream');
});

test('chat, streaming with the usage chunk last', async () => {
  const messages = [{ role: 'system', content: 'You are terse.' }, { role: 'user', content: 'Say something.' }];
  const whole = await client.chat.completions.create({ model: 'tiny', messages, max_tokens: 12, temperature: 0 });
  assert.equal(whole.object, 'chat.completion');
  assert.equal(whole.choices[0].message.role, 'assistant');
  const stream = await client.chat.completions.create({
    model: 'tiny', messages, max_tokens: 12, temperature: 0, stream: true, stream_options: { include_usage: true },
  });
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  assert.equal(chunks[0].choices[0].delta.role, 'assistant');
  const last = chunks[chunks.length - 1];
  assert.deepEqual(last.choices, []);
  assert.equal(last.usage.completion_tokens, 12);
  for (const c of chunks.slice(0, -1)) assert.equal(c.usage, null);
  const text = chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('');
  assert.equal(text, whole.choices[0].message.content);
  assert.equal(chunks[chunks.length - 2].choices[0].finish_reason, 'length');
});

test('n > 1 gives n choices', async () => {
  const r = await client.completions.create({ model: 'tiny', prompt: 'Hello', max_tokens: 8, n: 3, seed: 5, temperature: 1 });
  assert.deepEqual(r.choices.map((c) => c.index).sort(), [0, 1, 2]);
  assert.equal(r.usage.completion_tokens, 24);
});

test('a seed reproduces; another seed differs', async () => {
  const params = { model: 'tiny', prompt: 'The license', max_tokens: 16, temperature: 1, seed: 1234 };
  const a = await client.completions.create(params);
  const b = await client.completions.create(params);
  const c = await client.completions.create({ ...params, seed: 99 });
  assert.equal(a.choices[0].text, b.choices[0].text);
  assert.notEqual(a.choices[0].text, c.choices[0].text);
});

test('stop strings end the text before the stop', async () => {
  const free = await client.completions.create({ model: 'tiny', prompt: 'THE SOFTWARE', max_tokens: 30, temperature: 0 });
  const text = free.choices[0].text;
  const stop = text.slice(6, 9);
  const r = await client.completions.create({ model: 'tiny', prompt: 'THE SOFTWARE', max_tokens: 30, temperature: 0, stop: [stop] });
  assert.equal(r.choices[0].finish_reason, 'stop');
  assert.equal(r.choices[0].text, text.slice(0, text.indexOf(stop)));
});

test('logprobs: completions and chat', async () => {
  const r = await client.completions.create({ model: 'tiny', prompt: 'Hello', max_tokens: 4, temperature: 0, logprobs: 2 });
  const lp = r.choices[0].logprobs;
  assert.equal(lp.tokens.length, 4);
  assert.equal(lp.token_logprobs.length, 4);
  assert.equal(Object.keys(lp.top_logprobs[0]).length, 2);
  const chat = await client.chat.completions.create({
    model: 'tiny', messages: [{ role: 'user', content: 'Hi' }], max_tokens: 3, temperature: 0, logprobs: true, top_logprobs: 2,
  });
  const content = chat.choices[0].logprobs.content;
  assert.equal(content.length, 3);
  assert.equal(content[0].top_logprobs.length, 2);
  assert.ok(content[0].logprob <= 0);
});

test('errors arrive as the SDK exception classes', async () => {
  await assert.rejects(client.completions.create({ model: 'tiny', prompt: 'x', max_tokens: 5, temperature: -1 }),
    (e) => e instanceof OpenAI.BadRequestError && e.status === 400 && /temperature/.test(e.message));
  await assert.rejects(client.completions.create({ model: 'tiny', prompt: 'x', max_tokens: 100000 }),
    (e) => e instanceof OpenAI.BadRequestError && e.code === 'context_length_exceeded' &&
      /This model's maximum context length is 4096 tokens/.test(e.message));
  await assert.rejects(client.completions.create({ model: 'gpt-9', prompt: 'x', max_tokens: 5 }),
    (e) => e instanceof OpenAI.NotFoundError && e.status === 404);
  const wrong = new OpenAI({ apiKey: 'sk-wrong', baseURL, maxRetries: 0 });
  await assert.rejects(wrong.models.list(), (e) => e instanceof OpenAI.AuthenticationError && e.status === 401);
  const second = new OpenAI({ apiKey: 'second-key', baseURL, maxRetries: 0 });
  assert.equal((await second.models.list()).data[0].id, 'tiny');
});
