/* gkrun_chat.c - gkrun --chat, a conversation in the manner of llama-cli's
 * conversation mode.
 *
 * Each turn renders the whole conversation with the model's own chat template
 * (gk_chat_render, add_generation_prompt), encodes it without adding special
 * tokens (the template writes them, as transformers does) and generates with
 * keep_cache, so only the tokens the cache does not hold yet are prefilled.
 * The reply kept in the conversation is the decoded text the model produced,
 * so the next rendering starts with what the cache already holds. When the
 * conversation no longer fits the context the oldest turns after the system
 * prompt are dropped and the rest is read again. Ctrl-C ends a reply (the
 * part printed stays in the conversation); at the prompt it ends the chat.
 *
 * A folder without a chat template gets plain completion: the transcript of
 * lines and replies, each line starting a new line after the previous reply.
 *
 * Not here: the template language (text/), the sampling and the cache reuse
 * (core/generate.c), the command line (gkrun_generate.c).
 */
#include "gkrun.h"
#include "gkrun_chat.h"
#include "gkrun_stream.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------- Ctrl-C */

/* SIGINTs since the flag was last cleared (1: stop the reply, 2: quit). */
static volatile sig_atomic_t interrupts;

static void on_sigint(int sig)
{
    (void)sig;
    if (interrupts < 2)
        interrupts++;
    if (interrupts >= 2) {
        /* a third one ends the process the usual way, e.g. during a long prefill */
        struct sigaction dfl = {.sa_handler = SIG_DFL};
        sigemptyset(&dfl.sa_mask);
        sigaction(SIGINT, &dfl, NULL);
    }
}

static void sigint_catch(struct sigaction *old)
{
    struct sigaction sa = {.sa_handler = on_sigint, .sa_flags = SA_RESTART};
    sigemptyset(&sa.sa_mask);
    interrupts = 0;
    sigaction(SIGINT, &sa, old);
}

/* ----------------------------------------------------------- stdin lines */

typedef struct line_reader {
    char *buf;
    size_t len, cap;
    bool eof;
} line_reader;

enum { LINE_OK, LINE_EOF, LINE_INTERRUPTED, LINE_FAILED };

/* One line of stdin without its line end, *len bytes (NUL bytes kept; heap).
 * SIGINT is blocked except while waiting for input, so a Ctrl-C is never
 * lost between the check and the wait. LINE_FAILED after a message. */
static int read_line(line_reader *r, char **line, size_t *len)
{
    sigset_t intr, old;
    sigemptyset(&intr);
    sigaddset(&intr, SIGINT);
    sigprocmask(SIG_BLOCK, &intr, &old);
    sigset_t wait_mask = old;
    sigdelset(&wait_mask, SIGINT);
    int rc = LINE_FAILED;
    for (;;) {
        char *nl = r->len ? memchr(r->buf, '\n', r->len) : NULL;
        if (nl || (r->eof && r->len)) {
            size_t n = nl ? (size_t)(nl - r->buf) : r->len, used = nl ? n + 1 : n;
            char *s = malloc(n + 1);
            if (!s) {
                fprintf(stderr, "gkrun: out of memory reading the chat\n");
                break;
            }
            memcpy(s, r->buf, n);
            s[n] = '\0';
            memmove(r->buf, r->buf + used, r->len - used);
            r->len -= used;
            while (n > 0 && s[n - 1] == '\r')
                s[--n] = '\0';
            *line = s;
            *len = n;
            rc = LINE_OK;
            break;
        }
        if (r->eof) {
            rc = LINE_EOF;
            break;
        }
        if (interrupts) {
            rc = LINE_INTERRUPTED;
            break;
        }
        struct pollfd p = {.fd = STDIN_FILENO, .events = POLLIN};
        if (ppoll(&p, 1, NULL, &wait_mask) < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "gkrun: cannot read the chat from stdin: %s\n", strerror(errno));
            break;
        }
        if (r->cap - r->len < 4096) {
            size_t cap;
            char *b = NULL;
            if (gk_size_add(r->cap, 4096, &cap) && gk_size_mul(cap, 2, &cap))
                b = realloc(r->buf, cap);
            if (!b) {
                fprintf(stderr, "gkrun: out of memory reading the chat\n");
                break;
            }
            r->buf = b;
            r->cap = cap;
        }
        ssize_t got = read(STDIN_FILENO, r->buf + r->len, r->cap - r->len);
        if (got < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (got < 0) {
            fprintf(stderr, "gkrun: cannot read the chat from stdin: %s\n", strerror(errno));
            break;
        }
        if (got == 0)
            r->eof = true;
        r->len += (size_t)got;
    }
    sigprocmask(SIG_SETMASK, &old, NULL);
    return rc;
}

