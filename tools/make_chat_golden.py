"""Usage: python3 tools/make_chat_golden.py TOKENIZERS_DIR OUT.json

Render one conversation with transformers' apply_chat_template for each chat
template gkrun knows -- ChatML (the qwen3 tokenizer's own template), Llama 3
(the llama3 tokenizer's) and Zephyr (TinyLlama chat's template, written out
below) -- as text and as ids, for tests/test_chat.c. TOKENIZERS_DIR holds
NAME/tokenizer.json and NAME/tokenizer_config.json.
"""
import json
import os
import sys

from transformers import PreTrainedTokenizerFast

ZEPHYR = ("{% for message in messages %}\n{% if message['role'] == 'user' %}\n"
          "{{ '<|user|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'system' %}\n"
          "{{ '<|system|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'assistant' %}\n"
          "{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}\n"
          "{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}")

MESSAGES = [
    {"role": "system", "content": "You are a terse assistant."},
    {"role": "user", "content": "Hello there!"},
    {"role": "assistant", "content": "Hi. What do you need?"},
    {"role": "user", "content": "  Name three primes.  "},
]


def main(tok_dir, out):
    cases = {}
    for name, kind, template, extra in (("qwen3", "chatml", None, {}), ("llama3", "llama3", None, {}),
                                         ("llama2", "zephyr", ZEPHYR, {"eos_token": "</s>"})):
        cfg = json.load(open(os.path.join(tok_dir, name, "tokenizer_config.json")))
        tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(tok_dir, name, "tokenizer.json"),
                                      bos_token=cfg.get("bos_token"), eos_token=extra.get("eos_token", cfg.get("eos_token")))
        tmpl = template or cfg["chat_template"]
        text = tok.apply_chat_template(MESSAGES, chat_template=tmpl, tokenize=False, add_generation_prompt=True)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        cases[kind] = {"tokenizer": name, "template": tmpl, "text": text, "ids": ids}
        print(kind, repr(text[:80]), len(ids), flush=True)
    json.dump({"messages": MESSAGES, "cases": cases}, open(out, "w"), indent=1, ensure_ascii=False)


if __name__ == "__main__":
    main(*sys.argv[1:])
