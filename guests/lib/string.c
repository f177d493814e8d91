/* gcc may emit calls to these even with -ffreestanding (struct copies,
 * zero-initialised arrays), so a freestanding image must provide them. */
#include <stddef.h>

void *memset(void *d, int c, size_t n)
{
    unsigned char *p = d;

    while (n--)
        *p++ = (unsigned char)c;
    return d;
}

void *memcpy(void *d, const void *s, size_t n)
{
    unsigned char *p = d;
    const unsigned char *q = s;

    while (n--)
        *p++ = *q++;
    return d;
}
