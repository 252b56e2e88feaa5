/* gkrun_chat.c - the chat templates gkrun knows, recognised from the model's
 * tokenizer_config.json, and the interactive loop.
 *
 * Known: ChatML (Qwen), Llama 3 headers, Zephyr (TinyLlama chat). Each is
 * rendered as transformers' apply_chat_template renders the published Jinja
 * template with add_generation_prompt; the text is then encoded without adding
 * special tokens, as transformers does. Not here: a Jinja interpreter (an
 * unknown template gets a message and plain completion), the chat loop
 * (gkrun_generate.c).
 */
#include "gkrun_chat.h"
#include "gkrun_file.h"
#include "gk_json.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

chat_kind gkrun_chat_kind(const char *t)
{
    if (!t)
        return CHAT_NONE;
    if (strstr(t, "<|im_start|>"))
        return CHAT_CHATML;
    if (strstr(t, "<|start_header_id|>"))
        return CHAT_LLAMA3;
    if (strstr(t, "<|user|>") && strstr(t, "<|assistant|>"))
        return CHAT_ZEPHYR;
    return CHAT_NONE;
}

char *gkrun_chat_template(const char *dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    size_t n = 0;
    const char *why = NULL;
    char *buf = gkrun_read_regular(path, &n, &why);
    if (!buf)
        return NULL;
    cJSON *j = gk_json_parse(buf, n, NULL);
    free(buf);
    /* A template holding a NUL character is not used (a cut one would render wrongly). */
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "chat_template"), *pick = NULL;
    if (cJSON_IsString(t)) {
        pick = t;
    } else if (cJSON_IsArray(t)) { /* [{"name": "default", "template": ...}, ...] */
        const cJSON *e;
        cJSON_ArrayForEach(e, t) {
            const cJSON *name = cJSON_GetObjectItemCaseSensitive(e, "name");
            const cJSON *tt = cJSON_GetObjectItemCaseSensitive(e, "template");
            if (cJSON_IsString(tt) && (!pick || (cJSON_IsString(name) && !strcmp(name->valuestring, "default"))))
                pick = tt;
        }
    }
    char *out = NULL;
    if (pick && gk_json_strlen(pick) == strlen(pick->valuestring))
        out = strdup(pick->valuestring);
    else if (pick)
        fprintf(stderr, "gkrun: %s: chat_template holds a NUL character; not used\n", path);
    cJSON_Delete(j);
    return out;
}

/* A growing string. */
typedef struct sbuf {
    char *s;
    size_t len, cap;
    bool oom;
} sbuf;

/* Room for n more bytes and a NUL; false (and b->oom) when there is none. */
static bool reserve(sbuf *b, size_t n)
{
    size_t need;
    if (b->oom)
        return false;
    if (!gk_size_add(b->len, n, &need) || !gk_size_add(need, 1, &need)) {
        b->oom = true;
        return false;
    }
    if (need > b->cap) {
        size_t cap;
        if (!gk_size_mul(need, 2, &cap))
            cap = need;
        char *p = realloc(b->s, cap);
        if (!p) {
            b->oom = true;
            return false;
        }
        b->s = p;
        b->cap = cap;
    }
    return true;
}

static void put(sbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !reserve(b, (size_t)n))
        return;
    va_start(ap, fmt);
    vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* Append n bytes as they are (NUL bytes included). */
static void put_n(sbuf *b, const char *s, size_t n)
{
    if (!reserve(b, n))
        return;
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}

static size_t content_len(const chat_msg *msgs, const size_t *lens, size_t i)
{
    return lens ? lens[i] : strlen(msgs[i].content);
}

char *gkrun_chat_render_len(chat_kind kind, const chat_msg *msgs, const size_t *lens, size_t n, const char *bos,
                            size_t *len)
{
    sbuf b = {0};
    put(&b, "%s", "");
    switch (kind) {
    case CHAT_CHATML:
        for (size_t i = 0; i < n; i++) {
            put(&b, "<|im_start|>%s\n", msgs[i].role);
            put_n(&b, msgs[i].content, content_len(msgs, lens, i));
            put(&b, "<|im_end|>\n");
        }
        put(&b, "<|im_start|>assistant\n");
        break;
    case CHAT_LLAMA3: /* the template trims each message */
        put(&b, "%s", bos ? bos : "<|begin_of_text|>");
        for (size_t i = 0; i < n; i++) {
            const char *c = msgs[i].content, *e = c + content_len(msgs, lens, i);
            while (c < e && isspace((unsigned char)*c))
                c++;
            while (e > c && isspace((unsigned char)e[-1]))
                e--;
            put(&b, "<|start_header_id|>%s<|end_header_id|>\n\n", msgs[i].role);
            put_n(&b, c, (size_t)(e - c));
            put(&b, "<|eot_id|>");
        }
        put(&b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
        break;
    case CHAT_ZEPHYR:
        for (size_t i = 0; i < n; i++) {
            put(&b, "<|%s|>\n", msgs[i].role);
            put_n(&b, msgs[i].content, content_len(msgs, lens, i));
            put(&b, "</s>\n");
        }
        put(&b, "<|assistant|>\n");
        break;
    case CHAT_NONE:
        for (size_t i = 0; i < n; i++) {
            if (i)
                put_n(&b, "\n", 1);
            put_n(&b, msgs[i].content, content_len(msgs, lens, i));
        }
        break;
    }
    if (b.oom) {
        free(b.s);
        return NULL;
    }
    if (len)
        *len = b.len;
    return b.s;
}

char *gkrun_chat_render(chat_kind kind, const chat_msg *msgs, size_t n, const char *bos)
{
    return gkrun_chat_render_len(kind, msgs, NULL, n, bos, NULL);
}
