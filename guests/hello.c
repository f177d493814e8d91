/* hello: the smoke test. Greets, reports what the loader handed over,
 * then powers off cleanly (QEMU exit status 0). */
#include "lib/multiboot.h"
#include "lib/serial.h"
#include "lib/poweroff.h"

void kmain(uint32_t magic, uint32_t mbi)
{
    const struct multiboot_info *mi = multiboot_info(mbi);
    const char *cmdline;

    serial_init();
    serial_puts("Hello from a tsvmm guest!\n");
    if (magic != MULTIBOOT_BOOTLOADER_MAGIC) {
        /* Still say something useful: a VMM bug here is what we test for. */
        serial_puts("bad multiboot magic ");
        serial_put_hex(magic);
        serial_putc('\n');
    } else if (mi->flags & MULTIBOOT_INFO_MEMORY) {
        serial_puts("mem_upper=");
        serial_put_dec(mi->mem_upper);
        serial_putc('\n');
    }
    cmdline = magic == MULTIBOOT_BOOTLOADER_MAGIC ? multiboot_cmdline(mbi) : "";
    if (*cmdline) {
        serial_puts("cmdline=");
        serial_puts(cmdline);
        serial_putc('\n');
    }
    poweroff();
}
