#include "serial.h"
#include "io.h"

#define COM1      0x3f8
#define REG_DATA  0   /* RBR/THR, or divisor low when DLAB=1 */
#define REG_IER   1   /* or divisor high when DLAB=1 */
#define REG_FCR   2
#define REG_LCR   3
#define REG_MCR   4
#define REG_LSR   5

#define LCR_8N1   0x03
#define LCR_DLAB  0x80
#define LSR_DR    0x01
#define LSR_THRE  0x20

void serial_init(void)
{
    outb(COM1 + REG_IER, 0x00);            /* we poll; no interrupts */
    outb(COM1 + REG_LCR, LCR_DLAB);
    outb(COM1 + REG_DATA, 1);              /* divisor 1 = 115200 baud */
    outb(COM1 + REG_IER, 0);
    outb(COM1 + REG_LCR, LCR_8N1);
    /*
     * FCR is left alone on purpose: toggling the FIFO enable bit flushes the
     * receive FIFO (QEMU's serial.c does so too), which would eat input the
     * host sent before the guest got here.
     */
    outb(COM1 + REG_MCR, 0x03);            /* DTR | RTS */
}

void serial_putc(char c)
{
    while (!(inb(COM1 + REG_LSR) & LSR_THRE))
        ;
    outb(COM1 + REG_DATA, (uint8_t)c);
}

void serial_puts(const char *s)
{
    while (*s)
        serial_putc(*s++);
}

void serial_put_hex(uint64_t v)
{
    char buf[16];
    int n = 0;

    serial_puts("0x");
    do {
        buf[n++] = "0123456789abcdef"[v & 0xf];
        v >>= 4;
    } while (v);
    while (n)
        serial_putc(buf[--n]);
}

void serial_put_dec(uint64_t v)
{
    char buf[20];
    int n = 0;

    do {
        buf[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        serial_putc(buf[--n]);
}

int serial_getc(void)
{
    while (!(inb(COM1 + REG_LSR) & LSR_DR))
        ;
    return inb(COM1 + REG_DATA);
}

int serial_try_getc(void)
{
    if (!(inb(COM1 + REG_LSR) & LSR_DR))
        return -1;
    return inb(COM1 + REG_DATA);
}
