/* test_gkrun_chat.c - gkrun --chat driven as a person at a terminal would:
 * through a pseudo-terminal, on the demo model with a chat template added.
 *
 * The oracle for what each turn prefills is the test's own rendering of the
 * conversation (gk_chat_render on the same template, encoded without special
 * tokens) with the replies as gkrun printed them. Ctrl-C is the terminal's:
 * the test writes \x03 to the pty master, and the line discipline signals the
 * foreground process group. Every wait has a deadline; nothing sleeps. */
#include <criterion/criterion.h>

#include <gk/gk.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

/* Seconds any one expected output may take (sanitizer builds are slow). */
#define DEADLINE_S 90

/* Zephyr's template (TinyLlama chat), written with the demo model's EOS. */
static const char TEMPLATE[] =
    "{% for message in messages %}{{ '<|' + message['role'] + '|>\\n' + message['content'] + eos_token + '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}";

/* ------------------------------------------------------------ the model */

static char model_dir[PATH_MAX];

/* A folder with the demo model's files (links) and a tokenizer_config.json
 * holding TEMPLATE. Removed by remove_model. */
static void make_model(void)
{
    const char *data = getenv("GK_TEST_DATA") ? getenv("GK_TEST_DATA") : "data";
    char demo_rel[PATH_MAX], demo[PATH_MAX];
    snprintf(demo_rel, sizeof demo_rel, "%s/../../models/kjv-demo", data);
    cr_assert(realpath(demo_rel, demo), "%s", demo_rel);
    snprintf(model_dir, sizeof model_dir, "/tmp/gkrun-chat-XXXXXX");
    cr_assert(mkdtemp(model_dir));
    const char *files[] = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char from[PATH_MAX + 64], to[PATH_MAX + 64];
        snprintf(from, sizeof from, "%s/%s", demo, files[i]);
        snprintf(to, sizeof to, "%s/%s", model_dir, files[i]);
        cr_assert_eq(symlink(from, to), 0, "%s: %s", to, strerror(errno));
    }
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/tokenizer_config.json", model_dir);
    FILE *f = fopen(path, "w");
    cr_assert(f);
    fputs("{\"eos_token\": \"<|endoftext|>\", \"bos_token\": null, \"chat_template\": \"", f);
    for (const char *p = TEMPLATE; *p; p++) /* as a JSON string */
        fprintf(f, *p == '"' || *p == '\\' ? "\\%c" : "%c", *p);
    fputs("\"}\n", f);
    fclose(f);
}

static void remove_model(void)
{
    const char *files[] = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                           "tokenizer_config.json"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char p[PATH_MAX + 64];
        snprintf(p, sizeof p, "%s/%s", model_dir, files[i]);
        unlink(p);
    }
    rmdir(model_dir);
}

/* ------------------------------------------------------ gkrun on a pty */

typedef struct proc {
    pid_t pid;
    int master;
    char *buf;                 /* everything read so far, NUL-terminated */
    size_t len, cap;
    size_t pos;                /* where the next expect starts looking */
    bool closed;               /* the child side is gone (EIO) */
    int status;                /* waitpid's, once reaped */
    bool reaped;
} proc;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Start gkrun -m MODEL --backend cpu_ref --chat --temp 0 plus args (NULL-
 * terminated) on a new pty: its own session, the pty its controlling
 * terminal, no echo, no output processing, no flush on Ctrl-C. */
