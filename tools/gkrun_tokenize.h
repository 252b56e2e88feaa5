/* gkrun_tokenize.h - the tokenizer subcommands of gkrun.
 *
 *   gkrun tokenize (-m DIR | --tokenizer FILE) [--special] (TEXT | -)
 *   gkrun detokenize (-m DIR | --tokenizer FILE) [--skip-special] [ID...]
 *   gkrun verify DIR   (a folder with tokenizer.json and golden.json "cases")
 *
 * argv[0] is the subcommand's name. Return the process exit code: 0 on success,
 * 1 on failure (after "gkrun: <status>: <msg>" on stderr), 2 on a usage error.
 */
#ifndef GKRUN_TOKENIZE_H
#define GKRUN_TOKENIZE_H

/* Prints the ids of TEXT (or of stdin for "-") on one line, space-separated.
 * --special applies the post-processor (BOS etc.), as add_special_tokens=True. */
int gkrun_tokenize(int argc, char **argv);
/* Prints the text of the ids given as arguments, or read from stdin when none
 * are given (separated by spaces, commas or newlines), followed by a newline. */
int gkrun_detokenize(int argc, char **argv);
/* Checks every case of dir/golden.json against dir/tokenizer.json: ids,
 * ids_with_special, decoded and (when present) decoded_skip_special, with texts
 * taken whole ("\u0000" included; failing texts are printed escaped). Prints one
 * line per failing check, per-check counts and "summary: N passed, M failed:
 * PASS|FAIL"; returns 0 only when every case matches. */
int gkrun_verify_tokenizer(const char *dir);

#endif
