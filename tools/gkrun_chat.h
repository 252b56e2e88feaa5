/* gkrun_chat.h - gkrun --chat: a conversation with a model on the terminal. */
#ifndef GKRUN_CHAT_H
#define GKRUN_CHAT_H

#include <gk/gk.h>

#include <stdbool.h>
#include <stdint.h>

typedef struct gkrun_chat_opts {
    const char *model_dir;     /* where the chat template is looked for */
    const char *system_prompt; /* the first message, kept when old turns are dropped; NULL: none */
    /* Sampling options and EOS ids as for one completion. The chat sets
     * max_new_tokens, keep_cache, on_token and user itself, and adds the turn
     * number to seed. */
    gk_gen_opts gen;
    int64_t n_new;             /* tokens per reply at most; -1: until an EOS id or a full context */
    bool verbose_prompt;       /* print each rendered prompt and its ids on stderr */
} gkrun_chat_opts;

/* Read lines from stdin until /exit, the end of input or Ctrl-C at the
 * prompt, answering each with the model: the whole conversation is rendered
 * with the model's chat template (a folder without one: plain completion of
 * the transcript) and only what the KV cache does not hold yet is prefilled.
 * Replies stream to stdout; notices, the prompt (on a terminal) and the
 * statistics go to stderr. SIGINT is handled while it runs (the previous
 * disposition comes back on return): Ctrl-C during a reply ends that reply,
 * a second one ends the chat. Returns the exit status: 0, 1 after printing
 * why (a failed read or generation, no memory), or 130 after a second
 * Ctrl-C during a reply. m, tok and o stay the caller's. */
int gkrun_chat_run(gk_model *m, const gk_tokenizer *tok, const gkrun_chat_opts *o);

#endif
