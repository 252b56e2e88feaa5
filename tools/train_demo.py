"""Usage: python3 tools/train_demo.py CORPUS.txt OUT_DIR [STEPS]

Train the bundled demo model: a small Llama-architecture decoder with its own
byte-level BPE tokenizer, on the King James Bible (public domain; the corpus
comes from tools/demo_corpus.sh). Saved in HuggingFace layout (config.json,
generation_config.json, tokenizer.json, tokenizer_config.json,
model.safetensors) in float16, under 8 MB. Needs torch, transformers and
tokenizers; runs in a few minutes on one GPU.
"""
import json
import math
import os
import sys
import time

import torch
import transformers as tf
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

VOCAB = 2048
CTX = 256
EOS = "<|endoftext|>"


def train_tokenizer(lines, out):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=[EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(lines, trainer)
    tok.save(os.path.join(out, "tokenizer.json"))
    json.dump({"eos_token": EOS, "bos_token": None, "model_max_length": CTX,
               "tokenizer_class": "PreTrainedTokenizerFast"},
              open(os.path.join(out, "tokenizer_config.json"), "w"), indent=2)
    return tok


def main(corpus, out, steps=4000):
    steps = int(steps)
    os.makedirs(out, exist_ok=True)
    lines = [l.strip() for l in open(corpus, encoding="utf-8") if l.strip()]
    tok = train_tokenizer(lines, out)
    eos = tok.token_to_id(EOS)
    # verses in order, one stream; a chapter's verses stay neighbours
    ids = []
    for enc in tok.encode_batch([l + "\n" for l in lines]):
        ids.extend(enc.ids)
    data = torch.tensor(ids, dtype=torch.long)
    print(f"corpus: {len(lines)} verses, {len(ids)} tokens, vocab {tok.get_vocab_size()}", flush=True)

    cfg = tf.LlamaConfig(vocab_size=VOCAB, hidden_size=256, intermediate_size=704, num_hidden_layers=4,
                         num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=CTX,
                         rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=True,
                         bos_token_id=None, eos_token_id=eos)
    dev = "cuda"
    torch.manual_seed(0)
    model = tf.LlamaForCausalLM(cfg).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, betas=(0.9, 0.95), weight_decay=0.1)
    batch = 64
    n_val = len(data) // 50
    train, val = data[:-n_val].to(dev), data[-n_val:].to(dev)

    def sample(src):
        ix = torch.randint(0, len(src) - CTX - 1, (batch,), device=dev)
        x = torch.stack([src[i:i + CTX] for i in ix])
        return x

    t0 = time.time()
    for step in range(steps + 1):
        lr = 2e-3 * min(1.0, step / 200) * 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps))
        for g in opt.param_groups:
            g["lr"] = max(lr, 1e-5)
        x = sample(train)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(input_ids=x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 500 == 0:
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
                v = sample(val)
                vl = model(input_ids=v, labels=v).loss
            print(f"step {step}: train {loss.item():.3f} val {vl.item():.3f} ({time.time() - t0:.0f} s)", flush=True)

    model = model.to(torch.float16).eval()
    model.generation_config = tf.GenerationConfig(eos_token_id=eos, bos_token_id=None)
    model.save_pretrained(out)
    prompt = torch.tensor([tok.encode("In the beginning").ids], device=dev)
    gen = model.generate(prompt, max_new_tokens=40, do_sample=False, pad_token_id=eos)
    print("greedy sample:", tok.decode(gen[0].tolist()), flush=True)
    size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
    print(f"saved {out}: {sorted(os.listdir(out))}, {size / 1e6:.2f} MB", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
