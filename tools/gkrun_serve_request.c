/* gkrun_serve_request.c - a generation request's body, checked field by
 * field into a serve_req: the sampler chain from the server's defaults and
 * the fields (a wrong type or value names the field), the stop strings, the
 * chat messages rendered with the model's template (or gkrun --chat's plain
 * transcript), the prompt tokenized and held to the context.
 *
 * Not here: HTTP (gkrun_serve_api.c), the engine (gkrun_serve_engine.c).
 */
#include "gkrun_serve.h"

#include <cjson/cJSON.h>
#include <float.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>



static bool bad(serve_ask *a, const char *param, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool bad(serve_ask *a, const char *param, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(a->msg, sizeof a->msg, fmt, ap);
    va_end(ap);
    snprintf(a->param, sizeof a->param, "%s", param);
    a->status = 400;
    a->code = "invalid_value";
    return false;
}

/* A number field: absent or null leaves *out and says false in *set. */
static bool get_num(const cJSON *b, const char *name, double lo, double hi, bool lo_open, double *out, bool *set,
                    serve_ask *a)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(b, name);
    *set = false;
    if (!v || cJSON_IsNull(v))
        return true;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        return bad(a, name, "%s must be a number", name);
    double d = v->valuedouble;
    if (d < lo || d > hi || (lo_open && d == lo))
        return bad(a, name, "%s must be in %s%.16g, %.16g], got %.16g", name, lo_open ? "(" : "[", lo, hi, d);
    *out = d;
    *set = true;
    return true;
}

static bool get_int(const cJSON *b, const char *name, double lo, double hi, int64_t *out, bool *set, serve_ask *a)
{
    double d = 0;
    if (!get_num(b, name, lo, hi, false, &d, set, a))
        return false;
    if (*set && d != floor(d))
        return bad(a, name, "%s must be an integer, got %g", name, d);
    if (*set)
        *out = (int64_t)d;
    return true;
}

static bool get_bool(const cJSON *b, const char *name, bool *out, serve_ask *a)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(b, name);
    if (!v || cJSON_IsNull(v))
        return true;
    if (!cJSON_IsBool(v))
        return bad(a, name, "%s must be a boolean", name);
    *out = cJSON_IsTrue(v);
    return true;
}

/* The sampling fields into r->o (from the server's defaults), max tokens,
 * stop strings, n, seed, logprobs, stream. */
