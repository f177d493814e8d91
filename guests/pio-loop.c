/* pio-loop: "count=N" (default 100000) port writes, each one exit to the
 * VMM's userspace, for the exit-latency benchmark; then powers off. */
#include "lib/cmdline.h"
#include "lib/io.h"
#include "lib/multiboot.h"
#include "lib/poweroff.h"
#include "lib/serial.h"

/* A port no real device uses: the bench port. */
#define BENCH_PORT 0x400

void kmain(uint32_t magic, uint32_t mbi)
{
    uint64_t count = cmdline_get_num(multiboot_cmdline(mbi), "count", 100000);

    (void)magic;
    serial_init();
    for (uint64_t i = 0; i < count; i++)
        outl(BENCH_PORT, (uint32_t)i);
    serial_puts("pio-loop done ");
    serial_put_dec(count);
    serial_putc('\n');
    poweroff();
}
