/* skip_exit.h - main() for a GPU Criterion suite: when every test skipped
 * (no usable GPU), the program exits 77, which meson shows as SKIP, and
 * prints the first test's reason; otherwise Criterion's result. Include
 * once, after <criterion/criterion.h>, with SKIP_EXIT_NAME defined as the
 * suite's name for the message. */
#include <criterion/hooks.h>
#include <stdio.h>

static size_t skip_exit_tests, skip_exit_skipped;
static char skip_exit_reason[256];

ReportHook(POST_TEST)(struct criterion_test_stats *stats)
{
    if (stats->test_status == CR_STATUS_SKIPPED && stats->message && !skip_exit_reason[0])
        snprintf(skip_exit_reason, sizeof skip_exit_reason, "%s", stats->message);
}

ReportHook(POST_ALL)(struct criterion_global_stats *stats)
{
    skip_exit_tests = stats->nb_tests;
    skip_exit_skipped = stats->tests_skipped;
}

int main(int argc, char *argv[])
{
    struct criterion_test_set *tests = criterion_initialize();
    int result = 0;
    if (criterion_handle_args(argc, argv, true))
        result = !criterion_run_all_tests(tests);
    criterion_finalize(tests);
    if (result == 0 && skip_exit_tests > 0 && skip_exit_skipped == skip_exit_tests) {
        fprintf(stderr, "%s: all %zu tests skipped: %s\n", SKIP_EXIT_NAME, skip_exit_tests,
                skip_exit_reason[0] ? skip_exit_reason : "(no reason given)");
        return 77;
    }
    return result;
}
