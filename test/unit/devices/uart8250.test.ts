import { describe, expect, it } from 'vitest';
import { Uart8250, UartReg, UART_RX_CAPACITY, createUartState } from '../../../src/devices/uart8250.js';

function uart() {
  const levels: boolean[] = [];
  const out: number[] = [];
  const u = new Uart8250(createUartState(), { setLevel: (h) => levels.push(h) }, (b) => out.push(b));
  return { u, levels, out };
}

const IIR_NO_INT = 0x01;

describe('Uart8250', () => {
  it('transmits THR writes and always reports the transmitter empty', () => {
    const { u, out } = uart();
    for (const c of 'hi') u.write(UartReg.RBR_THR_DLL, 1, c.charCodeAt(0));
    expect(String.fromCharCode(...out)).toBe('hi');
    expect(u.read(UartReg.LSR, 1) & 0x60).toBe(0x60);
  });

  it('keeps the divisor latch behind DLAB', () => {
    const { u, out } = uart();
    u.write(UartReg.LCR, 1, 0x80);
    u.write(UartReg.RBR_THR_DLL, 1, 0x01);
    u.write(UartReg.IER_DLM, 1, 0x00);
    expect(u.read(UartReg.RBR_THR_DLL, 1)).toBe(0x01);
    u.write(UartReg.LCR, 1, 0x03);
    expect(out).toEqual([]); // divisor writes are not data
    expect(u.read(UartReg.LCR, 1)).toBe(0x03);
    expect(u.state().dll).toBe(1);
  });

  it('receives bytes in order, sets DR, and raises the RX interrupt only when enabled', () => {
    const { u, levels } = uart();
    u.receive(new TextEncoder().encode('ab'));
    expect(levels).toEqual([]); // IER.ERBFI off
    expect(u.read(UartReg.LSR, 1) & 1).toBe(1);
    u.write(UartReg.IER_DLM, 1, 0x01);
    expect(levels).toEqual([true]);
    expect(u.read(UartReg.IIR_FCR, 1) & 0x0f).toBe(0x04);
    expect(u.read(UartReg.RBR_THR_DLL, 1)).toBe(0x61);
    expect(levels).toEqual([true]); // still one byte pending
    expect(u.read(UartReg.RBR_THR_DLL, 1)).toBe(0x62);
    expect(levels).toEqual([true, false]);
    expect(u.read(UartReg.LSR, 1) & 1).toBe(0);
    expect(u.read(UartReg.IIR_FCR, 1) & 0x0f).toBe(IIR_NO_INT);
  });

  it('raises THRE when enabled with the holding register empty, and clears it on IIR read', () => {
    const { u, levels } = uart();
    u.write(UartReg.IER_DLM, 1, 0x02);
    expect(levels).toEqual([true]);
    expect(u.read(UartReg.IIR_FCR, 1) & 0x0f).toBe(0x02);
    expect(levels).toEqual([true, false]);
    u.write(UartReg.RBR_THR_DLL, 1, 0x41);
    expect(levels).toEqual([true, false, true]);
  });

  it('reflects MCR into MSR in loopback, as Linux 8250 autoconfig checks', () => {
    const { u, out } = uart();
    u.write(UartReg.MCR, 1, 0x10 | 0x0a); // LOOP | OUT2 | RTS
    expect(u.read(UartReg.MSR, 1) & 0xf0).toBe(0x90);
    u.write(UartReg.RBR_THR_DLL, 1, 0x5a);
    expect(out).toEqual([]); // looped back, not sent
    expect(u.read(UartReg.RBR_THR_DLL, 1)).toBe(0x5a);
    u.write(UartReg.MCR, 1, 0x00);
    expect(u.read(UartReg.MSR, 1) & 0xf0).toBe(0xb0); // DCD, DSR, CTS from the outside world
  });

  it('reports overrun when its receive buffer is full and keeps what it had', () => {
    const { u } = uart();
    const accepted = u.receive(new Uint8Array(UART_RX_CAPACITY + 10).fill(0x41));
    expect(accepted).toBe(UART_RX_CAPACITY);
    expect(u.read(UartReg.LSR, 1) & 0x02).toBe(0x02);
    expect(u.read(UartReg.LSR, 1) & 0x02).toBe(0); // OE clears on read
    expect(u.state().rx.length).toBe(UART_RX_CAPACITY);
  });

  it('clears the receive FIFO on FCR write, and reports FIFOs enabled in IIR', () => {
    const { u } = uart();
    u.receive(Uint8Array.of(1, 2, 3));
    u.write(UartReg.IIR_FCR, 1, 0x03);
    expect(u.read(UartReg.LSR, 1) & 1).toBe(0);
    expect(u.read(UartReg.IIR_FCR, 1) & 0xc0).toBe(0xc0);
  });

  it('shares its state across instances over the same SharedArrayBuffer (two threads)', () => {
    const state = createUartState();
    const a = new Uart8250(state, { setLevel: () => {} }, () => {});
    const b = new Uart8250(state, { setLevel: () => {} }, () => {});
    a.receive(Uint8Array.of(7));
    expect(b.read(UartReg.RBR_THR_DLL, 1)).toBe(7);
  });
});
