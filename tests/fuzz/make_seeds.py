#!/usr/bin/env python3
"""make_seeds.py - raw seed inputs for the fuzz harnesses, made from the test fixtures.

Usage: tests/fuzz/make_seeds.py OUT    (writes OUT/<harness>/<name>, run from anywhere)

The seeds are not the committed corpus: they are what a short fuzzing run
starts from before `-merge=1` keeps the inputs that add coverage (README.md
here). Made from tests/data (checkpoints, configs, tokenizers, chat golden),
models/kjv-demo and tools/tokenizer_extra_texts.json; checkpoints are cut to a
few small tensors and tokenizers to about 100 ids and 40 merges, so that seeds
stay small. Not here: anything that runs gk.
"""
import json
import lzma
import os
import struct
import sys

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
DATA = os.path.join(ROOT, "tests", "data")
DEMO = os.path.join(ROOT, "models", "kjv-demo")
SEP = b"\n\x01\x02\x03"                      # fuzz_tokenizer's separator
TOKENIZERS = ["gpt2", "llama2", "llama3", "qwen3", "gpt35turbo"]   # fuzz_encode's order, then the demo
MODELS = ["llama-tiny", "gpt2-tiny", "qwen3-tiny", "llama-tiny-f16-sharded"]  # fuzz_model_cfg's order
DTYPES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
          "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


def read(*parts):
    with open(os.path.join(*parts), "rb") as f:
        return f.read()


def compact(obj):
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


class Seeds:
    def __init__(self, out):
        self.out = out

    def put(self, harness, name, data):
        d = os.path.join(self.out, harness)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)


# ------------------------------------------------------------- safetensors

def shrunk(path, max_tensors=5):
    """A fixture's header cut to a few tensors with dims of at most 2, its data
    the first bytes of each original tensor; returns (header_json, data)."""
    raw = read(path)
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    body = raw[8 + n:]
    out, data = {}, b""
    if "__metadata__" in header:
        out["__metadata__"] = header["__metadata__"]
    names = [k for k in header if k != "__metadata__"][:max_tensors]
    for k in names:
        t = header[k]
        shape = [min(s, 2) for s in t["shape"]]
        count = 1
        for s in shape:
            count *= s
        size = count * DTYPES[t["dtype"]]
        begin = t["data_offsets"][0]
        out[k] = {"dtype": t["dtype"], "shape": shape, "data_offsets": [len(data), len(data) + size]}
        data += body[begin:begin + size]
    return compact(out), data


def safetensors_file(header, data):
    return struct.pack("<Q", len(header)) + header + data


def checkpoint_seeds(s):
    files = []
    for m in sorted(os.listdir(os.path.join(DATA, "models"))):
        for f in sorted(os.listdir(os.path.join(DATA, "models", m))):
            if f.endswith(".safetensors"):
                files.append((m + "-" + f, os.path.join(DATA, "models", m, f)))
    files.append(("kjv-demo-model.safetensors", os.path.join(DEMO, "model.safetensors")))
    for name, path in files:
        header, data = shrunk(path)
        s.put("safetensors", name, safetensors_file(header, data))
        s.put("st_header", name, struct.pack("<H", len(data)) + header)
    # one tensor of every dtype, a scalar and an empty tensor
    header, data = {"__metadata__": {"format": "pt"}}, b""
    for i, (dt, size) in enumerate(DTYPES.items()):
        header["t%d.%s" % (i, dt.lower())] = {"dtype": dt, "shape": [2, 1],
                                             "data_offsets": [len(data), len(data) + 2 * size]}
        data += bytes(range(1, 2 * size + 1))
    header["scalar"] = {"dtype": "F32", "shape": [], "data_offsets": [len(data), len(data) + 4]}
    data += struct.pack("<f", 1.5)
    header["empty"] = {"dtype": "F16", "shape": [0, 4], "data_offsets": [len(data), len(data)]}
    s.put("safetensors", "every-dtype", safetensors_file(compact(header), data))
    s.put("st_header", "every-dtype", struct.pack("<H", len(data)) + compact(header))


def index_seeds(s):
    real = read(DATA, "models", "llama-tiny-f16-sharded", "model.safetensors.index.json")
    s.put("index", "llama-tiny-f16-sharded", real)
    idx = json.loads(real)
    names = sorted(idx["weight_map"])
    s.put("index", "no-metadata", compact({"weight_map": idx["weight_map"]}))
    s.put("index", "odd-shards", compact({"metadata": {"format": "pt"}, "weight_map": {
        names[0]: "adir.safetensors", names[1]: "junk.safetensors", names[2]: "missing.safetensors",
        names[3]: idx["weight_map"][names[3]]}}))
    s.put("index", "empty", b'{"weight_map":{}}')


# ------------------------------------------------------------------ configs

def config_seeds(s):
    dirs = [os.path.join(DATA, "configs", d) for d in sorted(os.listdir(os.path.join(DATA, "configs")))]
    dirs += [os.path.join(DATA, "models", m) for m in MODELS] + [DEMO]
    for d in dirs:
        cfg = read(d, "config.json")
        gen = os.path.join(d, "generation_config.json")
        blob = cfg + b"\0" + read(gen) if os.path.exists(gen) else cfg
        s.put("config", os.path.basename(d), blob)
    gen = read(DEMO, "generation_config.json")
    for i, m in enumerate(MODELS):
        cfg = read(DATA, "models", m, "config.json")
        s.put("model_cfg", m, bytes([i]) + cfg)
        s.put("model_cfg", m + "-gen", bytes([i]) + cfg + b"\0" + gen)


