#include "tick.h"

/* The architectural default base (IA32_APIC_BASE after reset), identity
 * mapped uncached by lib/entry.S. */
#define LAPIC_BASE    0xfee00000UL
#define LAPIC_EOI     0x0b0
#define LAPIC_SVR     0x0f0
#define LAPIC_LVTT    0x320
#define LAPIC_TMICT   0x380
#define LAPIC_TDCR    0x3e0

#define SVR_ENABLE    (1u << 8)
#define LVTT_PERIODIC (1u << 17)
#define TDCR_DIV_16   0x3
/* KVM's local APIC counts a 1 GHz bus (APIC_BUS_CYCLE_NS 1). */
#define APIC_BUS_HZ   1000000000u

volatile uint64_t tick_count;

static void lapic_write(uint32_t reg, uint32_t v)
{
    *(volatile uint32_t *)(uintptr_t)(LAPIC_BASE + reg) = v;
}

void tick_start(uint32_t hz)
{
    lapic_write(LAPIC_SVR, SVR_ENABLE | SPURIOUS_VECTOR);
    lapic_write(LAPIC_TDCR, TDCR_DIV_16);
    lapic_write(LAPIC_LVTT, LVTT_PERIODIC | TICK_VECTOR);
    /* Written last: a non-zero initial count starts the timer. */
    lapic_write(LAPIC_TMICT, APIC_BUS_HZ / 16 / hz);
}

void tick_handle(void)
{
    tick_count++;
    lapic_write(LAPIC_EOI, 0);
}
