#!/usr/bin/env node
// serve_rss.mjs - does gkrun serve's memory stay flat over many requests?
// Sends --count short requests (max_tokens 1; chat and completions, streamed
// and not, a few with errors) from --concurrency clients and prints the
// server's VmRSS (/proc/PID/status) every --every requests (docs/serve.md).
//
//   node tools/serve_rss.mjs --pid PID [--url http://127.0.0.1:8080] [--count 10000]
//        [--concurrency 8] [--every 1000]
//
// Loopback only. Exit 1 when a request gets an unexpected status.
import { readFileSync } from "node:fs";

const args = process.argv.slice(2);
const opt = (n, d) => { const i = args.indexOf(n); return i >= 0 && i + 1 < args.length ? args[i + 1] : d; };
const url = opt("--url", "http://127.0.0.1:8080").replace(/\/$/, "");
const pid = Number(opt("--pid", "0")), count = Number(opt("--count", "10000"));
const conc = Number(opt("--concurrency", "8")), every = Number(opt("--every", "1000"));
const host = new URL(url).hostname;
if (!/^127\.\d+\.\d+\.\d+$/.test(host) && host !== "localhost") {
    console.error("serve_rss: loopback only");
    process.exit(2);
}
if (!Number.isInteger(pid) || pid < 1 || !(count >= 1 && count <= 1000000)) {
    console.error("serve_rss: --pid PID of the server is required; --count 1 to 1000000");
    process.exit(2);
}
const rss = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))[1]);

const kinds = [
    ["/v1/completions", { prompt: "In the beginning", max_tokens: 1 }, 200],
    ["/v1/completions", { prompt: "And God said", max_tokens: 1, stream: true }, 200],
    ["/v1/chat/completions", { messages: [{ role: "user", content: "Blessed" }], max_tokens: 1 }, 200],
    ["/v1/chat/completions", { messages: [{ role: "user", content: "Then" }], max_tokens: 1, stream: true,
                               stream_options: { include_usage: true }, logprobs: true, top_logprobs: 3 }, 200],
    ["/v1/completions", { prompt: 7 }, 400],
];
let sent = 0, bad = 0;
const samples = [[0, rss()]];
console.log(`requests  VmRSS_kB`);
console.log(`${String(0).padStart(8)}  ${samples[0][1]}`);
async function worker() {
    while (sent < count) {
        const k = kinds[sent % kinds.length];
        const i = ++sent;
        const res = await fetch(url + k[0], { method: "POST", headers: { "Content-Type": "application/json" },
                                              body: JSON.stringify(k[1]) });
        await res.text();
        if (res.status !== k[2]) bad++;
        if (i % every === 0) {
            const v = rss();
            samples.push([i, v]);
            console.log(`${String(i).padStart(8)}  ${v}`);
        }
    }
}
await Promise.all(Array.from({ length: conc }, worker));
const after1k = samples.find((s) => s[0] >= Math.min(count, 1000))[1], last = samples[samples.length - 1][1];
console.log(`start ${samples[0][1]} kB, after ${Math.min(count, 1000)} requests ${after1k} kB, ` +
            `after ${count} ${last} kB (${last - after1k >= 0 ? "+" : ""}${last - after1k} kB since); ` +
            `${bad} unexpected statuses`);
process.exit(bad ? 1 : 0);
