// openai_check.mjs - the official openai client against gkrun serve, for
// tests/test_serve.c: runs the requests it is given and prints what came back.
//
//   node openai_check.mjs BASE_URL CASES_JSON [--concurrent]
//
// CASES_JSON is an array of {kind: "chat" | "completion", stream, prompt |
// messages, max_tokens, seed, temperature, stop}. Prints one JSON array, each
// entry {text, finish_reason, usage, chunks} (chunks: how many streamed
// chunks carried text; usage from the last chunk when streaming). The
// expected values are not here: the C test compares them to gkrun's output.
import OpenAI from "openai";

const [base, casesJson, mode] = process.argv.slice(2);
const cases = JSON.parse(casesJson);
const client = new OpenAI({ baseURL: base + "/v1", apiKey: process.env.GK_SERVE_KEY || "none", maxRetries: 0 });

function fields(c) {
    const f = { model: "kjv-demo", max_tokens: c.max_tokens };
    for (const k of ["seed", "temperature", "stop", "top_p", "top_k"])
        if (c[k] !== undefined) f[k] = c[k];
    return f;
}

async function one(c) {
    const f = fields(c);
    if (c.kind === "chat") {
        f.messages = c.messages;
        if (!c.stream) {
            const r = await client.chat.completions.create(f);
            return { text: r.choices[0].message.content, finish_reason: r.choices[0].finish_reason, usage: r.usage };
        }
        const s = await client.chat.completions.create({ ...f, stream: true, stream_options: { include_usage: true } });
        let text = "", finish = null, usage = null, chunks = 0;
        for await (const ch of s) {
            if (ch.usage) usage = ch.usage;
            if (!ch.choices.length) continue;
            const d = ch.choices[0].delta?.content;
            if (d) { text += d; chunks++; }
            if (ch.choices[0].finish_reason) finish = ch.choices[0].finish_reason;
        }
        return { text, finish_reason: finish, usage, chunks };
    }
    f.prompt = c.prompt;
    if (!c.stream) {
        const r = await client.completions.create(f);
        return { text: r.choices[0].text, finish_reason: r.choices[0].finish_reason, usage: r.usage };
    }
    const s = await client.completions.create({ ...f, stream: true, stream_options: { include_usage: true } });
    let text = "", finish = null, usage = null, chunks = 0;
    for await (const ch of s) {
        if (ch.usage) usage = ch.usage;
        if (!ch.choices.length) continue;
        if (ch.choices[0].text) { text += ch.choices[0].text; chunks++; }
        if (ch.choices[0].finish_reason) finish = ch.choices[0].finish_reason;
    }
    return { text, finish_reason: finish, usage, chunks };
}

let out;
if (mode === "--concurrent") {
    out = await Promise.all(cases.map(one));
} else {
    out = [];
    for (const c of cases) out.push(await one(c));
}
process.stdout.write(JSON.stringify(out) + "\n");