static bool read_common(serve *s, const cJSON *b, bool chat, serve_req *r, bool *stream, bool *usage,
                        serve_ask *a)
{
    gk_gen_opts *o = &r->o;
    *o = s->base;
    double d;
    int64_t i;
    bool set, rp_set = false, last_set = false;
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(b, "model");
    if (model && !cJSON_IsNull(model) && !cJSON_IsString(model))
        return bad(a, "model", "model must be a string");
    *stream = false;
    if (!get_bool(b, "stream", stream, a))
        return false;
    *usage = false;
    const cJSON *so = cJSON_GetObjectItemCaseSensitive(b, "stream_options");
    if (so && !cJSON_IsNull(so)) {
        if (!cJSON_IsObject(so))
            return bad(a, "stream_options", "stream_options must be an object");
        const cJSON *u = cJSON_GetObjectItemCaseSensitive(so, "include_usage");
        if (u && !cJSON_IsNull(u) && !cJSON_IsBool(u))
            return bad(a, "stream_options.include_usage", "stream_options.include_usage must be a boolean");
        *usage = cJSON_IsTrue(u);
    }
    if (!get_int(b, "n", 1, 1e9, &i, &set, a))
        return false;
    if (set && i != 1)
        return bad(a, "n", "n must be 1 (one choice per request), got %" PRId64, i);
    /* -1: until EOS or the context is full */
    int64_t max_new = 0;
    bool max_set = false;
    const char *mt = chat && cJSON_GetObjectItemCaseSensitive(b, "max_completion_tokens") ? "max_completion_tokens"
                                                                                        : "max_tokens";
    if (!get_int(b, mt, -1, (double)INT32_MAX, &max_new, &max_set, a))
        return false;
    if (max_set && max_new == 0)
        return bad(a, mt, "%s must be -1 (until EOS or the context is full) or at least 1, got 0", mt);
    r->max_new = max_set ? max_new : 0; /* 0: the default, resolved with the prompt */
    if (!get_num(b, "temperature", 0, FLT_MAX, false, &d, &set, a))
        return false;
    if (set)
        o->temperature = (float)d;
    if (!get_num(b, "top_p", 0, 1, true, &d, &set, a))
        return false;
    if (set)
        o->top_p = d < FLT_MIN ? FLT_MIN : (float)d;
    if (!get_int(b, "top_k", 0, INT_MAX, &i, &set, a))
        return false;
    if (set)
        o->top_k = (int)i;
    if (!get_num(b, "min_p", 0, 1, false, &d, &set, a))
        return false;
    if (set)
        o->min_p = (float)d;
    if (!get_num(b, "presence_penalty", -FLT_MAX, FLT_MAX, false, &d, &set, a))
        return false;
    if (set)
        o->presence_penalty = (float)d;
    if (!get_num(b, "frequency_penalty", -FLT_MAX, FLT_MAX, false, &d, &set, a))
        return false;
    if (set)
        o->frequency_penalty = (float)d;
    const char *rp = cJSON_GetObjectItemCaseSensitive(b, "repetition_penalty") ? "repetition_penalty"
                                                                                : "repeat_penalty";
    if (!get_num(b, rp, 0, FLT_MAX, true, &d, &rp_set, a))
        return false;
    if (rp_set)
        o->repetition_penalty = d < FLT_MIN ? FLT_MIN : (float)d;
    if (!get_int(b, "repeat_last_n", -1, INT32_MAX, &o->penalty_last_n, &last_set, a))
        return false;
    /* gkrun's rule: the file's whole-sequence window goes with the file's penalty only */
    if (rp_set && !last_set && s->src.penalty_last_n == GK_GEN_SRC_FILE)
        o->penalty_last_n = gk_gen_opts_default().penalty_last_n;
    /* seed: absent, null or -1 is random (as llama-server); a double holds integers to 2^53 exactly */
    int64_t seed = -1;
    if (!get_int(b, "seed", -1, 9007199254740992.0, &seed, &set, a))
        return false;
    if (seed >= 0) {
        o->seed = (uint64_t)seed;
    } else {
        static atomic_uint_fast64_t counter;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        o->seed = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^ (atomic_fetch_add(&counter, 1) * 0x9E3779B97F4A7C15u);
    }
    bool ignore_eos = false;
    if (!get_bool(b, "ignore_eos", &ignore_eos, a))
        return false;
    o->eos_ids = ignore_eos ? NULL : s->eos;
    o->n_eos = ignore_eos ? 0 : s->n_eos;
    /* stop: a string or an array of strings */
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(b, "stop");
    if (st && !cJSON_IsNull(st)) {
        const cJSON *one = cJSON_IsString(st) ? st : NULL;
        if (!one && !cJSON_IsArray(st))
            return bad(a, "stop", "stop must be a string or an array of strings");
        int n = one ? 1 : cJSON_GetArraySize(st);
        if (n > SERVE_MAX_STOP)
            return bad(a, "stop", "stop holds %d strings, at most %d are taken", n, SERVE_MAX_STOP);
        for (int k = 0; k < n; k++) {
            const cJSON *w = one ? one : cJSON_GetArrayItem(st, k);
            if (!cJSON_IsString(w) || !w->valuestring[0])
                return bad(a, "stop", "stop[%d] must be a non-empty string", k);
            r->stop[r->n_stop] = strdup(w->valuestring);
            if (!r->stop[r->n_stop])
                return bad(a, "stop", "out of memory");
            r->n_stop++;
        }
    }
    o->n_stop = 0; /* the engine matches stop strings itself */
    o->stop = NULL;
    o->tokenizer = NULL;
    /* logprobs: chat says logprobs true + top_logprobs N; completions logprobs N */
    r->n_logprobs = -1;
    if (chat) {
        bool lp = false;
        if (!get_bool(b, "logprobs", &lp, a))
            return false;
        if (!get_int(b, "top_logprobs", 0, SERVE_MAX_TOP_LOGPROBS, &i, &set, a))
            return false;
        if (set && !lp)
            return bad(a, "top_logprobs", "top_logprobs needs logprobs: true");
        if (lp)
            r->n_logprobs = set ? (int)i : 0;
    } else {
        if (!get_int(b, "logprobs", 0, SERVE_MAX_TOP_LOGPROBS, &i, &set, a))
            return false;
        if (set)
            r->n_logprobs = (int)i;
    }
    return true;
}

