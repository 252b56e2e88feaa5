/* test_gkrun_template.c - gkrun's chat-template side, run as a user would:
 * verify on chat-template golden files (a folder, one file, a tampered file)
 * and the chat-template subcommand (output, exit codes, messages). */
#include <criterion/criterion.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *data_dir(void)
{
    const char *d = getenv("GK_TEST_DATA");
    return d ? d : "data";
}

/* Run gkrun with the arguments (shell syntax); stdout+stderr into *out (heap). */
static int run(char **out, const char *fmt, ...)
{
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    int n = snprintf(cmd, sizeof cmd, "%s/tools/gkrun ", getenv("GK_TEST_BUILD_ROOT"));
    vsnprintf(cmd + n, sizeof cmd - (size_t)n, fmt, ap);
    va_end(ap);
    strncat(cmd, " 2>&1", sizeof cmd - strlen(cmd) - 1);
    FILE *p = popen(cmd, "r");
    cr_assert(p, "cannot run %s", cmd);
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    for (size_t r; (r = fread(buf + len, 1, cap - len - 1, p)) > 0;) {
        len += r;
        if (len + 1 == cap)
            buf = realloc(buf, cap *= 2);
    }
    buf[len] = '\0';
    int status = pclose(p);
    *out = buf;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    cr_assert(f, "%s", path);
    fputs(text, f);
    fclose(f);
}

static char *temp_dir(void)
{
    char *d = strdup("/tmp/gk_tmpl_XXXXXX");
    cr_assert(mkdtemp(d));
    return d;
}

Test(gkrun_template, verify_checks_every_golden_of_the_folder)
{
    char *out;
    int rc = run(&out, "verify %s/chat-templates", data_dir());
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert(strstr(out, "chat templates: 162 of 162 cases ok"), "%s", out);
    cr_assert(strstr(out, "qwen3-0.6b.json / single_user"), "a line per case:\n%s", out);
    free(out);
}

Test(gkrun_template, verify_one_file)
{
    char *out;
    int rc = run(&out, "verify %s/chat-templates/llama-2-13b-chat.json", data_dir());
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert(strstr(out, "llama-2-13b-chat.json / consecutive_user_turns") && strstr(out, "error as expected"), "%s",
              out);
    free(out);
}

Test(gkrun_template, verify_fails_on_a_tampered_golden)
{
    char *d = temp_dir(), path[512], *out;
    snprintf(path, sizeof path, "%s/t.json", d);
    write_file(path, "{\"chat_template\": \"{{ messages[0]['content'] }}!\", \"bos_token\": null, \"cases\": ["
                     "{\"name\": \"good\", \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], "
                     "\"add_generation_prompt\": false, \"extra\": {}, \"rendered\": \"hi!\", \"error\": null},"
                     "{\"name\": \"bad\", \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], "
                     "\"add_generation_prompt\": false, \"extra\": {}, \"rendered\": \"hi?\", \"error\": null}]}");
    int rc = run(&out, "verify %s", path);
    cr_assert_neq(rc, 0, "%s", out);
    cr_assert(strstr(out, "t.json / good") && strstr(out, "t.json / bad") && strstr(out, "FAIL"), "%s", out);
    cr_assert(strstr(out, "1 of 2 cases ok"), "%s", out);
    free(out);
    unlink(path);
    rmdir(d);
    free(d);
}

Test(gkrun_template, chat_template_prints_the_rendering)
{
    char *d = temp_dir(), cfg[512], msgs[512], *out;
    snprintf(cfg, sizeof cfg, "%s/tokenizer_config.json", d);
    snprintf(msgs, sizeof msgs, "%s/m.json", d);
    write_file(cfg, "{\"bos_token\": \"<s>\", \"chat_template\": \"{{ bos_token }}{% for m in messages %}"
                    "[{{ m.role }}]{{ m.content }}{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}"
                    "{{ greeting | default('') }}\"}");
    write_file(msgs, "[{\"role\": \"user\", \"content\": \"Grüße\"}]");
    cr_assert_eq(run(&out, "chat-template -m %s --messages %s", d, msgs), 0, "%s", out);
    cr_assert_str_eq(out, "<s>[user]Grüße");
    free(out);
    cr_assert_eq(run(&out, "chat-template -m %s --messages %s --add-generation-prompt --extra '{\"greeting\": \"!\"}'",
                     d, msgs), 0, "%s", out);
    cr_assert_str_eq(out, "<s>[user]Grüße[assistant]!");
    free(out);
    unlink(cfg);
    unlink(msgs);
    rmdir(d);
    free(d);
}

Test(gkrun_template, chat_template_errors_exit_non_zero)
{
    char *d = temp_dir(), cfg[512], msgs[512], *out;
    snprintf(cfg, sizeof cfg, "%s/tokenizer_config.json", d);
    snprintf(msgs, sizeof msgs, "%s/m.json", d);
    write_file(msgs, "[{\"role\": \"user\", \"content\": \"x\"}]");
    /* no template at all */
    cr_assert_neq(run(&out, "chat-template -m %s --messages %s", d, msgs), 0);
    cr_assert(strstr(out, "no chat template"), "%s", out);
    free(out);
    /* raise_exception's message reaches the user */
    write_file(cfg, "{\"chat_template\": \"{{ raise_exception('Only user roles!') }}\"}");
    cr_assert_neq(run(&out, "chat-template -m %s --messages %s", d, msgs), 0);
    cr_assert(strstr(out, "Only user roles!"), "%s", out);
    free(out);
    /* messages that are not JSON, a missing file, a missing -m */
    write_file(msgs, "[{");
    cr_assert_neq(run(&out, "chat-template -m %s --messages %s", d, msgs), 0);
    free(out);
    cr_assert_neq(run(&out, "chat-template -m %s --messages %s/none.json", d, d), 0);
    free(out);
    cr_assert_neq(run(&out, "chat-template --messages %s", msgs), 0);
    cr_assert(strstr(out, "usage"), "%s", out);
    free(out);
    unlink(cfg);
    unlink(msgs);
    rmdir(d);
    free(d);
}
