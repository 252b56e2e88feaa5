/* test_gkrun_template.c - gkrun's chat-template commands: `gkrun verify` on
 * chat-template goldens (tests/data/chat-templates, rendered by Python
 * jinja2) passes them all and fails, naming the case, on a golden whose
 * expected text was altered; `gkrun chat-template` prints a model folder's
 * rendering and refuses what it cannot render. */
#include <criterion/criterion.h>

#include "gkrun_run.h"
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    cr_assert(f, "%s", path);
    fputs(text, f);
    fclose(f);
}

Test(gkrun_template, verify_passes_every_golden)
{
    char *out;
    int rc = run(&out, "verify %s/chat-templates", data_dir());
    cr_expect_eq(rc, 0, "%s", out);
    cr_expect(strstr(out, "summary: 162 of 162 chat-template cases pass: PASS"), "%s", out);
    free(out);
}

Test(gkrun_template, verify_fails_on_an_altered_golden)
{
    char dir[] = "/tmp/gk-tmpl-XXXXXX", path[256];
    cr_assert(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/t.json", dir);
    write_file(path, "{\"chat_template\": \"{% for m in messages %}[{{ m.role }}] {{ m.content }}{% endfor %}\","
                     " \"bos_token\": null, \"cases\": ["
                     " {\"name\": \"right\", \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}],"
                     "  \"add_generation_prompt\": false, \"extra\": {}, \"rendered\": \"[user] hi\", \"error\": null},"
                     " {\"name\": \"altered\", \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}],"
                     "  \"add_generation_prompt\": false, \"extra\": {}, \"rendered\": \"[user]  hi\", \"error\": null}]}");
    char *out;
    int rc = run(&out, "verify %s", path);
    cr_expect_eq(rc, 1, "%s", out);
    cr_expect(strstr(out, "right") && strstr(out, "PASS"), "%s", out);
    cr_expect(strstr(out, "altered") && strstr(out, "FAIL"), "%s", out);
    cr_expect(strstr(out, "summary: 1 of 2"), "%s", out);
    free(out);
    remove(path);
    rmdir(dir);
}

Test(gkrun_template, chat_template_prints_the_rendering)
{
    char dir[] = "/tmp/gk-tmpl-XXXXXX", cfg[256], msgs[256];
    cr_assert(mkdtemp(dir));
    snprintf(cfg, sizeof cfg, "%s/tokenizer_config.json", dir);
    snprintf(msgs, sizeof msgs, "%s/messages.json", dir);
    write_file(cfg, "{\"eos_token\": \"</s>\", \"chat_template\": \"{% for m in messages %}<|{{ m.role }}|>"
                    "{{ m.content | trim }}{{ eos_token }}{% endfor %}{% if add_generation_prompt %}<|assistant|>"
                    "{% endif %}{% if messages[0].role != 'user' %}{{ raise_exception('user first') }}{% endif %}\"}");
    write_file(msgs, "[{\"role\": \"user\", \"content\": \" Hello \"}]");
    char *out;
    cr_expect_eq(run(&out, "chat-template -m %s --messages %s --add-generation-prompt", dir, msgs), 0, "%s", out);
    cr_expect_str_eq(out, "<|user|>Hello</s><|assistant|>");
    free(out);
    write_file(msgs, "[{\"role\": \"system\", \"content\": \"x\"}]");
    cr_expect_eq(run(&out, "chat-template -m %s --messages %s", dir, msgs), 1, "%s", out);
    cr_expect(strstr(out, "user first"), "%s", out);
    free(out);
    write_file(msgs, "{\"role\": \"user\"}");
    cr_expect_eq(run(&out, "chat-template -m %s --messages %s", dir, msgs), 1, "%s", out);
    cr_expect(strstr(out, "not a JSON array"), "%s", out);
    free(out);
    cr_expect_eq(run(&out, "chat-template -m %s", dir), 2, "%s", out);
    free(out);
    remove(cfg);
    remove(msgs);
    rmdir(dir);
}