static void spawn(proc *p, ...)
{
    char gkrun[PATH_MAX];
    snprintf(gkrun, sizeof gkrun, "%s/tools/gkrun", getenv("GK_TEST_BUILD_ROOT"));
    const char *argv[32] = {gkrun, "-m", model_dir, "--backend", "cpu_ref", "--chat", "--temp", "0"};
    int argc = 8;
    va_list ap;
    va_start(ap, p);
    for (const char *a; (a = va_arg(ap, const char *));)
        argv[argc++] = a;
    va_end(ap);
    argv[argc] = NULL;

    *p = (proc){.cap = 1 << 16};
    p->buf = malloc(p->cap);
    p->buf[0] = '\0';
    p->master = posix_openpt(O_RDWR | O_NOCTTY);
    cr_assert(p->master >= 0, "posix_openpt: %s", strerror(errno));
    cr_assert_eq(grantpt(p->master), 0);
    cr_assert_eq(unlockpt(p->master), 0);
    const char *slave = ptsname(p->master);
    cr_assert(slave);
    fflush(NULL);
    p->pid = fork();
    cr_assert(p->pid >= 0);
    if (p->pid == 0) {
        setsid();
        int s = open(slave, O_RDWR); /* the session leader's first tty: its controlling terminal */
        if (s < 0)
            _exit(120);
        struct termios t;
        tcgetattr(s, &t);
        t.c_lflag &= ~(tcflag_t)(ECHO | ECHONL);
        t.c_lflag |= NOFLSH;
        t.c_oflag &= ~(tcflag_t)OPOST;
        tcsetattr(s, TCSANOW, &t);
        dup2(s, 0), dup2(s, 1), dup2(s, 2);
        if (s > 2)
            close(s);
        close(p->master);
        execv(gkrun, (char *const *)argv);
        _exit(121);
    }
    fcntl(p->master, F_SETFL, fcntl(p->master, F_GETFL) | O_NONBLOCK);
}

/* Read what is there, waiting up to ms for it. */
static void pump(proc *p, int ms)
{
    struct pollfd fd = {.fd = p->master, .events = POLLIN};
    if (p->closed || poll(&fd, 1, ms) <= 0)
        return;
    for (;;) {
        if (p->cap - p->len < 4096)
            p->buf = realloc(p->buf, p->cap *= 2);
        ssize_t n = read(p->master, p->buf + p->len, p->cap - p->len - 1);
        if (n > 0) {
            p->len += (size_t)n;
            p->buf[p->len] = '\0';
            continue;
        }
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
            p->closed = true; /* EIO: the last holder of the slave has gone */
        return;
    }
}

/* Wait for needle after p->pos; returns its offset in p->buf and moves
 * p->pos past it. Fails the test, showing the output, at the deadline. */
static size_t expect(proc *p, const char *needle)
{
    double end = now_s() + DEADLINE_S;
    for (;;) {
        const char *hit = strstr(p->buf + p->pos, needle);
        if (hit) {
            size_t at = (size_t)(hit - p->buf);
            p->pos = at + strlen(needle);
            return at;
        }
        cr_assert(!p->closed && now_s() < end, "gkrun %s before printing '%s'; it printed:\n%s",
                  p->closed ? "ended" : "timed out", needle, p->buf);
        pump(p, 200);
    }
}

static void send_text(proc *p, const char *s)
{
    size_t n = strlen(s);
    cr_assert_eq(write(p->master, s, n), (ssize_t)n);
}

/* The exit status of gkrun, waiting for it (and draining its output). */
static int wait_exit(proc *p)
{
    double end = now_s() + DEADLINE_S;
    while (!p->reaped) {
        pid_t r = waitpid(p->pid, &p->status, WNOHANG);
        if (r == p->pid) {
            p->reaped = true;
            break;
        }
        cr_assert(now_s() < end, "gkrun did not exit; it printed:\n%s", p->buf);
        pump(p, 50);
    }
    pump(p, 0);
    return WIFEXITED(p->status) ? WEXITSTATUS(p->status) : 128 + WTERMSIG(p->status);
}

static void finish(proc *p)
{
    if (!p->reaped) {
        kill(p->pid, SIGKILL);
        waitpid(p->pid, &p->status, 0);
    }
    close(p->master);
    free(p->buf);
}

/* ------------------------------------------------------ reading a turn */

typedef struct turn_stats {
    long long n_prompt, reused, prefilled, n_gen;
    char why[64];
} turn_stats;

/* After a line was sent: the reply (heap) as printed up to the statistics
 * line, which is parsed into *st; then waits for the next prompt. gkrun's
 * notices ("gkrun: ..." lines) come before the reply and are not part of it. */
