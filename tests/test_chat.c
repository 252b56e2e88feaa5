/* test_chat.c - gkrun's chat templates against transformers' rendering.
 *
 * The oracle is tests/data/chat/golden.json, written by
 * tools/make_chat_golden.py: apply_chat_template with add_generation_prompt on
 * one four-message conversation, for the qwen3 (ChatML), llama3 and TinyLlama
 * (Zephyr) templates, as text and as ids. */
#include <criterion/criterion.h>

#include "../tools/gkrun_chat.h"

#include <cjson/cJSON.h>
#include <gk/gk.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static cJSON *golden(void)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/chat/golden.json", getenv("GK_TEST_DATA") ? getenv("GK_TEST_DATA") : "data");
    FILE *f = fopen(path, "rb");
    cr_assert(f, "%s", path);
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    cJSON *j = cJSON_Parse(buf);
    cr_assert(j);
    return j;
}

static void check_case(const char *kind_name, chat_kind want_kind)
{
    cJSON *j = golden();
    const cJSON *c = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "cases"), kind_name);
    cr_assert(c);
    const char *tmpl = cJSON_GetObjectItem(c, "template")->valuestring;
    cr_expect_eq(gkrun_chat_kind(tmpl), want_kind, "template not recognised as %s", kind_name);

    const cJSON *msgs = cJSON_GetObjectItem(j, "messages");
    chat_msg m[8];
    size_t n = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, msgs) {
        m[n].role = cJSON_GetObjectItem(e, "role")->valuestring;
        m[n].content = cJSON_GetObjectItem(e, "content")->valuestring;
        n++;
    }
    char *text = gkrun_chat_render(want_kind, m, n, want_kind == CHAT_LLAMA3 ? "<|begin_of_text|>" : NULL);
    cr_assert(text);
    cr_expect_str_eq(text, cJSON_GetObjectItem(c, "text")->valuestring, "%s rendering", kind_name);

    /* and the ids the model sees: encoded without special tokens added */
    char tok_path[1024];
    const char *dir = getenv("GK_TEST_TOKENIZERS");
    cr_assert(dir, "GK_TEST_TOKENIZERS is not set");
    snprintf(tok_path, sizeof tok_path, "%s/%s-tokenizer.json", dir,
             cJSON_GetObjectItem(c, "tokenizer")->valuestring);
    gk_tokenizer *tok;
    gk_err err = {0};
    cr_assert_eq(gk_tokenizer_load(tok_path, &tok, &err), GK_OK, "%s", err.msg);
    int32_t *ids;
    size_t n_ids;
    cr_assert_eq(gk_tokenizer_encode(tok, text, strlen(text), false, &ids, &n_ids, &err), GK_OK, "%s", err.msg);
    const cJSON *want = cJSON_GetObjectItem(c, "ids");
    cr_assert_eq((int)n_ids, cJSON_GetArraySize(want), "%s: %zu ids", kind_name, n_ids);
    for (size_t i = 0; i < n_ids; i++)
        cr_expect_eq(ids[i], cJSON_GetArrayItem(want, (int)i)->valueint, "%s: id %zu", kind_name, i);
    free(ids);
    gk_tokenizer_destroy(tok);
    free(text);
    cJSON_Delete(j);
}

Test(chat, chatml_as_qwen3_template) { check_case("chatml", CHAT_CHATML); }
Test(chat, llama3_headers_trim_each_message) { check_case("llama3", CHAT_LLAMA3); }
Test(chat, zephyr_as_tinyllama_chat) { check_case("zephyr", CHAT_ZEPHYR); }

Test(chat, unknown_template_is_not_guessed)
{
    cr_expect_eq(gkrun_chat_kind("{% for m in messages %}[INST] {{ m.content }} [/INST]{% endfor %}"), CHAT_NONE);
    cr_expect_eq(gkrun_chat_kind(NULL), CHAT_NONE);
    chat_msg m[2] = {{"user", "a"}, {"assistant", "b"}};
    char *t = gkrun_chat_render(CHAT_NONE, m, 2, NULL);
    cr_expect_str_eq(t, "a\nb");
    free(t);
}
