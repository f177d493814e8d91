/* Polled 16550 UART at COM1 (0x3f8). No "\n" -> "\r\n" translation: the host
 * tests compare the byte stream exactly. */
#ifndef GUEST_SERIAL_H
#define GUEST_SERIAL_H

#include <stdint.h>

void serial_init(void);
void serial_putc(char c);
void serial_puts(const char *s);
void serial_put_hex(uint64_t v);  /* "0x" + lowercase hex, no leading zeros */
void serial_put_dec(uint64_t v);
int serial_getc(void);            /* blocks (polls) until a byte arrives */
int serial_try_getc(void);        /* a received byte, or -1 if none is waiting */

#endif