static char *read_turn(proc *p, turn_stats *st)
{
    size_t start = p->pos;
    size_t at = expect(p, "\n-- prompt ");
    while (!strncmp(p->buf + start, "gkrun: ", 7) && start < at)
        start = (size_t)(strchr(p->buf + start, '\n') - p->buf) + 1;
    size_t eol = expect(p, "\n");
    char line[512];
    snprintf(line, sizeof line, "%.*s", (int)(eol - at - 1), p->buf + at + 1);
    *st = (turn_stats){0};
    cr_assert_eq(sscanf(line, "-- prompt %lld tokens: %lld reused, %lld prefilled (%*f tokens/s); "
                              "reply %lld tokens (%*f tokens/s, %63[^)])",
                        &st->n_prompt, &st->reused, &st->prefilled, &st->n_gen, st->why), 5,
                 "statistics line: %s", line);
    char *reply = strndup(p->buf + start, at - start);
    expect(p, "\n> ");
    return reply;
}

/* ------------------------------------------------------------- oracle */

typedef struct convo {
    const char *role[64];
    char *content[64];
    size_t n;
} convo;

static void convo_add(convo *c, const char *role, const char *content)
{
    cr_assert(c->n < 64);
    c->role[c->n] = role;
    c->content[c->n++] = strdup(content);
}

static void convo_free(convo *c)
{
    for (size_t i = 0; i < c->n; i++)
        free(c->content[i]);
    c->n = 0;
}

/* The ids gkrun should feed for messages [0, keep) and [from, n) of c, with
 * the generation prompt; *ids heap. */
static size_t oracle_ids(const convo *c, size_t keep, size_t from, int32_t **ids)
{
    gk_err err = {0};
    gk_chat_template *t;
    gk_tokenizer *tok;
    cr_assert_eq(gk_chat_template_load(model_dir, NULL, &t, &err), GK_OK, "%s", err.msg);
    cr_assert_eq(gk_tokenizer_load(model_dir, &tok, &err), GK_OK, "%s", err.msg);
    gk_chat_msg m[64];
    size_t k = 0;
    for (size_t i = 0; i < c->n; i++)
        if (i < keep || i >= from)
            m[k++] = (gk_chat_msg){.role = c->role[i], .content = c->content[i]};
    char *text;
    size_t len, n_ids;
    cr_assert_eq(gk_chat_render(t, m, k, true, NULL, &text, &len, &err), GK_OK, "%s", err.msg);
    cr_assert_eq(gk_tokenizer_encode(tok, text, len, false, ids, &n_ids, &err), GK_OK, "%s", err.msg);
    free(text);
    gk_tokenizer_destroy(tok);
    gk_chat_template_destroy(t);
    return n_ids;
}

static size_t common_prefix(const int32_t *a, size_t na, const int32_t *b, size_t nb)
{
    size_t i = 0;
    while (i < na && i < nb && a[i] == b[i])
        i++;
    return i;
}

/* -------------------------------------------------------------- tests */

static const char *const LINES[] = {
    "Who made the heaven and the earth?",
    "And what did he say on the first day?",
    "Tell me of the waters.",
    "Who was Abraham?",
    "What is the law of the Lord?",
    "Where is the land of Egypt?",
    "And who led the people out?",
    "Sing a psalm of David.",
};

/* Five turns on one KV cache: each turn prefills only what the cache does
 * not hold. Turn k's prompt is the test's own rendering of the conversation
 * so far (system prompt kept first); it reuses at least what it shares with
 * turn k-1's prompt, never more than the cache holds, and prefills the rest.
 * End of input then ends the chat with status 0 and the totals. */
