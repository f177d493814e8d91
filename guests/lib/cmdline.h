#ifndef GUEST_CMDLINE_H
#define GUEST_CMDLINE_H

#include <stdint.h>

/*
 * Pointer to the value of the first "key=value" word in cmdline (a word
 * starts the string or follows a space), or 0. QEMU prepends the kernel's
 * file name to the command line, so words are the only reliable boundary.
 */
const char *cmdline_find(const char *cmdline, const char *key);

/* The value of key as a number (decimal, or hex with 0x; optional K/M/G
 * binary suffix), or def if the key is absent or not a number. */
uint64_t cmdline_get_num(const char *cmdline, const char *key, uint64_t def);

#endif
