/* gkrun_chat.c - the chat templates gkrun knows, recognised from the model's
 * tokenizer_config.json, and the interactive loop.
 *
 * Known: ChatML (Qwen), Llama 3 headers, Zephyr (TinyLlama chat). Each is
 * rendered as transformers' apply_chat_template renders the published Jinja
 * template with add_generation_prompt; the text is then encoded without adding
 * special tokens, as transformers does. Not here: a Jinja interpreter; an
 * unknown template gets a message and plain completion.
 */
#include "gkrun_chat.h"
#include "gkrun.h"

#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = n > 0 ? malloc((size_t)n + 1) : NULL;
    if (buf && fread(buf, 1, (size_t)n, f) == (size_t)n)
        buf[n] = '\0';
    else {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (!buf)
        return NULL;
    cJSON *j = cJSON_Parse(buf);
    free(buf);
    char *out = NULL;
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "chat_template");
    if (cJSON_IsString(t)) {
        out = strdup(t->valuestring);
    } else if (cJSON_IsArray(t)) { /* [{"name": "default", "template": ...}, ...] */
        const cJSON *e;
        cJSON_ArrayForEach(e, t) {
            const cJSON *name = cJSON_GetObjectItemCaseSensitive(e, "name");
            const cJSON *tt = cJSON_GetObjectItemCaseSensitive(e, "template");
            if (cJSON_IsString(tt) && (!out || (cJSON_IsString(name) && !strcmp(name->valuestring, "default")))) {
                free(out);
                out = strdup(tt->valuestring);
            }
        }
    }
    cJSON_Delete(j);
    return out;
}

/* A growing string. */
typedef struct sbuf {
    char *s;
    size_t len, cap;
    bool oom;
} sbuf;

static void put(sbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || b->oom)
        return;
    if (b->len + (size_t)n + 1 > b->cap) {
        size_t cap = (b->len + (size_t)n + 1) * 2;
        char *p = realloc(b->s, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->s = p;
        b->cap = cap;
    }
    va_start(ap, fmt);
    vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

char *gkrun_chat_render(chat_kind kind, const chat_msg *msgs, size_t n, const char *bos)
{
    sbuf b = {0};
    put(&b, "%s", "");
    switch (kind) {
    case CHAT_CHATML:
        for (size_t i = 0; i < n; i++)
            put(&b, "<|im_start|>%s\n%s<|im_end|>\n", msgs[i].role, msgs[i].content);
        put(&b, "<|im_start|>assistant\n");
        break;
    case CHAT_LLAMA3:
        put(&b, "%s", bos ? bos : "<|begin_of_text|>");
        for (size_t i = 0; i < n; i++)
            put(&b, "<|start_header_id|>%s<|end_header_id|>\n\n%s<|eot_id|>", msgs[i].role, msgs[i].content);
        put(&b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
        break;
    case CHAT_ZEPHYR:
        for (size_t i = 0; i < n; i++)
            put(&b, "<|%s|>\n%s</s>\n", msgs[i].role, msgs[i].content);
        put(&b, "<|assistant|>\n");
        break;
    case CHAT_NONE:
        for (size_t i = 0; i < n; i++)
            put(&b, "%s%s", i ? "\n" : "", msgs[i].content);
        break;
    }
    if (b.oom) {
        free(b.s);
        return NULL;
    }
    return b.s;
}

static char *read_line(void)
{
    size_t cap = 0;
    char *line = NULL;
    ssize_t n = getline(&line, &cap, stdin);
    if (n < 0) {
        free(line);
        return NULL;
    }
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
    return line;
}

int gkrun_chat(gk_model *m, const gk_tokenizer *tok, float temp, int top_k, float top_p, uint64_t seed,
               int64_t n_new, const int64_t *eos, int n_eos, const char *dir)
{
    char *tmpl = gkrun_chat_template(dir);
    chat_kind kind = gkrun_chat_kind(tmpl);
    free(tmpl);
    static const char *const names[] = {"none", "ChatML", "Llama 3", "Zephyr"};
    if (kind == CHAT_NONE)
        fprintf(stderr, "gkrun: %s has no chat template gkrun knows (ChatML, Llama 3, Zephyr); "
                        "continuing as plain completion of the conversation\n", dir);
    else
        fprintf(stderr, "gkrun: chat with the %s template; /exit or end of input quits\n", names[kind]);
    int32_t bos_id = gk_tokenizer_bos_id(tok);
    const char *bos = bos_id >= 0 ? gk_tokenizer_token(tok, bos_id) : NULL;

    chat_msg *msgs = NULL;
    char **owned = NULL;
    size_t n = 0;
    int rc = 0;
    bool tty = isatty(STDIN_FILENO);
    for (;;) {
        if (tty)
            fprintf(stderr, "\n> ");
        char *line = read_line();
        if (!line || !strcmp(line, "/exit")) {
            free(line);
            break;
        }
        chat_msg *mp = realloc(msgs, (n + 2) * sizeof *mp);
        char **op = realloc(owned, (n + 2) * sizeof *op);
        if (!mp || !op) {
            free(mp ? mp : msgs);
            free(op ? op : owned);
            free(line);
            fprintf(stderr, "gkrun: out of memory\n");
            return 1;
        }
        msgs = mp;
        owned = op;
        owned[n] = line;
        msgs[n++] = (chat_msg){.role = "user", .content = line};
        char *text = gkrun_chat_render(kind, msgs, n, bos);
        char *reply = NULL;
        rc = text ? gkrun_generate_turn(m, tok, text, temp, top_k, top_p, seed++, n_new, eos, n_eos, &reply) : 1;
        free(text);
        if (rc != 0) {
            free(reply);
            break;
        }
        fputc('\n', stdout);
        fflush(stdout);
        owned[n] = reply;
        msgs[n++] = (chat_msg){.role = "assistant", .content = reply};
    }
    for (size_t i = 0; i < n; i++)
        free(owned[i]);
    free(owned);
    free(msgs);
    return rc;
}