/* ---------------------------------------------------------- conversation */

typedef struct chat_msg {
    const char *role;          /* static: "system", "user", "assistant" */
    char *content;             /* heap, len bytes, NUL-terminated */
    size_t len;
} chat_msg;

typedef struct chat {
    const gkrun_chat_opts *o;
    gk_model *m;
    const gk_tokenizer *tok;
    gk_chat_template *tmpl;    /* NULL: plain completion */
    chat_msg *msgs;
    size_t n, cap;
    size_t first;              /* the first message that may be dropped (after the system prompt) */
    /* for the statistics at the end */
    size_t n_replies;
    int64_t n_gen, n_reused, n_prefill;
    double t_prefill, t_decode;
} chat;

/* Append a message taking ownership of content; false (content freed) when
 * out of memory. */
static bool chat_push(chat *c, const char *role, char *content, size_t len)
{
    if (c->n == c->cap) {
        size_t cap = c->cap ? 2 * c->cap : 16;
        chat_msg *p = realloc(c->msgs, cap * sizeof *p);
        if (!p) {
            free(content);
            fprintf(stderr, "gkrun: out of memory keeping the conversation\n");
            return false;
        }
        c->msgs = p;
        c->cap = cap;
    }
    c->msgs[c->n++] = (chat_msg){.role = role, .content = content, .len = len};
    return true;
}

/* Drop messages [from, to). */
static void chat_drop(chat *c, size_t from, size_t to)
{
    for (size_t i = from; i < to; i++)
        free(c->msgs[i].content);
    memmove(c->msgs + from, c->msgs + to, (c->n - to) * sizeof *c->msgs);
    c->n -= to - from;
}

/* The messages before c->first, then those from `from` on, rendered and
 * encoded: *ids heap, *n_ids of them. Returns a status, err filled. */
static gk_status chat_encode(const chat *c, size_t from, int32_t **ids, size_t *n_ids, gk_err *err)
{
    *ids = NULL;
    *n_ids = 0;
    char *text = NULL;
    size_t len = 0;
    gk_status s = GK_OK;
    if (c->tmpl) {
        gk_chat_msg *msgs = calloc(c->n ? c->n : 1, sizeof *msgs);
        if (!msgs)
            return GK_ERR_NOMEM;
        size_t k = 0;
        for (size_t i = 0; i < c->n; i++)
            if (i < c->first || i >= from)
                msgs[k++] = (gk_chat_msg){.role = c->msgs[i].role, .content = c->msgs[i].content};
        s = gk_chat_render(c->tmpl, msgs, k, true, NULL, &text, &len, err);
        free(msgs);
    } else {
        /* the transcript: each line starts a line of its own after a reply */
        size_t cap = 1;
        for (size_t i = 0; i < c->n; i++)
            if (!gk_size_add(cap, c->msgs[i].len + 1, &cap))
                return GK_ERR_NOMEM;
        text = malloc(cap);
        if (!text)
            return GK_ERR_NOMEM;
        for (size_t i = 0; i < c->n; i++) {
            if (i >= c->first && i < from)
                continue;
            if (len && strcmp(c->msgs[i].role, "assistant"))
                text[len++] = '\n';
            memcpy(text + len, c->msgs[i].content, c->msgs[i].len);
            len += c->msgs[i].len;
        }
        text[len] = '\0';
    }
    if (s == GK_OK)
        s = gk_tokenizer_encode(c->tok, text, len, !c->tmpl, ids, n_ids, err);
    if (s == GK_OK && c->o->verbose_prompt) {
        fputs("prompt text: \"", stderr);
        gkrun_put_escaped(stderr, text, len);
        fprintf(stderr, "\"\nprompt ids (%zu):", *n_ids);
        for (size_t i = 0; i < *n_ids; i++)
            fprintf(stderr, " %d", (*ids)[i]);
        fprintf(stderr, "\n");
    }
    free(text);
    return s;
}

