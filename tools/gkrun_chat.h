/* gkrun_chat.h - chat templates and the interactive loop of gkrun --chat. */
#ifndef GKRUN_CHAT_H
#define GKRUN_CHAT_H

#include <gk/gk.h>

typedef enum chat_kind { CHAT_NONE = 0, CHAT_CHATML, CHAT_LLAMA3, CHAT_ZEPHYR } chat_kind;

/* Which known template a tokenizer_config.json chat_template is. */
chat_kind gkrun_chat_kind(const char *template_text);
/* Read DIR/tokenizer_config.json's chat_template (heap; NULL when absent). */
char *gkrun_chat_template(const char *dir);

typedef struct chat_msg {
    const char *role;     /* "system", "user", "assistant" */
    const char *content;
} chat_msg;

/* Render messages plus the assistant's generation prompt as the template
 * would (heap string; NULL when out of memory). bos is the tokenizer's BOS
 * token text (Llama 3 writes it), may be NULL. */
char *gkrun_chat_render(chat_kind kind, const chat_msg *msgs, size_t n, const char *bos);

/* The interactive loop: read a line, answer it, until EOF or /exit. */
int gkrun_chat(gk_model *m, const gk_tokenizer *tok, float temp, int top_k, float top_p, uint64_t seed,
               int64_t n_new, const int64_t *eos, int n_eos, const char *dir);

/* One generation over already-templated text, streamed to stdout; *reply gets
 * the decoded new text (heap). Defined in gkrun_generate.c. */
int gkrun_generate_turn(gk_model *m, const gk_tokenizer *tok, const char *text, float temp, int top_k,
                        float top_p, uint64_t seed, int64_t n_new, const int64_t *eos, int n_eos, char **reply);

#endif
