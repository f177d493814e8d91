/* idle: does what an OS with nothing to run does: halts, and wakes only for
 * its timer tick (the local APIC's, IDLE_HZ a second, as a HZ=100 kernel
 * without tickless idle). Each tick it reads COM1 once: 't' prints the ticks
 * so far, "idle: ticks N\n", so the host can see the guest runs and its
 * timer fires (after a migration: that the timer came along); 'q' prints
 * "idle: bye\n" and powers off. A spinning guest holds a host CPU the whole
 * time; this one leaves the host's CPUs to the VMM, as a real idle guest
 * does. */
#include "lib/poweroff.h"
#include "lib/serial.h"
#include "lib/tick.h"
#include "lib/usermode.h"

#define IDLE_HZ 100

void kmain(uint32_t magic, uint32_t mbi)
{
    (void)magic, (void)mbi;
    serial_init();
    usermode_init();    /* the IDT: the tick's vector, and exceptions reported */
    tick_start(IDLE_HZ);
    serial_puts("idle: halting\n");
    for (;;) {
        /* sti's one-instruction shadow: no tick can slip in before hlt. */
        __asm__ volatile("sti; hlt; cli" : : : "memory");
        switch (serial_try_getc()) {
        case 't':
            serial_puts("idle: ticks ");
            serial_put_dec(tick_count);
            serial_putc('\n');
            break;
        case 'q':
            serial_puts("idle: bye\n");
            poweroff();
        }
    }
}
