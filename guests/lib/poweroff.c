#include <stdint.h>
#include "poweroff.h"
#include "exit.h"
#include "serial.h"

/*
 * QEMU -M microvm (acpi=on by default) maps the ACPI Generic Event Device's
 * control registers at GED_MMIO_BASE_REGS = GED_MMIO_BASE + 0x200 = 0xfea00200
 * (include/hw/i386/microvm.h; mapped as sysbus region 2 in hw/i386/microvm.c).
 * The sleep-control register is at offset ACPI_GED_REG_SLEEP_CTL = 0x00
 * (include/hw/acpi/generic_event_device.h). ged_regs_write() in
 * hw/acpi/generic_event_device.c decodes SLP_TYP = (v >> 2) & 7 and
 * SLP_EN = bit 5 and requests a guest shutdown for SLP_TYP 5 (S5), so we
 * write (5 << 2) | 0x20 = 0x34. The region only accepts 1-byte accesses.
 * QEMU then exits with status 0. This is the address the FADT's
 * SLEEP_CONTROL_REG advertises (hw/i386/acpi-microvm.c).
 */
#define GED_SLEEP_CTL      0xfea00200UL
#define SLP_TYP_S5         5
#define SLP_EN             0x20
#define GED_POWEROFF_VALUE ((SLP_TYP_S5 << 2) | SLP_EN)   /* 0x34 */

/* QEMU acts on the request asynchronously; give it ample time before
 * concluding there is no GED (acpi=off, or a VMM without one). */
#define GRACE_LOOPS        200000000UL

void poweroff(void)
{
    *(volatile uint8_t *)GED_SLEEP_CTL = GED_POWEROFF_VALUE;
    for (volatile unsigned long i = 0; i < GRACE_LOOPS; i++)
        ;
    serial_puts("poweroff: GED ignored, falling back to debug-exit\n");
    guest_exit(0);
}
