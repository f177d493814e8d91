/* reboot: reads the date from the CMOS RTC, prints it, then restarts the
 * machine the way Linux's `reboot` (reboot=k) does: wait for the i8042's
 * input buffer to drain, then write command 0xFE (pulse the CPU reset line)
 * to port 0x64. tsvmm ends the VM with status 0 on that reset; if the
 * reset does not come, the guest leaves through debug-exit with 1 (status 3). */
#include "lib/exit.h"
#include "lib/io.h"
#include "lib/serial.h"

#define CMOS_INDEX 0x70
#define CMOS_DATA 0x71
#define I8042_STATUS 0x64
#define I8042_STATUS_IBF 0x02
#define I8042_PULSE_RESET 0xfe

static uint8_t cmos_read(uint8_t reg)
{
    outb(CMOS_INDEX, reg);
    return inb(CMOS_DATA);
}

static unsigned bcd(uint8_t v) { return (v >> 4) * 10 + (v & 0x0f); }

void kmain(uint32_t magic, uint32_t mbi)
{
    (void)magic;
    (void)mbi;
    serial_init();
    /* Register B bit 2 clear: BCD, as PC firmware leaves it. */
    serial_puts("rtc date=");
    serial_put_dec(bcd(cmos_read(0x32)) * 100 + bcd(cmos_read(0x09)));
    serial_putc('-');
    serial_put_dec(bcd(cmos_read(0x08)));
    serial_putc('-');
    serial_put_dec(bcd(cmos_read(0x07)));
    serial_putc('\n');
    serial_puts("rebooting through the i8042\n");
    for (int i = 0; i < 10; i++) {
        for (int spin = 0; spin < 0x10000 && (inb(I8042_STATUS) & I8042_STATUS_IBF); spin++)
            ;
        outb(I8042_STATUS, I8042_PULSE_RESET);
    }
    serial_puts("still running after the reset pulse\n");
    guest_exit(1);
}