/* The message after the turn that starts at i (a user message and the
 * replies to it). */
static size_t next_turn(const chat *c, size_t i)
{
    for (i++; i < c->n && strcmp(c->msgs[i].role, "user"); i++)
        ;
    return i;
}

/* ------------------------------------------------------------ one reply */

static bool is_eos(const gk_gen_opts *g, int32_t t)
{
    for (int i = 0; i < g->n_eos; i++)
        if (g->eos_ids[i] == t)
            return true;
    return false;
}

/* Make the conversation fit the context for a reply of up to `reserve`
 * tokens, dropping the oldest turns when it does not (then it is cut to half
 * the context where it can be, so that the next turns find room again).
 * *ids is the rendering that fits. Returns 0, -1 when the last user turn
 * cannot fit at all (message printed, the turn removed), 1 on failure. */
static int chat_fit(chat *c, int64_t reserve, int32_t **ids, size_t *n_ids)
{
    gk_err err = {0};
    int64_t n_ctx = gk_model_n_ctx(c->m);
    if (chat_encode(c, c->first, ids, n_ids, &err) != GK_OK)
        goto refuse;
    if (*n_ids == 0) { /* plain completion of an empty first line */
        fprintf(stderr, "gkrun: the conversation encodes to no tokens; the line is not sent\n");
        free(*ids);
        *ids = NULL;
        chat_drop(c, c->n - 1, c->n);
        return -1;
    }
    if ((int64_t)*n_ids + reserve <= n_ctx)
        return 0;
    size_t last = c->n - 1;
    free(*ids);
    if (chat_encode(c, last, ids, n_ids, &err) != GK_OK)
        goto refuse;
    if ((int64_t)*n_ids >= n_ctx) {
        fprintf(stderr, "gkrun: this message%s renders to %zu tokens, which leave no room for a reply in the "
                        "context of %lld tokens (--ctx); it is not sent\n",
                c->first ? " with the system prompt" : "", *n_ids, (long long)n_ctx);
        free(*ids);
        *ids = NULL;
        chat_drop(c, last, c->n);
        return -1;
    }
    size_t from = c->first;
    for (;;) {
        from = next_turn(c, from);
        free(*ids);
        if (chat_encode(c, from, ids, n_ids, &err) != GK_OK)
            goto refuse;
        if (from >= last || ((int64_t)*n_ids <= n_ctx / 2 && (int64_t)*n_ids + reserve <= n_ctx))
            break;
    }
    fprintf(stderr, "gkrun: the context of %lld tokens is full: dropped the %zu oldest messages%s, "
                    "reading the %zu tokens left again\n",
            (long long)n_ctx, from - c->first, c->first ? " after the system prompt" : "", *n_ids);
    chat_drop(c, c->first, from);
    return 0;
refuse:
    free(*ids);
    *ids = NULL;
    if (err.code == GK_ERR_NOMEM || err.code == GK_OK) {
        fprintf(stderr, "gkrun: out of memory rendering the chat\n");
        return 1;
    }
    /* the template refused the conversation (raise_exception) or the text */
    fprintf(stderr, "gkrun: %s; the message is not sent\n", err.msg);
    chat_drop(c, c->n - 1, c->n);
    return -1;
}

