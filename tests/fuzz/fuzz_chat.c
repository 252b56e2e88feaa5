/* fuzz_chat.c - libFuzzer harness for gkrun's chat templates (tools/gkrun_chat.c,
 * compiled into this harness).
 *
 * Input: tokenizer_config.json up to the first NUL byte, then fields separated
 * by 0x1E (record separator): role, content, role, content, ...; an unpaired
 * last field is the BOS text. Roles and the BOS text end at their first NUL;
 * contents may hold NUL bytes. The file is written to the scratch folder and its
 * chat_template read back with gkrun_chat_template (a string, or a list of named
 * templates), its kind recognised, and the messages rendered with that kind and
 * every other, by gkrun_chat_render (contents cut at a NUL) and
 * gkrun_chat_render_len (whole contents). For plain text and ChatML the length
 * of the result is checked against the template's arithmetic. Not here: the chat
 * loop and the encoding of the rendered text (gkrun_generate.c).
 */
#include "fuzz.h"
#include "gkrun_chat.h"

#define MAX_MSGS 16

/* The length gkrun_chat_render_len must give, for the kinds simple enough to
 * count (SIZE_MAX for the others). */
static size_t expected_len(chat_kind kind, const chat_msg *msgs, const size_t *lens, size_t n)
{
    size_t total = 0;
    if (kind == CHAT_NONE) {
        for (size_t i = 0; i < n; i++)
            total += lens[i] + (i > 0);
        return total;
    }
    if (kind == CHAT_CHATML) {
        for (size_t i = 0; i < n; i++)
            total += strlen("<|im_start|>\n<|im_end|>\n") + strlen(msgs[i].role) + lens[i];
        return total + strlen("<|im_start|>assistant\n");
    }
    return SIZE_MAX;
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
    char *buf = malloc(n + 1);
    if (!buf)
        fz_die("out of memory", "input");
    memcpy(buf, d, n);
    buf[n] = '\0';
    size_t cfg_len = strlen(buf);
    char file[FZ_PATH_MAX];
    fz_write(fz_path(file, "tokenizer_config.json"), buf, cfg_len);

    /* Cut the fields in place: each ends at a 0x1E (made a NUL) or the end. */
    chat_msg msgs[MAX_MSGS];
    size_t lens[MAX_MSGS], n_msgs = 0;
    const char *bos = NULL, *end = buf + n;
    for (char *q = cfg_len < n ? buf + cfg_len + 1 : NULL; q && n_msgs < MAX_MSGS;) {
        char *role = q, *sep = memchr(q, 0x1e, (size_t)(end - q));
        if (!sep) {
            bos = role;
            break;
        }
        *sep = '\0';
        char *content = sep + 1;
        sep = memchr(content, 0x1e, (size_t)(end - content));
        lens[n_msgs] = (size_t)((sep ? sep : end) - content);
        msgs[n_msgs++] = (chat_msg){role, content};
        if (sep)
            *sep = '\0';
        q = sep ? sep + 1 : NULL;
    }

    char *tmpl = gkrun_chat_template(fz_dir());
    chat_kind kind = gkrun_chat_kind(tmpl);
    const chat_kind kinds[] = {kind, CHAT_NONE, CHAT_CHATML, CHAT_LLAMA3, CHAT_ZEPHYR};
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        free(gkrun_chat_render(kinds[k], msgs, n_msgs, bos));
        size_t len = 0;
        char *out = gkrun_chat_render_len(kinds[k], msgs, lens, n_msgs, bos, &len);
        if (!out)
            continue;
        size_t want = expected_len(kinds[k], msgs, lens, n_msgs);
        if (out[len] != '\0' || (want != SIZE_MAX && len != want))
            fz_fail("gkrun_chat_render_len: length of the result", NULL);
        free(out);
    }
    free(tmpl);
    free(buf);
    return 0;
}
