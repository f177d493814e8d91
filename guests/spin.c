/* spin: burns CPU in ring 0 without ever exiting to the VMM, bumping a
 * counter the host reads from guest memory to see whether the vCPU runs
 * (it must freeze while paused and move again after resume). */
#include "lib/serial.h"

/* Physical (= virtual, identity-mapped) address of the 64-bit counter:
 * 2 MiB, clear of the image and boot structures below 0x120000, alone in
 * its 4 KiB page. Documented in README.md; host tests depend on it. */
#define SPIN_COUNTER_ADDR 0x200000UL

void kmain(uint32_t magic, uint32_t mbi)
{
    volatile uint64_t *counter = (volatile uint64_t *)SPIN_COUNTER_ADDR;

    (void)magic, (void)mbi;
    *counter = 0;       /* valid from the moment "spinning" is visible */
    serial_init();
    serial_puts("spinning\n");
    for (;;)
        (*counter)++;
}
