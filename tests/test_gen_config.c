/* test_gen_config.c - generation_config.json applied to gk_gen_opts
 * (gk_gen_config_load, _parse): transformers' meaning of each key, the source
 * recorded for each value, and bad files failing with a message naming the
 * file and the key. Model folders are made in a temporary directory. Not
 * covered here: what the samplers do with the values (test_generate.c). */
#include <criterion/criterion.h>

#include "gk/gk.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------ helpers */

static char tmp_dir[64];

static void make_dir(void)
{
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/gk-gencfg-XXXXXX");
    cr_assert(mkdtemp(tmp_dir), "mkdtemp");
}

static void remove_dir(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_dir);
    (void)!system(cmd);
}

/* A model folder whose generation_config.json holds text (NULL: none). */
static const char *folder_with(const char *text)
{
    make_dir();
    if (text) {
        char path[128];
        snprintf(path, sizeof path, "%s/generation_config.json", tmp_dir);
        FILE *f = fopen(path, "w");
        cr_assert(f);
        fputs(text, f);
        fclose(f);
    }
    return tmp_dir;
}

/* ------------------------------------------------------------ meaning */

/* The brief's example: greedy, 5 tokens, a repetition penalty over the whole
 * sequence; nothing else changes. */
Test(gen_config, greedy_five_tokens_with_a_repetition_penalty, .fini = remove_dir)
{
    const char *dir = folder_with("{\"do_sample\": false, \"max_new_tokens\": 5, \"repetition_penalty\": 1.3}");
    gk_gen_opts o = gk_gen_opts_default(), d = gk_gen_opts_default();
    o.temperature = 0.8f; /* a caller default of sampling: the file makes it greedy */
    gk_gen_sources s;
    gk_err err = {0};
    cr_assert_eq(gk_gen_config_load(dir, &o, &s, &err), GK_OK, "%s", err.msg);
    cr_expect_eq(o.max_new_tokens, 5);
    cr_expect_eq(s.max_new_tokens, GK_GEN_SRC_FILE);
    cr_expect_float_eq(o.repetition_penalty, 1.3f, 1e-7);
    cr_expect_eq(s.repetition_penalty, GK_GEN_SRC_FILE);
    cr_expect_eq(o.penalty_last_n, -1);
    cr_expect_eq(s.penalty_last_n, GK_GEN_SRC_FILE);
    cr_expect_eq(o.temperature, 0.0f, "do_sample false is greedy");
    cr_expect_eq(s.temperature, GK_GEN_SRC_FILE);
    cr_expect_eq(s.do_sample, GK_GEN_SRC_FILE);
    cr_expect_not(s.do_sample_value);
    /* untouched: the caller's defaults */
    cr_expect_eq(o.top_k, d.top_k);
    cr_expect_eq(o.top_p, d.top_p);
    cr_expect_eq(o.min_p, d.min_p);
    cr_expect_eq(o.n_eos, 0);
    cr_expect_eq(s.top_k, GK_GEN_SRC_DEFAULT);
    cr_expect_eq(s.top_p, GK_GEN_SRC_DEFAULT);
    cr_expect_eq(s.min_p, GK_GEN_SRC_DEFAULT);
    cr_expect_eq(s.eos, GK_GEN_SRC_DEFAULT);
    cr_expect_eq(s.max_length, -1);
    cr_expect_str_eq(s.ignored, "");
}

/* No file: GK_OK, opts as they were, every source the default. */
Test(gen_config, a_missing_file_keeps_the_defaults, .fini = remove_dir)
{
    const char *dir = folder_with(NULL);
    gk_gen_opts o = gk_gen_opts_default();
    o.temperature = 0.7f;
    o.max_new_tokens = 33;
    gk_gen_sources s;
    memset(&s, 0x5a, sizeof s);
    gk_err err = {0};
    cr_assert_eq(gk_gen_config_load(dir, &o, &s, &err), GK_OK, "%s", err.msg);
    cr_expect_eq(o.temperature, 0.7f);
    cr_expect_eq(o.max_new_tokens, 33);
    cr_expect_eq(s.temperature, GK_GEN_SRC_DEFAULT);
    cr_expect_eq(s.max_new_tokens, GK_GEN_SRC_DEFAULT);
    cr_expect_eq(s.do_sample, GK_GEN_SRC_DEFAULT);
    cr_expect_eq(s.max_length, -1);
    cr_expect_str_eq(s.ignored, "");
    /* a file in the folder names the folder too */
    char cfg[128];
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    cr_expect_eq(gk_gen_config_load(cfg, &o, &s, &err), GK_OK, "%s", err.msg);
}

