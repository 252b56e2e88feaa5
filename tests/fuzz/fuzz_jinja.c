/* fuzz_jinja.c - libFuzzer harness for the chat-template interpreter
 * (text/jinja*.c through the gk_chat_* API of gk.h).
 *
 * Input: template text up to the first NUL byte, then (optionally) a JSON
 * array of messages. The template is parsed with a bos/eos pair; when it
 * parses, it is rendered over the input's messages (when they are a JSON
 * array), over two fixed messages given as gk_chat_msg structs (one with
 * tool calls), with and without the generation prompt and with extra
 * variables. Every failure must be a status with a message; a rendering must
 * be NUL-terminated at its length. The clock is fixed so runs reproduce.
 * Not here: loading from a folder (gk_chat_template_load's file reading is
 * the tokenizer_config.json harnesses' ground).
 */
#include "fuzz.h"

static void check(gk_status s, char *out, size_t len, const gk_err *err)
{
    if (s == GK_OK) {
        if (!out || out[len] != '\0')
            fz_die("rendering", "not NUL-terminated at its length");
    } else if (!err->msg[0]) {
        fz_die("render failure", "no message");
    }
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
    char *buf = malloc(n + 1);
    if (!buf)
        fz_die("out of memory", "input");
    memcpy(buf, d, n);
    buf[n] = '\0';
    size_t tlen = strlen(buf);
    const char *msgs_json = tlen < n ? buf + tlen + 1 : NULL;
    gk_chat_set_clock(1781524800); /* 2026-06-15T12:00:00 */
    gk_chat_template *t = NULL;
    gk_err err = {0};
    if (gk_chat_template_parse(buf, tlen, "{\"bos_token\": \"<s>\", \"eos_token\": \"</s>\"}", &t, &err) != GK_OK) {
        if (!err.msg[0])
            fz_die("parse failure", "no message");
        free(buf);
        return 0;
    }
    char *out;
    size_t len;
    if (msgs_json) {
        for (int agp = 0; agp < 2; agp++) {
            gk_err e = {0};
            out = NULL, len = 0;
            check(gk_chat_render_json(t, msgs_json, agp, NULL, &out, &len, &e), out, len, &e);
        }
    }
    const gk_chat_msg m[] = {
        {.role = "system", .content = "You are {{ helpful }}."},
        {.role = "user", .content = "Hi \xe2\x80\x9cthere\xe2\x80\x9d"},
        {.role = "assistant", .content = NULL,
         .tool_calls_json = "[{\"type\": \"function\", \"function\": {\"name\": \"f\", \"arguments\": {\"x\": 1.5}}}]"},
        {.role = "tool", .content = "22.0", .tool_call_id = "call0", .name = "f"},
    };
    static const char *const extras[] = {NULL, "{\"enable_thinking\": false, \"tools\": [{\"type\": \"function\", "
                                               "\"function\": {\"name\": \"f\", \"parameters\": {}}}]}"};
    for (int k = 0; k < 2; k++) {
        gk_err e = {0};
        out = NULL, len = 0;
        check(gk_chat_render(t, m, sizeof m / sizeof m[0], k == 1, extras[k], &out, &len, &e), out, len, &e);
    }
    gk_chat_template_destroy(t);
    gk_chat_set_clock(0);
    free(buf);
    return 0;
}
