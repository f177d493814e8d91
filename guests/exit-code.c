/* exit-code: leaves through isa-debug-exit with the code from "code=N"
 * (default 42), so the host can check that exit codes reach it intact. */
#include "lib/cmdline.h"
#include "lib/exit.h"
#include "lib/multiboot.h"
#include "lib/serial.h"

void kmain(uint32_t magic, uint32_t mbi)
{
    uint32_t code = (uint32_t)cmdline_get_num(multiboot_cmdline(mbi), "code", 42);

    (void)magic;
    serial_init();
    serial_puts("exiting with ");
    serial_put_dec(code);
    serial_putc('\n');
    guest_exit(code);
}
