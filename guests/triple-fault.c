/* triple-fault: an exception with an empty IDT cannot be delivered, nor can
 * the #DF that follows, so the CPU shuts down (KVM_EXIT_SHUTDOWN; QEMU
 * resets, or exits with -no-reboot). */
#include <stdint.h>
#include "lib/serial.h"

void kmain(uint32_t magic, uint32_t mbi)
{
    static const struct {
        uint16_t limit;
        uint64_t base;
    } __attribute__((packed)) empty_idt = { 0, 0 };

    (void)magic, (void)mbi;
    serial_init();
    serial_puts("about to triple fault\n");
    __asm__ volatile("lidt %0; int3" : : "m"(empty_idt));
    for (;;)
        ;   /* not reached */
}
