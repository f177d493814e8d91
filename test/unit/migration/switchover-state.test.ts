// SwitchoverState: the switch-over's STATE records, the same whether encoded from templates or afresh.
import { describe, expect, it } from 'vitest';
import { stateRecord } from '../../../src/migration/state-record.js';
import { SwitchoverState, type StateSource } from '../../../src/migration/switchover-state.js';

/**
 * A VM of two pieces: 'kvm', all byte arrays, which it reads in place into a state `into` holds (as
 * Vm.captureState does), and 'devices', which it builds anew at every capture.
 */
function twoPieceVm() {
  let generation = 1;
  const captures: (ReadonlyMap<string, unknown> | undefined)[] = [];
  const source: StateSource = {
    rehearsalState: () => [{ name: 'kvm', state: { regs: new Uint8Array(16) } }, { name: 'devices', state: { serial: { lcr: 0 } } }],
    captureState: (into) => {
      captures.push(into);
      const held = into?.get('kvm') as { regs: Uint8Array } | undefined;
      const kvm = held ?? { regs: new Uint8Array(16) };
      kvm.regs.fill(generation);
      return [{ name: 'kvm', state: kvm }, { name: 'devices', state: { serial: { lcr: generation } } }];
    },
  };
  return { source, captures, next: () => { generation++; } };
}

describe('SwitchoverState', () => {
  it('captures into the templates prepared before the pause, and its records equal those encoded afresh', () => {
    const vm = twoPieceVm();
    const end = () => Buffer.from([0xee]);
    const state = new SwitchoverState(vm.source, end);
    state.rehearse();
    state.prepare();
    vm.next();
    const { pieces, records } = state.capture();
    expect(pieces).toBe(2);
    expect(vm.captures.at(-1)?.has('kvm')).toBe(true);
    expect(records).toEqual([stateRecord('kvm', { regs: new Uint8Array(16).fill(2) }), stateRecord('devices', { serial: { lcr: 2 } })]);
  });

  it('encodes every piece afresh without prepare(), and with a VM that has no rehearsal state', () => {
    const vm = twoPieceVm();
    const { records } = new SwitchoverState(vm.source, () => Buffer.alloc(0)).capture();
    expect(records).toEqual([stateRecord('kvm', { regs: new Uint8Array(16).fill(1) }), stateRecord('devices', { serial: { lcr: 1 } })]);
    const bare: StateSource = { captureState: () => [{ name: 'vm', state: { a: 1 } }] };
    const state = new SwitchoverState(bare, () => Buffer.alloc(0));
    state.rehearse();
    state.prepare();
    expect(state.capture().records).toEqual([stateRecord('vm', { a: 1 })]);
  });
});
