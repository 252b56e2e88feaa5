#!/usr/bin/env node
// serve_bench.mjs - load benchmark for gkrun serve (docs/serve.md): N
// concurrent streaming clients, each sending a fixed mix of prompts and
// output lengths to /v1/completions; prints aggregate output tokens/s and
// the time to first token and time per output token (median, p99) for each N.
//
//   node tools/serve_bench.mjs [--url http://127.0.0.1:8080] [--clients 1,4,16,64]
//        [--requests 4] [--max-tokens 64] [--time-limit 120] [--api-key KEY]
//
// --requests: requests per client at each N; --time-limit: seconds per N
// after which no new request starts. Loopback only (the URL must name
// 127.0.0.0/8, ::1 or localhost). Requests use ignore_eos so every one
// produces its full length; a 429 (queue full) is counted and retried after
// 50 ms. Needs node 18 or later (fetch); no npm packages.

const args = process.argv.slice(2);
function opt(name, def) {
    const i = args.indexOf(name);
    return i >= 0 && i + 1 < args.length ? args[i + 1] : def;
}
const url = opt("--url", "http://127.0.0.1:8080").replace(/\/$/, "");
const clients = opt("--clients", "1,4,16,64").split(",").map(Number);
const perClient = Number(opt("--requests", "4"));
const maxTokens = Number(opt("--max-tokens", "64"));
const timeLimit = Number(opt("--time-limit", "120"));
const apiKey = opt("--api-key", null);

const host = new URL(url).hostname;
if (!(host === "localhost" || host === "[::1]" || host === "::1" || /^127\.\d+\.\d+\.\d+$/.test(host))) {
    console.error(`serve_bench: ${url} is not a loopback address; this benchmark only runs against the local machine`);
    process.exit(2);
}
for (const [k, v] of [["--requests", perClient], ["--max-tokens", maxTokens], ["--time-limit", timeLimit]])
    if (!Number.isInteger(v) || v < 1 || v > 100000) {
        console.error(`serve_bench: ${k} must be an integer from 1 to 100000`);
        process.exit(2);
    }
if (clients.some((n) => !Number.isInteger(n) || n < 1 || n > 1024)) {
    console.error("serve_bench: --clients takes integers from 1 to 1024, comma-separated");
    process.exit(2);
}

// The fixed mix: prompts of a few lengths, outputs of 1/4, 1/2 and all of --max-tokens.
const prompts = [
    "In the beginning",
    "And it came to pass in those days, that there went out a decree from Caesar Augustus",
    "Blessed are the poor in spirit: for theirs is the kingdom of heaven. Blessed are they that mourn: " +
        "for they shall be comforted. Blessed are the meek: for they shall inherit the earth.",
];
const lengths = [Math.max(1, maxTokens >> 2), Math.max(1, maxTokens >> 1), maxTokens];
const headers = { "Content-Type": "application/json" };
if (apiKey) headers.Authorization = `Bearer ${apiKey}`;

async function request(k) {
    const body = JSON.stringify({
        prompt: prompts[k % prompts.length], max_tokens: lengths[k % lengths.length], ignore_eos: true,
        stream: true, stream_options: { include_usage: true }, temperature: 0,
    });
    let rejected = 0;
    for (;;) {
        const t0 = performance.now();
        const res = await fetch(url + "/v1/completions", { method: "POST", headers, body });
        if (res.status === 429) {
            await res.text();
            rejected++;
            await new Promise((r) => setTimeout(r, 50));
            continue;
        }
        if (res.status !== 200) throw new Error(`HTTP ${res.status}: ${await res.text()}`);
        const dec = new TextDecoder();
        let buf = "", first = 0, last = 0, tokens = 0, chunks = 0;
        for await (const part of res.body) {
            buf += dec.decode(part, { stream: true });
            let i;
            while ((i = buf.indexOf("\n\n")) >= 0) {
                const ev = buf.slice(0, i);
                buf = buf.slice(i + 2);
                if (!ev.startsWith("data: ") || ev === "data: [DONE]") continue;
                const j = JSON.parse(ev.slice(6));
                if (j.usage) tokens = j.usage.completion_tokens;
                if (j.choices?.length && j.choices[0].finish_reason == null) {
                    const t = performance.now();
                    if (!first) first = t;
                    last = t;
                    chunks++;
                }
            }
        }
        return { ttft: (first - t0) / 1e3, tpot: tokens > 1 ? (last - first) / 1e3 / (tokens - 1) : null, tokens,
                 rejected };
    }
}

function pct(a, p) {
    if (!a.length) return NaN;
    const s = [...a].sort((x, y) => x - y);
    return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)];
}

const ms = (v) => (Number.isNaN(v) ? "-" : (1e3 * v).toFixed(1));
console.log(`serve_bench: ${url}, ${perClient} requests per client, prompts of ${prompts.length} lengths, ` +
            `outputs of ${lengths.join("/")} tokens (ignore_eos)`);
console.log("clients  requests  rejected(429)  out_tokens  seconds  out_tok/s  ttft_p50_ms  ttft_p99_ms  " +
            "tpot_p50_ms  tpot_p99_ms");
for (const n of clients) {
    const t0 = performance.now(), deadline = t0 + timeLimit * 1e3;
    const results = [];
    let next = 0;
    await Promise.all(Array.from({ length: n }, async (_, c) => {
        for (let r = 0; r < perClient && performance.now() < deadline; r++)
            results.push(await request(next++ + c));
    }));
    const secs = (performance.now() - t0) / 1e3;
    const tokens = results.reduce((s, r) => s + r.tokens, 0);
    const ttft = results.map((r) => r.ttft), tpot = results.filter((r) => r.tpot != null).map((r) => r.tpot);
    console.log([String(n).padStart(7), String(results.length).padStart(8),
                 String(results.reduce((s, r) => s + r.rejected, 0)).padStart(13), String(tokens).padStart(10),
                 secs.toFixed(2).padStart(7), (tokens / secs).toFixed(1).padStart(9),
                 ms(pct(ttft, 50)).padStart(11), ms(pct(ttft, 99)).padStart(11),
                 ms(pct(tpot, 50)).padStart(11), ms(pct(tpot, 99)).padStart(11)].join("  "));
}
