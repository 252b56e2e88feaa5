/* chat.c - the public chat-template API of gk.h over the interpreter of
 * jinja.h: a template from a model folder (tokenizer_config.json's
 * chat_template, a string or a list of named ones, else chat_template.jinja)
 * with the special tokens beside it, and renders with transformers'
 * variables (messages, add_generation_prompt, tools, documents, the special
 * tokens, extra ones). Not here: tokenizing the result.
 */
#include "jinja_eval.h"

#include "gk_internal.h"

#include <stdlib.h>
#include <string.h>

struct gk_chat_template {
    jtemplate *t;
    cJSON *special; /* object: token name -> string */
};

static bool special_value(const cJSON *v, const char **s)
{
    if (cJSON_IsString(v)) {
        *s = v->valuestring;
        return true;
    }
    if (cJSON_IsObject(v)) { /* AddedToken: {"content": "...", ...} */
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(v, "content");
        if (cJSON_IsString(c)) {
            *s = c->valuestring;
            return true;
        }
    }
    return false;
}

gk_status gk_chat_template_parse(const char *text, size_t len, const char *special_tokens_json,
                                 gk_chat_template **out, gk_err *err)
{
    if (!out || (!text && len))
        return gk_err_set(err, GK_ERR_INVALID_ARG, "gk_chat_template_parse: NULL argument");
    *out = NULL;
    gk_chat_template *c = calloc(1, sizeof *c);
    if (!c)
        return gk_err_set(err, GK_ERR_NOMEM, "out of memory");
    if (special_tokens_json) {
        gk_json_error je;
        c->special = gk_json_parse(special_tokens_json, strlen(special_tokens_json), &je);
        if (!cJSON_IsObject(c->special)) {
            gk_chat_template_destroy(c);
            return gk_err_set(err, GK_ERR_INVALID_ARG, "special tokens: not a JSON object");
        }
    } else {
        c->special = cJSON_CreateObject();
    }
    c->t = jinja_parse(text ? text : "", len, err);
    if (!c->t || !c->special) {
        bool parsed = c->t != NULL;
        gk_chat_template_destroy(c);
        return parsed ? gk_err_set(err, GK_ERR_NOMEM, "out of memory") : (err ? err->code : GK_ERR_UNSUPPORTED);
    }
    *out = c;
    return GK_OK;
}

gk_status gk_chat_template_load(const char *model_dir, const char *name, gk_chat_template **out, gk_err *err)
{
    if (!model_dir || !out)
        return gk_err_set(err, GK_ERR_INVALID_ARG, "gk_chat_template_load: NULL argument");
    *out = NULL;
    char *cfg_path = gk_path_join(model_dir, "tokenizer_config.json");
    char *jinja_path = gk_path_join(model_dir, "chat_template.jinja");
    char *text = NULL, *cfg = NULL;
    size_t text_len = 0, cfg_len = 0;
    cJSON *j = NULL, *special = cJSON_CreateObject();
    gk_status st = GK_OK;
    if (!cfg_path || !jinja_path || !special) {
        st = gk_err_set(err, GK_ERR_NOMEM, "out of memory");
        goto out;
    }
    if (gk_path_exists(cfg_path)) {
        st = gk_read_file(cfg_path, &cfg, &cfg_len, err);
        if (st != GK_OK)
            goto out;
        gk_json_error je;
        j = gk_json_parse(cfg, cfg_len, &je);
        if (!cJSON_IsObject(j)) {
            st = gk_err_set(err, GK_ERR_FORMAT, "%s: not a JSON object (%s at byte %zu)", cfg_path,
                            j ? "not an object" : je.why, j ? (size_t)0 : je.at);
            goto out;
        }
        for (const cJSON *it = j->child; it; it = it->next) {
            const char *s;
            size_t kn = strlen(it->string);
            if (kn > 6 && !strcmp(it->string + kn - 6, "_token") && special_value(it, &s))
                cJSON_AddStringToObject(special, it->string, s);
        }
        const cJSON *ct = cJSON_GetObjectItemCaseSensitive(j, "chat_template");
        if (cJSON_IsString(ct)) {
            text_len = gk_json_strlen(ct);
            text = malloc(text_len + 1);
            if (text) {
                memcpy(text, ct->valuestring, text_len);
                text[text_len] = 0;
            }
        } else if (cJSON_IsArray(ct)) {
            const char *want = name ? name : "default";
            for (const cJSON *e = ct->child; e; e = e->next) {
                const cJSON *n = cJSON_GetObjectItemCaseSensitive(e, "name");
                const cJSON *t = cJSON_GetObjectItemCaseSensitive(e, "template");
                if (cJSON_IsString(n) && cJSON_IsString(t) && !strcmp(n->valuestring, want)) {
                    text_len = gk_json_strlen(t);
                    text = malloc(text_len + 1);
                    if (text) {
                        memcpy(text, t->valuestring, text_len);
                        text[text_len] = 0;
                    }
                    break;
                }
            }
            if (!text) {
                st = gk_err_set(err, GK_ERR_NOT_FOUND, "%s: no chat template named '%s'", cfg_path, want);
                goto out;
            }
        } else if (ct && !cJSON_IsNull(ct)) {
            st = gk_err_set(err, GK_ERR_FORMAT, "%s: 'chat_template' is neither a string nor a list", cfg_path);
            goto out;
        }
    }
    if (!text && gk_path_exists(jinja_path)) {
        st = gk_read_file(jinja_path, &text, &text_len, err);
        if (st != GK_OK)
            goto out;
    }
    if (!text) {
        st = gk_err_set(err, GK_ERR_NOT_FOUND, "%s: no chat template (tokenizer_config.json's chat_template or "
                                               "chat_template.jinja)", model_dir);
        goto out;
    }
    char *sp = cJSON_PrintUnformatted(special);
    st = sp ? gk_chat_template_parse(text, text_len, sp, out, err) : gk_err_set(err, GK_ERR_NOMEM, "out of memory");
    cJSON_free(sp);
out:
    free(cfg_path);
    free(jinja_path);
    free(text);
    free(cfg);
    cJSON_Delete(j);
    cJSON_Delete(special);
    return st;
}