/* A message's content as a string: a string, null, or an array of text parts
 * (joined). Returns a new cJSON string (or null), NULL after bad(). */
static cJSON *content_string(const cJSON *c, int idx, serve_ask *a)
{
    char param[64];
    snprintf(param, sizeof param, "messages[%d].content", idx);
    if (!c || cJSON_IsNull(c))
        return cJSON_CreateNull();
    if (cJSON_IsString(c))
        return cJSON_CreateString(c->valuestring);
    if (!cJSON_IsArray(c)) {
        bad(a, param, "%s must be a string, null or an array of text parts", param);
        return NULL;
    }
    size_t len = 0;
    const cJSON *part;
    cJSON_ArrayForEach(part, c) {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(part, "text");
        const cJSON *ty = cJSON_GetObjectItemCaseSensitive(part, "type");
        if (!cJSON_IsObject(part) || !cJSON_IsString(ty) || strcmp(ty->valuestring, "text") || !cJSON_IsString(t)) {
            bad(a, param, "%s: only parts of type \"text\" with a string \"text\" are understood", param);
            return NULL;
        }
        len += strlen(t->valuestring);
    }
    char *buf = malloc(len + 1), *p = buf;
    if (!buf) {
        bad(a, param, "out of memory");
        return NULL;
    }
    cJSON_ArrayForEach(part, c) {
        const char *t = cJSON_GetObjectItemCaseSensitive(part, "text")->valuestring;
        size_t n = strlen(t);
        memcpy(p, t, n);
        p += n;
    }
    *p = '\0';
    cJSON *out = cJSON_CreateString(buf);
    free(buf);
    return out;
}

/* The chat prompt text: the messages checked, rendered with the model's
 * template, or (no template) the plain transcript gkrun --chat completes.
 * *special: encode with the special tokens (the transcript; a template
 * writes its own). Heap text, NULL after bad(). */
static char *chat_prompt(serve *s, const cJSON *b, bool *special, size_t *len, serve_ask *a)
{
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(b, "messages");
    if (!cJSON_IsArray(msgs) || cJSON_GetArraySize(msgs) == 0) {
        bad(a, "messages", msgs ? "messages must be a non-empty array of messages" : "messages is required");
        return NULL;
    }
    cJSON *norm = cJSON_CreateArray();
    const cJSON *m;
    int idx = 0;
    cJSON_ArrayForEach(m, msgs) {
        char param[64];
        snprintf(param, sizeof param, "messages[%d]", idx);
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        if (!cJSON_IsObject(m)) {
            bad(a, param, "%s must be an object", param);
            goto fail;
        }
        if (!cJSON_IsString(role)) {
            snprintf(param, sizeof param, "messages[%d].role", idx);
            bad(a, param, "%s must be a string", param);
            goto fail;
        }
        cJSON *copy = cJSON_Duplicate(m, true), *c = content_string(cJSON_GetObjectItemCaseSensitive(m, "content"), idx, a);
        if (!copy || !c) {
            cJSON_Delete(copy);
            cJSON_Delete(c);
            goto fail;
        }
        if (!cJSON_ReplaceItemInObjectCaseSensitive(copy, "content", c))
            cJSON_AddItemToObject(copy, "content", c);
        cJSON_AddItemToArray(norm, copy);
        idx++;
    }
    char *text = NULL;
    if (s->tmpl) {
        char *json = cJSON_PrintUnformatted(norm);
        gk_err err = {0};
        gk_status st = json ? gk_chat_render_json(s->tmpl, json, true, NULL, &text, len, &err) : GK_ERR_NOMEM;
        free(json);
        if (st != GK_OK) {
            bad(a, "messages", "the chat template refused the messages: %s", err.msg[0] ? err.msg : "out of memory");
            goto fail;
        }
        *special = false;
    } else {
        /* gkrun --chat without a template: each message after the first that
         * is not the assistant's starts a new line */
        size_t cap = 1;
        cJSON_ArrayForEach(m, norm) {
            const cJSON *c = cJSON_GetObjectItemCaseSensitive(m, "content");
            cap += (cJSON_IsString(c) ? strlen(c->valuestring) : 0) + 1;
        }
        text = malloc(cap);
        if (!text) {
            bad(a, "messages", "out of memory");
            goto fail;
        }
        *len = 0;
        cJSON_ArrayForEach(m, norm) {
            const cJSON *c = cJSON_GetObjectItemCaseSensitive(m, "content");
            const char *role = cJSON_GetObjectItemCaseSensitive(m, "role")->valuestring;
            if (*len && strcmp(role, "assistant"))
                text[(*len)++] = '\n';
            if (cJSON_IsString(c)) {
                memcpy(text + *len, c->valuestring, strlen(c->valuestring));
                *len += strlen(c->valuestring);
            }
        }
        text[*len] = '\0';
        *special = true;
    }
    cJSON_Delete(norm);
    return text;
fail:
    cJSON_Delete(norm);
    return NULL;
}