Test(gkrun_chat, five_turns_prefill_only_the_new_tokens, .timeout = 600, .init = make_model, .fini = remove_model)
{
    proc p;
    spawn(&p, "-n", "12", "--system-prompt", "Thou art a scribe.", NULL);
    expect(&p, "chat with");
    expect(&p, "\n> ");
    convo c = {0};
    convo_add(&c, "system", "Thou art a scribe.");
    int32_t *prev = NULL;
    size_t n_prev = 0;
    long long held = 0; /* tokens the cache holds after the previous turn */
    for (int k = 0; k < 5; k++) {
        send_text(&p, LINES[k]);
        send_text(&p, "\n");
        turn_stats st;
        char *reply = read_turn(&p, &st);
        convo_add(&c, "user", LINES[k]);
        int32_t *ids;
        size_t n_ids = oracle_ids(&c, c.n, c.n, &ids);
        cr_expect_eq(st.n_prompt, (long long)n_ids, "turn %d: the prompt is the conversation rendered", k);
        cr_expect_eq(st.reused + st.prefilled, st.n_prompt, "turn %d", k);
        cr_expect_gt(st.n_gen, 0, "turn %d", k);
        if (k > 0) {
            size_t shared = common_prefix(prev, n_prev, ids, n_ids);
            cr_expect_gt(st.reused, 0, "turn %d reuses the cache", k);
            cr_expect_geq(st.reused, (long long)shared, "turn %d reuses what it shares with turn %d's prompt", k,
                          k - 1);
            cr_expect_leq(st.reused, held, "turn %d reuses no more than the cache holds", k);
            cr_expect_eq(st.prefilled, (long long)n_ids - st.reused, "turn %d prefills only the new tokens", k);
        } else {
            cr_expect_eq(st.prefilled, st.n_prompt, "turn 0 prefills the whole prompt");
        }
        held = st.n_prompt + st.n_gen - 1;
        convo_add(&c, "assistant", reply);
        free(reply);
        free(prev);
        prev = ids;
        n_prev = n_ids;
    }
    free(prev);
    send_text(&p, "\x04"); /* the terminal's end of input */
    expect(&p, "-- chat: 5 replies");
    cr_expect_eq(wait_exit(&p), 0, "%s", p.buf);
    convo_free(&c);
    finish(&p);
}

/* A conversation longer than the context goes on: the oldest turns after the
 * system prompt are dropped, with a notice, and the rest is read again (the
 * prompt is the rendering of what is left; the cache keeps only what that
 * shares with the previous prompt, the system prompt first); a message that
 * cannot fit at all is refused and the chat continues. */
Test(gkrun_chat, longer_than_the_context_drops_old_turns, .timeout = 600, .init = make_model, .fini = remove_model)
{
    proc p;
    spawn(&p, "-n", "8", "-c", "96", "-sys", "Be brief.", NULL);
    expect(&p, "\n> ");
    convo c = {0};
    convo_add(&c, "system", "Be brief.");
    int32_t *sys_ids;
    size_t n_sys = oracle_ids(&c, c.n, c.n, &sys_ids); /* the system message and the generation prompt */
    free(sys_ids);
    int32_t *prev = NULL;
    size_t n_prev = 0;
    int drops = 0;
    for (int k = 0; k < 8; k++) {
        send_text(&p, LINES[k]);
        send_text(&p, "\n");
        size_t before = p.pos;
        turn_stats st;
        char *reply = read_turn(&p, &st);
        convo_add(&c, "user", LINES[k]);
        const char *notice = strstr(p.buf + before, "the context of 96 tokens is full: dropped the ");
        bool dropped = notice && (size_t)(notice - p.buf) < p.pos;
        if (dropped) {
            size_t n_drop = 0;
            cr_assert_eq(sscanf(notice, "the context of 96 tokens is full: dropped the %zu oldest", &n_drop), 1);
            cr_assert(n_drop >= 2 && n_drop + 1 < c.n, "dropped %zu of %zu messages", n_drop, c.n);
            /* what gkrun keeps: the system prompt, then the newest messages */
            for (size_t i = 1; i <= n_drop; i++)
                free(c.content[i]);
            memmove(c.content + 1, c.content + 1 + n_drop, (c.n - 1 - n_drop) * sizeof *c.content);
            memmove(c.role + 1, c.role + 1 + n_drop, (c.n - 1 - n_drop) * sizeof *c.role);
            c.n -= n_drop;
            drops++;
        }
        int32_t *ids;
        size_t n_ids = oracle_ids(&c, c.n, c.n, &ids);
        cr_expect_eq(st.n_prompt, (long long)n_ids, "turn %d: the prompt is what is left, rendered", k);
        cr_expect_eq(st.reused + st.prefilled, st.n_prompt, "turn %d", k);
        cr_expect_leq(st.n_prompt + 8, 96, "turn %d fits the context with room for the reply", k);
        if (dropped) {
            /* the cache parts from the new prompt inside the previous one */
            size_t shared = common_prefix(prev, n_prev, ids, n_ids);
            cr_expect_lt(shared, n_prev);
            cr_expect_eq(st.reused, (long long)shared, "turn %d keeps what it shares with the last prompt", k);
            cr_expect_geq(st.reused, (long long)n_sys - 8, "turn %d keeps the system prompt", k);
            cr_expect_leq(st.n_prompt, 96 / 2, "turn %d: cut to half the context", k);
        }
        convo_add(&c, "assistant", reply);
        free(reply);
        free(prev);
        prev = ids;
        n_prev = n_ids;
    }
    free(prev);
    cr_expect_gt(drops, 0, "the conversation never filled the context:\n%s", p.buf);

    /* one line longer than the context */
    char big[2048] = "";
    for (int i = 0; i < 40; i++)
        strcat(big, "and the earth was without form, ");
    strcat(big, "\n");
    send_text(&p, big);
    expect(&p, "leave no room for a reply in the context of 96 tokens");
    expect(&p, "\n> ");
    send_text(&p, "Amen.\n");
    turn_stats st;
    free(read_turn(&p, &st));
    cr_expect_gt(st.n_gen, 0);
    send_text(&p, "/exit\n");
    expect(&p, "-- chat: 9 replies");
    cr_expect_eq(wait_exit(&p), 0, "%s", p.buf);
    convo_free(&c);
    finish(&p);
}