/* Answer the user message just added. Returns 0 (the chat goes on) or 1
 * (message printed). */
static int chat_reply(chat *c, size_t turn)
{
    const gkrun_chat_opts *o = c->o;
    int64_t n_ctx = gk_model_n_ctx(c->m);
    int64_t reserve = o->n_new < 0 || o->n_new > n_ctx / 4 ? n_ctx / 4 : o->n_new;
    if (reserve < 1)
        reserve = 1;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    int fit = chat_fit(c, reserve, &ids, &n_ids);
    if (fit)
        return fit < 0 ? 0 : 1;
    /* the last new token is never fed back, so it needs no cache row */
    int64_t room = n_ctx + 1 - (int64_t)n_ids;
    int64_t n_new = o->n_new < 0 || o->n_new > room ? room : o->n_new;
    int32_t *out = malloc((size_t)(n_new > 0 ? n_new : 1) * sizeof *out);
    if (!out) {
        free(ids);
        fprintf(stderr, "gkrun: out of memory: room for %lld new tokens\n", (long long)n_new);
        return 1;
    }
    gkrun_stream s = {.tok = c->tok, .n_stop = o->gen.n_stop, .stop = o->gen.stop, .echo = true,
                      .interrupt = &interrupts};
    gk_gen_opts g = o->gen;
    g.tokenizer = g.n_stop ? c->tok : NULL;
    g.max_new_tokens = n_new;
    g.keep_cache = true;
    g.on_token = gkrun_stream_token;
    g.user = &s;
    g.seed = o->gen.seed + turn;
    gk_gen_stats st = {0};
    gk_err err = {0};
    int64_t n_out = 0;
    /* a Ctrl-C since the line was read stops this reply at its first token */
    gk_status gs = gk_model_generate(c->m, ids, (int64_t)n_ids, &g, out, &n_out, &st, &err);
    bool stopped = interrupts > 0;
    if (gs == GK_OK)
        gkrun_stream_cut(&s, &st); /* the reply ends where the stop string starts */
    gkrun_stream_flush(&s);
    fputc('\n', stdout);
    fflush(stdout);
    int rc = 0;
    if (gs != GK_OK)
        rc = gkrun_fail(&err);
    else if (s.failed)
        rc = gkrun_fail(&s.err);
    char *reply = gkrun_stream_take(&s);
    size_t reply_len = s.len;
    if (rc == 0 && !reply) {
        fprintf(stderr, "gkrun: out of memory\n");
        rc = 1;
    }
    if (rc == 0 && !chat_push(c, "assistant", reply, reply_len))
        rc = 1;
    else if (rc != 0)
        free(reply);
    if (rc == 0) {
        /* a library that does not count them prefilled the whole prompt */
        int64_t reused = st.n_reused, prefilled = reused + st.n_prefill == st.n_prompt ? st.n_prefill
                                                                                         : st.n_prompt - reused;
        double dec = st.n_gen > 1 && st.t_decode_s > 0 ? (double)(st.n_gen - 1) / st.t_decode_s : 0;
        const char *why = stopped ? "stopped by Ctrl-C"
                        : st.finish == GK_FINISH_STOP ? "stop string"
                        : n_out > 0 && is_eos(&g, out[n_out - 1]) ? "end of reply"
                        : n_out < n_new ? "stopped"
                        : n_new == room ? "the context is full"
                                        : "-n reached";
        fprintf(stderr, "-- prompt %lld tokens: %lld reused, %lld prefilled (%.1f tokens/s); "
                        "reply %lld tokens (%.1f tokens/s, %s)\n",
                (long long)st.n_prompt, (long long)reused, (long long)prefilled,
                st.t_prefill_s > 0 ? (double)prefilled / st.t_prefill_s : 0.0, (long long)st.n_gen, dec, why);
        c->n_replies++;
        c->n_gen += st.n_gen;
        c->n_reused += reused;
        c->n_prefill += prefilled;
        c->t_prefill += st.t_prefill_s;
        c->t_decode += st.t_decode_s;
    }
    gkrun_stream_free(&s);
    free(out);
    free(ids);
    return rc;
}