# --------------------------------------------------------------- tokenizers

def trimmed(tok, keep=64, n_merges=40, max_added=8):
    """tokenizer.json with the ids below keep, the first n_merges merges with
    their pieces, and a few added tokens; normalizer, pre-tokenizer,
    post-processor and decoder as they are. Most words then miss a piece, so
    the unknown-character paths get exercised as well as the merges."""
    model = tok["model"]
    full = model["vocab"]
    vocab = {k: v for k, v in full.items() if v < keep}
    merges = []
    for m in model["merges"]:
        a, b = m.split(" ", 1) if isinstance(m, str) else m
        if len(merges) < n_merges and all(x in full for x in (a, b, a + b)):
            merges.append(m)
            vocab.update({x: full[x] for x in (a, b, a + b)})
    model = dict(model, vocab=vocab, merges=merges)
    return dict(tok, model=model, added_tokens=tok["added_tokens"][:max_added])


def texts():
    extra = json.loads(read(ROOT, "tools", "tokenizer_extra_texts.json"))["texts"]
    golden = []
    for t in TOKENIZERS:
        golden += [c["text"] for c in json.loads(read(DATA, "tokenizers", t, "golden.json"))["cases"]]
    seen, out = set(), []
    for x in golden + extra:
        if x not in seen and len(x.encode()) <= 512:
            seen.add(x)
            out.append(x)
    return out


def tokenizer_seeds(s):
    all_texts = texts()
    files = [(t, json.loads(lzma.open(os.path.join(DATA, "tokenizers", t, "tokenizer.json.xz")).read()),
              os.path.join(DATA, "tokenizers", t, "tokenizer_config.json")) for t in TOKENIZERS]
    files.append(("kjv-demo", json.loads(read(DEMO, "tokenizer.json")), os.path.join(DEMO, "tokenizer_config.json")))
    for i, (name, tok, cfg_path) in enumerate(files):
        small = compact(trimmed(tok))
        s.put("tokenizer", name, small)
        text = all_texts[i % len(all_texts)].encode()
        s.put("tokenizer", name + "-text", small + SEP + text)
        if os.path.exists(cfg_path):
            cfg = json.loads(read(cfg_path))
            cfg = {k: v for k, v in cfg.items() if k in ("bos_token", "eos_token", "add_bos_token")}
            s.put("tokenizer", name + "-config", small + SEP + text + SEP + compact(cfg))
        # encode: every text through this tokenizer, flags varied
        for j, x in enumerate(all_texts):
            if j % len(files) == i or len(x) < 40:
                s.put("encode", "%s-%03d" % (name, j), bytes([i, j % 8]) + x.encode())


# -------------------------------------------------------------------- INI

def ini_seeds(s):
    inis = {
        "readme": "[plugins]\npath = /usr/lib/gk/plugins     ; extra folders\narch = gpt2, llama, qwen3\n"
                  "backends = cuda, cpu_ref\n[runtime]\nbackend = auto\n",
        "cpu-only": "; comment\n[plugins]\narch = llama\nbackends = cpu_ref\n[runtime]\nbackend = cpu_ref\n",
        "relative-path": "[plugins]\npath = ., sub, /nonexistent/gk-a\narch = qwen3\n",
        "runtime-only": "[runtime]\nbackend = cpu_ref\n",
        "unknown-key": "[plugins]\narch = llama\nbackend = cpu_ref\n",
        "empty": "",
    }
    for name, text in inis.items():
        s.put("ini", name, text.encode())


# ------------------------------------------------------------------- chat

def chat_seeds(s):
    golden = json.loads(read(DATA, "chat", "golden.json"))
    msgs = b"\0" + b"\x1e".join(m["role"].encode() + b"\x1e" + m["content"].encode()
                                for m in golden["messages"])
    for name, case in golden["cases"].items():
        cfg = compact({"chat_template": case["template"]})
        s.put("chat", name, cfg + msgs)
        s.put("chat", name + "-list", compact({"chat_template": [
            {"name": "tool_use", "template": "{{ tools }}"}, {"name": "default", "template": case["template"]}]})
              + msgs + b"\x1e<|begin_of_text|>")
    for t in ["llama3", "qwen3"]:
        cfg = json.loads(read(DATA, "tokenizers", t, "tokenizer_config.json"))
        s.put("chat", t + "-config", compact({k: cfg[k] for k in ("chat_template", "bos_token", "eos_token")}) + msgs)
    s.put("chat", "kjv-demo", read(DEMO, "tokenizer_config.json"))
    s.put("chat", "nul-content", compact({"chat_template": golden["cases"]["chatml"]["template"]})
          + b"\0user\x1ebefore\0after\x1eassistant\x1e\0")


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: make_seeds.py OUT")
    s = Seeds(sys.argv[1])
    checkpoint_seeds(s)
    index_seeds(s)
    config_seeds(s)
    tokenizer_seeds(s)
    ini_seeds(s)
    chat_seeds(s)


if __name__ == "__main__":
    main()
