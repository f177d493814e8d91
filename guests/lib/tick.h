/*
 * A periodic timer interrupt from the local APIC, the tick a guest needs in
 * order to halt and still wake: an OS with nothing to run halts until its
 * next timer interrupt, and a guest that only spins holds a host CPU instead.
 * The vector lives in lib/usermode.c's IDT, so usermode_init() comes first.
 */
#ifndef GUEST_TICK_H
#define GUEST_TICK_H

#include <stdint.h>

#define TICK_VECTOR      32
#define SPURIOUS_VECTOR  33     /* the APIC's spurious vector: no EOI */

/* Ticks taken since tick_start(). */
extern volatile uint64_t tick_count;

/* Enables the local APIC and starts its timer, periodic at about hz per
 * second (KVM's APIC bus runs at 1 GHz). Ring 0 or ring 3 (the LAPIC page
 * is mapped; usermode_init makes it user-accessible). */
void tick_start(uint32_t hz);

/* The vector's handler: counts the tick and signals EOI. */
void tick_handle(void);

#endif
