/* gkrun_template.h - chat templates from the command line (gkrun_template.c). */
#ifndef GKRUN_TEMPLATE_H
#define GKRUN_TEMPLATE_H

#include <gk/gk.h>

#include <stdbool.h>

/* gkrun chat-template ...: the rendering on stdout; exit status. */
int gkrun_template_cmd(int argc, char **argv);
/* Whether verify's argument is a chat-template golden file or a folder of them. */
bool gkrun_is_chat_golden(const char *path);
/* Check the golden file or folder case by case; 0 when every case passes. */
int gkrun_verify_chat(const char *path);

#endif