/* do_sample true with nothing else: transformers' sampling defaults. */
Test(gen_config, do_sample_true_takes_transformers_defaults)
{
    gk_gen_opts o = gk_gen_opts_default();
    gk_gen_sources s;
    gk_err err = {0};
    cr_assert_eq(gk_gen_config_parse("{\"do_sample\": true}", NULL, &o, &s, &err), GK_OK, "%s", err.msg);
    cr_expect_eq(o.temperature, 1.0f);
    cr_expect_eq(o.top_k, 50);
    cr_expect_eq(o.top_p, 1.0f);
    cr_expect_eq(o.min_p, 0.0f);
    cr_expect(s.do_sample_value);
    cr_expect_eq(s.top_k, GK_GEN_SRC_FILE);
    cr_expect_eq(o.penalty_last_n, gk_gen_opts_default().penalty_last_n, "no penalty: window unchanged");
    cr_expect_eq(s.repetition_penalty, GK_GEN_SRC_DEFAULT);
}

/* Published files (tests/data/configs): Qwen3's and Llama 3.2's values. */
Test(gen_config, published_qwen3_and_llama32)
{
    char path[1024];
    const char *d = getenv("GK_TEST_DATA") ? getenv("GK_TEST_DATA") : "data";
    gk_gen_opts o = gk_gen_opts_default();
    gk_gen_sources s;
    gk_err err = {0};
    snprintf(path, sizeof path, "%s/configs/qwen3-0.6b", d);
    cr_assert_eq(gk_gen_config_load(path, &o, &s, &err), GK_OK, "%s", err.msg);
    cr_expect_float_eq(o.temperature, 0.6f, 1e-7);
    cr_expect_eq(o.top_k, 20);
    cr_expect_float_eq(o.top_p, 0.95f, 1e-7);
    cr_expect_eq(o.n_eos, 2);
    cr_expect_eq(o.eos_ids, s.eos_ids, "eos ids point into src");
    cr_expect_eq(o.eos_ids[0], 151645);
    cr_expect_eq(o.eos_ids[1], 151643);
    cr_expect_eq(o.max_new_tokens, 100, "no max_new_tokens: the default stays");

    o = gk_gen_opts_default();
    snprintf(path, sizeof path, "%s/configs/llama-3.2-1b/config.json", d);
    cr_assert_eq(gk_gen_config_load(path, &o, &s, &err), GK_OK, "%s", err.msg);
    cr_expect_float_eq(o.temperature, 0.6f, 1e-7);
    cr_expect_eq(o.top_k, 50, "do_sample true without top_k: transformers' 50");
    cr_expect_float_eq(o.top_p, 0.9f, 1e-7);
    cr_expect_eq(o.n_eos, 3);
    cr_expect_eq(o.eos_ids[2], 128009);
    cr_expect_eq(s.eos, GK_GEN_SRC_FILE);
}

/* do_sample absent (transformers: false) is greedy whatever temperature
 * says; the ignored temperature is noted, top-k and top-p are kept. */
Test(gen_config, do_sample_absent_is_greedy)
{
    gk_gen_opts o = gk_gen_opts_default();
    gk_gen_sources s;
    gk_err err = {0};
    cr_assert_eq(gk_gen_config_parse("{\"temperature\": 0.7, \"top_k\": 5, \"top_p\": 0.5, \"min_p\": 0.1}", NULL, &o,
                                     &s, &err), GK_OK, "%s", err.msg);
    cr_expect_eq(o.temperature, 0.0f);
    cr_expect_eq(s.do_sample, GK_GEN_SRC_DEFAULT);
    cr_expect_eq(o.top_k, 5);
    cr_expect_eq(o.top_p, 0.5f);
    cr_expect_float_eq(o.min_p, 0.1f, 1e-7);
    cr_expect(strstr(s.ignored, "temperature 0.7 (do_sample is absent)"), "%s", s.ignored);
}