/* Ctrl-C during a reply ends that reply and returns to the prompt; the part
 * printed stays in the conversation (the next prompt is its rendering).
 * Ctrl-C at the prompt then ends the chat with status 0. The reply cannot end
 * on its own first: gkrun is stopped (SIGSTOP) as soon as the reply starts,
 * the Ctrl-C is typed, and only then does it go on. */
Test(gkrun_chat, ctrl_c_stops_the_reply_then_quits_at_the_prompt, .timeout = 600, .init = make_model,
     .fini = remove_model)
{
    proc p;
    spawn(&p, "-n", "200", NULL);
    expect(&p, "\n> ");
    send_text(&p, "Tell me all the generations of Adam.\n");
    size_t start = p.pos;
    double end = now_s() + DEADLINE_S;
    while (p.len == start) { /* the first text of the reply */
        cr_assert(!p.closed && now_s() < end, "no reply:\n%s", p.buf);
        pump(&p, 200);
    }
    cr_assert_eq(kill(p.pid, SIGSTOP), 0);
    int status;
    cr_assert_eq(waitpid(p.pid, &status, WUNTRACED), p.pid);
    cr_assert(WIFSTOPPED(status));
    send_text(&p, "\x03");
    cr_assert_eq(kill(p.pid, SIGCONT), 0);
    turn_stats st;
    char *partial = read_turn(&p, &st);
    cr_expect_str_eq(st.why, "stopped by Ctrl-C", "%s", p.buf);
    cr_expect_lt(st.n_gen, 200);

    convo c = {0};
    convo_add(&c, "user", "Tell me all the generations of Adam.");
    convo_add(&c, "assistant", partial);
    convo_add(&c, "user", "Amen.");
    free(partial);
    int32_t *ids;
    size_t n_ids = oracle_ids(&c, c.n, c.n, &ids);
    free(ids);
    send_text(&p, "Amen.\n");
    free(read_turn(&p, &st));
    cr_expect_eq(st.n_prompt, (long long)n_ids, "the stopped reply is part of the conversation");
    cr_expect_gt(st.reused, 0);

    send_text(&p, "\x03"); /* at the prompt */
    expect(&p, "-- chat: 2 replies");
    cr_expect_eq(wait_exit(&p), 0, "%s", p.buf);
    convo_free(&c);
    finish(&p);
}
