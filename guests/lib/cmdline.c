#include "cmdline.h"

const char *cmdline_find(const char *cmdline, const char *key)
{
    const char *p = cmdline;

    while (*p) {
        const char *k = key, *q = p;

        while (*k && *q == *k)
            k++, q++;
        if (!*k && *q == '=')
            return q + 1;
        /* Skip to the start of the next word. */
        while (*p && *p != ' ')
            p++;
        while (*p == ' ')
            p++;
    }
    return 0;
}

static int digit(char c, int base)
{
    int d = c >= '0' && c <= '9' ? c - '0'
          : c >= 'a' && c <= 'f' ? c - 'a' + 10
          : c >= 'A' && c <= 'F' ? c - 'A' + 10 : 99;
    return d < base ? d : -1;
}

uint64_t cmdline_get_num(const char *cmdline, const char *key, uint64_t def)
{
    const char *p = cmdline_find(cmdline, key);
    uint64_t v = 0;
    int base = 10, d;

    if (!p)
        return def;
    if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X'))
        base = 16, p += 2;
    if (digit(*p, base) < 0)
        return def;
    while ((d = digit(*p, base)) >= 0)
        v = v * base + d, p++;
    switch (*p) {
    case 'k': case 'K': v <<= 10; p++; break;
    case 'm': case 'M': v <<= 20; p++; break;
    case 'g': case 'G': v <<= 30; p++; break;
    }
    return (*p == 0 || *p == ' ') ? v : def;
}