/* max_new_tokens wins over max_length; max_length alone is handed to the
 * caller (it counts the prompt); null is absent; an empty eos list is none. */
Test(gen_config, max_length_nulls_and_eos_forms)
{
    gk_gen_opts o = gk_gen_opts_default();
    gk_gen_sources s;
    gk_err err = {0};
    cr_assert_eq(gk_gen_config_parse("{\"max_length\": 64, \"max_new_tokens\": 7}", NULL, &o, &s, &err), GK_OK);
    cr_expect_eq(o.max_new_tokens, 7);
    cr_expect_eq(s.max_length, -1);
    o = gk_gen_opts_default();
    cr_assert_eq(gk_gen_config_parse("{\"max_length\": 64, \"max_new_tokens\": null, \"top_k\": null}", NULL, &o, &s,
                                     &err), GK_OK, "%s", err.msg);
    cr_expect_eq(o.max_new_tokens, 100);
    cr_expect_eq(s.max_new_tokens, GK_GEN_SRC_DEFAULT);
    cr_expect_eq(s.max_length, 64);
    cr_expect_eq(s.top_k, GK_GEN_SRC_DEFAULT);
    cr_assert_eq(gk_gen_config_parse("{\"eos_token_id\": 3}", NULL, &o, &s, &err), GK_OK);
    cr_expect_eq(o.n_eos, 1);
    cr_expect_eq(o.eos_ids[0], 3);
    cr_assert_eq(gk_gen_config_parse("{\"eos_token_id\": []}", NULL, &o, &s, &err), GK_OK);
    cr_expect_eq(o.n_eos, 0);
    cr_expect_eq(s.eos, GK_GEN_SRC_FILE);
}

/* Decoding gk does not do is noted, not refused; its no-op value is quiet. */
Test(gen_config, unsupported_strategies_are_noted)
{
    gk_gen_opts o = gk_gen_opts_default();
    gk_gen_sources s;
    gk_err err = {0};
    cr_assert_eq(gk_gen_config_parse("{\"num_beams\": 4, \"no_repeat_ngram_size\": 0, \"typical_p\": 0.9}", NULL, &o,
                                     &s, &err), GK_OK, "%s", err.msg);
    cr_expect_str_eq(s.ignored, "num_beams 4; typical_p 0.9");
}

Test(gen_config, source_names)
{
    cr_expect_str_eq(gk_gen_src_str(GK_GEN_SRC_DEFAULT), "default");
    cr_expect_str_eq(gk_gen_src_str(GK_GEN_SRC_FILE), "generation_config.json");
    cr_expect_str_eq(gk_gen_src_str(GK_GEN_SRC_USER), "user");
    cr_expect_str_eq(gk_gen_src_str((gk_gen_src)42), "?");
    cr_expect_str_eq(gk_version(), "0.1.0");
}

/* ------------------------------------------------------------ errors */

/* Each bad file fails with its status and a message naming the file and the
 * key; opts and src are untouched. */