void gk_chat_template_destroy(gk_chat_template *t)
{
    if (!t)
        return;
    jinja_free(t->t);
    cJSON_Delete(t->special);
    free(t);
}

/* The variables of a render, messages given as a value. */
static gk_status render(const gk_chat_template *t, jarena *a, jv messages, bool add_generation_prompt,
                        const char *extra_json, char **out, size_t *len, gk_err *err)
{
    jv vars = jv_dict(a);
    if (vars.kind == JV_UNDEF)
        return gk_err_set(err, GK_ERR_NOMEM, "out of memory");
    jv_dict_set(a, &vars, jv_str("messages", 8), messages);
    jv_dict_set(a, &vars, jv_str("add_generation_prompt", 21), jv_bool(add_generation_prompt));
    jv_dict_set(a, &vars, jv_str("tools", 5), jv_none());
    jv_dict_set(a, &vars, jv_str("documents", 9), jv_none());
    for (const cJSON *it = t->special->child; it; it = it->next)
        if (cJSON_IsString(it))
            jv_dict_set(a, &vars, jv_str(it->string, strlen(it->string)), jv_from_json(a, it));
    if (extra_json) {
        gk_json_error je;
        cJSON *x = gk_json_parse(extra_json, strlen(extra_json), &je);
        if (!cJSON_IsObject(x)) {
            cJSON_Delete(x);
            return gk_err_set(err, GK_ERR_INVALID_ARG, "chat template: the extra variables are not a JSON object");
        }
        for (const cJSON *it = x->child; it; it = it->next) {
            char *k = ja_strndup(a, it->string, strlen(it->string));
            if (k)
                jv_dict_set(a, &vars, jv_str(k, strlen(k)), jv_from_json(a, it));
        }
        cJSON_Delete(x);
    }
    if (a->failed)
        return gk_err_set(err, GK_ERR_NOMEM, "out of memory");
    return jinja_render(t->t, a, &vars, out, len, err);
}

gk_status gk_chat_render_json(const gk_chat_template *t, const char *messages_json, bool add_generation_prompt,
                              const char *extra_json, char **out, size_t *len, gk_err *err)
{
    if (!t || !messages_json || !out)
        return gk_err_set(err, GK_ERR_INVALID_ARG, "gk_chat_render_json: NULL argument");
    *out = NULL;
    gk_json_error je;
    cJSON *m = gk_json_parse(messages_json, strlen(messages_json), &je);
    if (!cJSON_IsArray(m)) {
        cJSON_Delete(m);
        return gk_err_set(err, GK_ERR_INVALID_ARG, "chat template: the messages are not a JSON array");
    }
    jarena a = {0};
    gk_status st = render(t, &a, jv_from_json(&a, m), add_generation_prompt, extra_json, out, len, err);
    cJSON_Delete(m);
    ja_free(&a);
    return st;
}

gk_status gk_chat_render(const gk_chat_template *t, const gk_chat_msg *msgs, size_t n, bool add_generation_prompt,
                         const char *extra_json, char **out, size_t *len, gk_err *err)
{
    if (!t || !out || (!msgs && n))
        return gk_err_set(err, GK_ERR_INVALID_ARG, "gk_chat_render: NULL argument");
    *out = NULL;
    jarena a = {0};
    jv list = jv_list(&a);
    gk_status st = GK_OK;
    for (size_t i = 0; i < n && st == GK_OK; i++) {
        jv m = jv_dict(&a);
        if (m.kind == JV_UNDEF)
            break;
        const gk_chat_msg *g = &msgs[i];
        if (!g->role) {
            st = gk_err_set(err, GK_ERR_INVALID_ARG, "chat message %zu has no role", i);
            break;
        }
        jv_dict_set(&a, &m, jv_str("role", 4), jv_str(g->role, strlen(g->role)));
        jv_dict_set(&a, &m, jv_str("content", 7), g->content ? jv_str(g->content, strlen(g->content)) : jv_none());
        if (g->tool_calls_json) {
            gk_json_error je;
            cJSON *tc = gk_json_parse(g->tool_calls_json, strlen(g->tool_calls_json), &je);
            if (!tc) {
                st = gk_err_set(err, GK_ERR_INVALID_ARG, "chat message %zu: tool_calls is not JSON", i);
                break;
            }
            jv_dict_set(&a, &m, jv_str("tool_calls", 10), jv_from_json(&a, tc));
            cJSON_Delete(tc);
        }
        if (g->tool_call_id)
            jv_dict_set(&a, &m, jv_str("tool_call_id", 12), jv_str(g->tool_call_id, strlen(g->tool_call_id)));
        if (g->name)
            jv_dict_set(&a, &m, jv_str("name", 4), jv_str(g->name, strlen(g->name)));
        jv_list_push(&a, &list, m);
    }
    if (st == GK_OK)
        st = a.failed ? gk_err_set(err, GK_ERR_NOMEM, "out of memory")
                      : render(t, &a, list, add_generation_prompt, extra_json, out, len, err);
    ja_free(&a);
    return st;
}

void gk_chat_set_clock(int64_t unix_seconds) { jinja_set_clock((time_t)unix_seconds); }