/* Tokenize, check the context, resolve max_new. */
static bool prepare(serve *s, serve_req *r, const char *text, size_t len, bool special, const char *param, serve_ask *a)
{
    gk_err err = {0};
    size_t n = 0;
    if (gk_tokenizer_encode(s->tok, text, len, special, &r->prompt, &n, &err) != GK_OK)
        return bad(a, param, "%s cannot be tokenized: %s", param, err.msg);
    if (n == 0)
        return bad(a, param, "%s encodes to no tokens", param);
    for (size_t i = 0; i < n; i++)
        if (r->prompt[i] < 0 || r->prompt[i] >= s->n_vocab)
            return bad(a, param, "%s: token %d (at %zu) is outside the model's vocabulary of %lld", param,
                       r->prompt[i], i, (long long)s->n_vocab);
    if ((int64_t)n > s->n_ctx) {
        bad(a, param, "the prompt is %zu tokens, longer than the context of %lld tokens per request (--ctx-size)", n,
            (long long)s->n_ctx);
        a->code = "context_length_exceeded";
        return false;
    }
    r->n_prompt = (int64_t)n;
    /* the last new token is never fed back, so it needs no cache row */
    int64_t room = s->n_ctx + 1 - (int64_t)n, max_new = r->max_new;
    if (max_new == 0) { /* the default: generation_config.json's, else until EOS or the context is full */
        if (s->use_max_length)
            max_new = s->src.max_length > (int64_t)n ? s->src.max_length - (int64_t)n : 1;
        else if (s->src.max_new_tokens == GK_GEN_SRC_FILE)
            max_new = s->base.max_new_tokens > 0 ? s->base.max_new_tokens : 1;
        else
            max_new = room;
    }
    if (max_new < 0 || max_new > room)
        max_new = room;
    r->max_new = max_new;
    return true;
}

bool serve_parse(serve *s, const char *body, size_t body_len, bool chat, serve_req *r, serve_ask *a)
{
    cJSON *b = cJSON_ParseWithLength(body, body_len);
    if (!b || !cJSON_IsObject(b)) {
        cJSON_Delete(b);
        bad(a, "", "the body must be a JSON object");
        a->code = "invalid_json";
        return false;
    }
    bool special = false;
    char *text = NULL;
    size_t len = 0;
    const char *param = chat ? "messages" : "prompt";
    bool ok = read_common(s, b, chat, r, &a->stream, &a->include_usage, a);
    if (ok && chat) {
        text = chat_prompt(s, b, &special, &len, a);
        ok = text != NULL;
    } else if (ok) {
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(b, "prompt");
        if (cJSON_IsArray(p) && cJSON_GetArraySize(p) == 1 && cJSON_IsString(cJSON_GetArrayItem(p, 0)))
            p = cJSON_GetArrayItem(p, 0);
        if (!cJSON_IsString(p)) {
            ok = bad(a, "prompt", p ? "prompt must be a string" : "prompt is required");
        } else {
            len = strlen(p->valuestring);
            text = strdup(p->valuestring);
            special = true;
            ok = text != NULL || bad(a, "prompt", "out of memory");
        }
    }
    ok = ok && prepare(s, r, text, len, special, param, a);
    free(text);
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(b, "model");
    if (ok) {
        a->model = strdup(cJSON_IsString(model) ? model->valuestring : s->model_name);
        if (!a->model) {
            ok = bad(a, "", "out of memory");
            a->status = 500;
            a->code = "out_of_memory";
        }
    }
    cJSON_Delete(b);
    return ok;
}