Test(gen_config, bad_files_name_the_file_and_key)
{
    struct { const char *json, *want; gk_status st; } cases[] = {
        {"{\"do_sample\": 1}", "mine.json: 'do_sample' must be true or false, got 1", GK_ERR_CONFIG},
        {"{\"temperature\": -1}", "'temperature' must be a finite number >= 0, got -1", GK_ERR_CONFIG},
        {"{\"temperature\": \"hot\"}", "'temperature' must be a finite number >= 0, got \"hot\"", GK_ERR_CONFIG},
        {"{\"temperature\": 1e39}", "'temperature' must be", GK_ERR_CONFIG},
        {"{\"top_k\": -1}", "'top_k' must be an integer >= 0 (0 = off), got -1", GK_ERR_CONFIG},
        {"{\"top_k\": 2.5}", "'top_k' must be an integer", GK_ERR_CONFIG},
        {"{\"top_p\": 0}", "'top_p' must be a number in (0, 1], got 0", GK_ERR_CONFIG},
        {"{\"top_p\": 1.5}", "'top_p' must be a number in (0, 1], got 1.5", GK_ERR_CONFIG},
        {"{\"min_p\": 2}", "'min_p' must be a number in [0, 1], got 2", GK_ERR_CONFIG},
        {"{\"repetition_penalty\": 0}", "'repetition_penalty' must be a finite number > 0, got 0", GK_ERR_CONFIG},
        {"{\"max_new_tokens\": -5}", "'max_new_tokens' must be an integer >= 0, got -5", GK_ERR_CONFIG},
        {"{\"max_new_tokens\": 1e12}", "'max_new_tokens' must be an integer >= 0", GK_ERR_CONFIG},
        {"{\"max_length\": 0}", "'max_length' must be an integer >= 1, got 0", GK_ERR_CONFIG},
        {"{\"eos_token_id\": \"2\"}", "'eos_token_id' must be a token id", GK_ERR_CONFIG},
        {"{\"eos_token_id\": [1, -2]}", "'eos_token_id[1]' must be a token id (an integer >= 0), got -2",
         GK_ERR_CONFIG},
        {"{\"eos_token_id\": [1,2,3,4,5,6,7,8,9]}", "lists 9 ids, more than the 8 supported", GK_ERR_UNSUPPORTED},
        {"{\"do_sample\": tru}", "mine.json: invalid JSON at line 1, column", GK_ERR_FORMAT},
        {"{\n\"top_k\": 5,\n}", "at line 3, column", GK_ERR_FORMAT},
        {"[1]", "mine.json: top level is not a JSON object", GK_ERR_FORMAT},
        {"", "mine.json:", GK_ERR_FORMAT},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        gk_gen_opts o = gk_gen_opts_default();
        o.max_new_tokens = 9;
        gk_gen_sources s = {.max_length = 77};
        gk_err err = {0};
        gk_status st = gk_gen_config_parse(cases[i].json, "mine.json", &o, &s, &err);
        cr_expect_eq(st, cases[i].st, "%s: %s (%s)", cases[i].json, gk_status_str(st), err.msg);
        cr_expect(strstr(err.msg, cases[i].want), "%s: want '%s', got '%s'", cases[i].json, cases[i].want, err.msg);
        cr_expect(strncmp(err.msg, "mine.json: ", 11) == 0, "%s: %s", cases[i].json, err.msg);
        cr_expect_eq(o.max_new_tokens, 9, "%s: opts changed", cases[i].json);
        cr_expect_eq(s.max_length, 77, "%s: src changed", cases[i].json);
    }
}

/* A file that exists but cannot be read (a folder) is GK_ERR_IO naming it;
 * NULL arguments are GK_ERR_INVALID_ARG. */
Test(gen_config, unreadable_file_and_null_arguments, .fini = remove_dir)
{
    const char *dir = folder_with(NULL);
    char path[128];
    snprintf(path, sizeof path, "%s/generation_config.json", dir);
    cr_assert_eq(mkdir(path, 0700), 0);
    gk_gen_opts o = gk_gen_opts_default();
    gk_gen_sources s;
    gk_err err = {0};
    cr_expect_eq(gk_gen_config_load(dir, &o, &s, &err), GK_ERR_IO);
    cr_expect(strstr(err.msg, "generation_config.json"), "%s", err.msg);
    cr_expect_eq(gk_gen_config_load(NULL, &o, &s, &err), GK_ERR_INVALID_ARG);
    cr_expect_eq(gk_gen_config_load(dir, NULL, &s, &err), GK_ERR_INVALID_ARG);
    cr_expect_eq(gk_gen_config_load(dir, &o, NULL, NULL), GK_ERR_INVALID_ARG);
    cr_expect_eq(gk_gen_config_parse(NULL, NULL, &o, &s, &err), GK_ERR_INVALID_ARG);
}