/* -------------------------------------------------------------- the loop */

static void print_totals(const chat *c)
{
    fprintf(stderr, "\n-- chat: %zu repl%s, %lld tokens generated (%.1f tokens/s); prompts: %lld tokens reused, "
                    "%lld prefilled (%.1f tokens/s)\n",
            c->n_replies, c->n_replies == 1 ? "y" : "ies", (long long)c->n_gen,
            c->t_decode > 0 ? (double)c->n_gen / c->t_decode : 0.0,
            (long long)c->n_reused, (long long)c->n_prefill,
            c->t_prefill > 0 ? (double)c->n_prefill / c->t_prefill : 0.0);
}

int gkrun_chat_run(gk_model *m, const gk_tokenizer *tok, const gkrun_chat_opts *o)
{
    chat c = {.o = o, .m = m, .tok = tok};
    gk_err err = {0};
    gk_status ts = gk_chat_template_load(o->model_dir, NULL, &c.tmpl, &err);
    if (ts == GK_ERR_NOT_FOUND)
        fprintf(stderr, "gkrun: %s: no chat template gkrun knows (neither tokenizer_config.json's chat_template "
                        "nor chat_template.jinja); completing the conversation as plain text\n", o->model_dir);
    else if (ts != GK_OK)
        fprintf(stderr, "gkrun: %s; no chat template gkrun knows, so completing the conversation as plain text\n",
                err.msg);
    else
        fprintf(stderr, "gkrun: chat with %s's template; /exit, end of input or Ctrl-C at the prompt quits, "
                        "Ctrl-C during a reply stops it\n", o->model_dir);
    int rc = 0;
    if (o->system_prompt) {
        char *sys = strdup(o->system_prompt);
        if (!sys || !chat_push(&c, "system", sys, strlen(sys))) {
            fprintf(stderr, "gkrun: out of memory\n");
            gk_chat_template_destroy(c.tmpl);
            return 1;
        }
        c.first = 1;
    }
    struct sigaction old;
    sigint_catch(&old);
    line_reader in = {0};
    bool tty = isatty(STDIN_FILENO);
    for (size_t turn = 0;; turn++) {
        interrupts = 0; /* from here on a Ctrl-C is one at the prompt */
        if (tty)
            fprintf(stderr, "\n> ");
        char *line = NULL;
        size_t len = 0;
        int r = read_line(&in, &line, &len);
        if (r == LINE_FAILED)
            rc = 1;
        if (r == LINE_INTERRUPTED)
            fputc('\n', stderr);
        if (r != LINE_OK || (len == 5 && !memcmp(line, "/exit", 5))) {
            free(line);
            break;
        }
        if (c.tmpl && memchr(line, '\0', len)) {
            fprintf(stderr, "gkrun: the line holds a NUL byte, which a chat template cannot carry; "
                            "it is not sent\n");
            free(line);
            continue;
        }
        if (!chat_push(&c, "user", line, len)) {
            rc = 1;
            break;
        }
        rc = chat_reply(&c, turn);
        if (rc != 0)
            break;
        if (interrupts >= 2) {
            rc = 130;
            break;
        }
    }
    if (rc != 1)
        print_totals(&c);
    sigaction(SIGINT, &old, NULL);
    free(in.buf);
    chat_drop(&c, 0, c.n);
    free(c.msgs);
    gk_chat_template_destroy(c.tmpl);
    return rc;
}
