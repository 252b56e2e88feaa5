/* gkrun_chat.h - the chat templates gkrun --chat knows. */
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
/* The same for contents that may hold NUL bytes: lens[i] is the length of
 * msgs[i].content (lens NULL: strlen of each), *len receives the length of the
 * result. */
char *gkrun_chat_render_len(chat_kind kind, const chat_msg *msgs, const size_t *lens, size_t n, const char *bos,
                            size_t *len);

#endif
