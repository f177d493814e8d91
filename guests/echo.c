/* echo: exercises serial input. Echoes every byte until 'q', which is not
 * echoed; then says bye and powers off. */
#include "lib/poweroff.h"
#include "lib/serial.h"

void kmain(uint32_t magic, uint32_t mbi)
{
    (void)magic, (void)mbi;
    serial_init();
    serial_puts("echo ready\n");
    for (;;) {
        int c = serial_getc();

        if (c == 'q')
            break;
        serial_putc((char)c);
    }
    serial_puts("\nbye\n");
    poweroff();
}
