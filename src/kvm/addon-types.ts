/**
 * The exact surface of the native addon (native/*.cc, built to build/Release/tsvmm.node).
 *
 * One function per system call, named after it, no policy: no retries, no defaults, no bookkeeping.
 * Numbers are file descriptors, ioctl numbers and small integers; 64-bit quantities (guest-physical
 * addresses, host virtual addresses, sizes) are bigints. Structs cross as caller-provided buffers laid
 * out exactly as in <linux/kvm.h>; src/kvm/structs.ts decodes them.
 *
 * Every failing call throws the constructor registered with setErrorConstructor, called as
 * `new Ctor(syscall, errno)`, where `syscall` is the ioctl or libc name ('KVM_SET_USER_MEMORY_REGION',
 * 'open', 'mmap') and `errno` the positive errno. Only `kvmRun` returns its errno instead, because V8
 * calls it as a fast API call, which cannot throw; kvmRun() in kvm-run.ts turns it into a KvmError.
 */
export interface NativeAddon {
  /** Registers the class thrown on failure (per thread: each worker's addon instance needs it). */
  setErrorConstructor(ctor: new (syscall: string, errno: number) => Error): void;

  // --- plain file descriptors -----------------------------------------------------------------
  /** open(path, O_RDWR | O_CLOEXEC). */
  open(path: string): number;
  close(fd: number): void;
  /** fcntl F_DUPFD_CLOEXEC: another fd on the same open file (a socket: the same connection). */
  dup(fd: number): number;
  /** eventfd(initval, flags); flags are EFD_* numbers. */
  eventfd(initval: number, flags: number): number;
  /** memfd_create(name, MFD_CLOEXEC). */
  memfdCreate(name: string): number;
  /** ftruncate(fd, size). */
  ftruncate(fd: number, sizeBytes: bigint): void;
  /** read(fd, buf, buf.length); returns the bytes read. Blocks the calling thread if the fd does. */
  read(fd: number, buf: Uint8Array): number;
  /** write(fd, buf, buf.length); returns the bytes written. */
  write(fd: number, buf: Uint8Array): number;
  /** pread(fd, buf, buf.length, offset) (offset a byte count below 2^53); returns the bytes read, 0 at the end. */
  pread(fd: number, buf: Uint8Array, offset: number): number;
  /** pwrite(fd, buf, buf.length, offset); returns the bytes written. */
  pwrite(fd: number, buf: Uint8Array, offset: number): number;
  /** poll(fds, n, timeoutMs) over caller-laid-out struct pollfd entries (8 bytes each: fd i32,
   *  events i16, revents i16); returns how many are ready. Blocks the calling thread. */
  poll(fds: Uint8Array, timeoutMs: number): number;
  /** Adds `fd` to this thread's event loop (libuv uv_poll): `onReadable(errno)` runs on this thread
   *  whenever it is readable (level-triggered; errno 0, or what the poll reported). The loop is not
   *  kept alive by it. Returns a handle for fdUnwatch. */
  fdWatch(fd: number, onReadable: (errno: number) => void): FdWatchHandle;
  /** Stops an fdWatch for good (again: nothing). Call before closing the fd. */
  fdUnwatch(handle: FdWatchHandle): void;
  /** socket(domain, type, protocol); type may include SOCK_NONBLOCK | SOCK_CLOEXEC. Returns the fd. */
  socket(domain: number, type: number, protocol: number): number;
  /** bind(fd, addr, addr.length): `addr` is a struct sockaddr_in or sockaddr_in6 (see sockaddr.ts). */
  bind(fd: number, addr: Uint8Array): void;
  /** sendto(fd, buf, buf.length, 0, addr, addr.length); returns the bytes sent. */
  sendto(fd: number, buf: Uint8Array, addr: Uint8Array): number;
  /** setsockopt(fd, level, name, &value, sizeof(int)). */
  setsockoptInt(fd: number, level: number, name: number, value: number): void;
  /** TUNSETIFF on an fd of /dev/net/tun with ifr_name = name and ifr_flags = flags (IFF_*); returns
   *  the interface name the kernel chose. */
  tunSetIff(fd: number, name: string, flags: number): string;

  // --- memory mappings ------------------------------------------------------------------------
  /** mmap(NULL, size, PROT_READ|PROT_WRITE, MAP_SHARED|MAP_ANONYMOUS|MAP_NORESERVE, -1, 0). */
  mmapAnonymous(sizeBytes: number): ArrayBuffer;
  /** mmap(NULL, size, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE, -1, 0): guest RAM,
   *  which transparent huge pages may back (shared memory gets none under shmem_enabled=never). */
  mmapPrivate(sizeBytes: number): ArrayBuffer;
  /** No system call: an ArrayBuffer over [address, address + size) that this process already maps
   *  (guest RAM seen from another thread). The owner of the mapping unmaps it, after every view is
   *  dropped; never pass a view to munmap. */
  mappingView(address: bigint, sizeBytes: number): ArrayBuffer;
  /** mmap(NULL, size, PROT_READ|PROT_WRITE, MAP_SHARED, fd, offset): a vCPU's kvm_run, or a memfd. */
  mmapShared(fd: number, sizeBytes: number, offset: number): ArrayBuffer;
  /** munmap of a buffer returned by mmapAnonymous/mmapPrivate/mmapShared; detaches the ArrayBuffer first so no
   *  JS view can touch the unmapped range afterwards. */
  munmap(buffer: ArrayBuffer): void;
  /** The host virtual address of a mapped buffer (what KVM_SET_USER_MEMORY_REGION takes). */
  bufferAddress(buffer: ArrayBuffer): bigint;
  /** madvise() over [offset, offset + length) of a mapping from mmapAnonymous/mmapPrivate/mmapShared. */
  madvise(buffer: ArrayBuffer, offset: number, length: number, advice: number): void;

  // --- threads and signals --------------------------------------------------------------------
  /** gettid() of the calling thread. */
  gettid(): number;
  /** sched_yield(): another runnable thread of this CPU runs first, if there is one. */
  schedYield(): void;
  /** tgkill(getpid(), tid, signo). */
  tgkill(tid: number, signo: number): void;
  /** SIGRTMIN as seen by this libc (glibc reserves the first two real-time signals). */
  sigrtmin(): number;
  /** sigaction(signo) with an empty handler and without SA_RESTART, so a blocking ioctl returns EINTR. */
  installEmptySignalHandler(signo: number): void;

  // --- /dev/kvm ---------------------------------------------------------------------------------
  kvmGetApiVersion(kvmFd: number): number;
  /** KVM_CHECK_EXTENSION on the /dev/kvm fd or on a VM fd. */
  kvmCheckExtension(fd: number, cap: number): number;
  kvmGetVcpuMmapSize(kvmFd: number): number;
  /** KVM_GET_SUPPORTED_CPUID into `buf` (struct kvm_cpuid2, nent preset by the caller); returns nent. */
  kvmGetSupportedCpuid(kvmFd: number, buf: Uint8Array): number;
  /** KVM_GET_MSR_INDEX_LIST into `buf` (struct kvm_msr_list, nmsrs preset); returns nmsrs. */
  kvmGetMsrIndexList(kvmFd: number, buf: Uint8Array): number;
  /** KVM_CREATE_VM(type); returns the VM fd. */
  kvmCreateVm(kvmFd: number, type: number): number;

  // --- VM ioctls --------------------------------------------------------------------------------
  kvmSetUserMemoryRegion(vmFd: number, slot: number, flags: number, guestPhysAddr: bigint,
    memorySize: bigint, userspaceAddr: bigint): void;
  /**
   * KVM_GET_DIRTY_LOG of `slot` into `bitmap` (one bit per page, at least ceil(pages/64)*8 bytes);
   * returns whether any bit of `bitmap` is set afterwards.
   */
  kvmGetDirtyLog(vmFd: number, slot: number, bitmap: Uint8Array): boolean;
  /** KVM_CLEAR_DIRTY_LOG of `slot` for pages [firstPage, firstPage+numPages) set in `bitmap`. */
  kvmClearDirtyLog(vmFd: number, slot: number, firstPage: number, numPages: number, bitmap: Uint8Array): void;
  /** KVM_ENABLE_CAP on a VM or vCPU fd; `args` holds the 4 u64 args. */
  kvmEnableCap(fd: number, cap: number, flags: number, args: BigUint64Array): void;
  kvmCreateIrqchip(vmFd: number): void;
  kvmCreatePit2(vmFd: number, flags: number): void;
  kvmIrqLine(vmFd: number, irq: number, level: number): void;
  kvmSetTssAddr(vmFd: number, addr: number): void;
  kvmSetIdentityMapAddr(vmFd: number, addr: bigint): void;
  kvmIrqfd(vmFd: number, fd: number, gsi: number, flags: number, resampleFd: number): void;
  kvmIoeventfd(vmFd: number, addr: bigint, len: number, fd: number, flags: number, datamatch: bigint): void;
  /** struct kvm_clock_data (48 bytes). */
  kvmGetClock(vmFd: number, buf: Uint8Array): void;
  kvmSetClock(vmFd: number, buf: Uint8Array): void;
  /** struct kvm_irqchip (520 bytes); the caller sets chip_id. */
  kvmGetIrqchip(vmFd: number, buf: Uint8Array): void;
  kvmSetIrqchip(vmFd: number, buf: Uint8Array): void;
  /** struct kvm_pit_state2 (112 bytes). */
  kvmGetPit2(vmFd: number, buf: Uint8Array): void;
  kvmSetPit2(vmFd: number, buf: Uint8Array): void;
  /** KVM_CREATE_VCPU(id); returns the vCPU fd. */
  kvmCreateVcpu(vmFd: number, id: number): number;

  // --- vCPU ioctls ------------------------------------------------------------------------------
  /**
   * KVM_RUN. Returns 0 or the errno (EINTR (4) when a signal or immediate_exit stopped it), never
   * throws for a failed call: a V8 fast API call from optimized code (native/fast-call.h). Call it
   * through kvmRun() in kvm-run.ts, which throws the KvmError for unexpected errnos.
   */
  kvmRun(vcpuFd: number): number;
  kvmGetRegs(vcpuFd: number, buf: Uint8Array): void;      // struct kvm_regs, 144 bytes
  kvmSetRegs(vcpuFd: number, buf: Uint8Array): void;
  kvmGetSregs(vcpuFd: number, buf: Uint8Array): void;     // struct kvm_sregs, 312 bytes
  kvmSetSregs(vcpuFd: number, buf: Uint8Array): void;
  kvmGetFpu(vcpuFd: number, buf: Uint8Array): void;       // struct kvm_fpu, 416 bytes
  kvmSetFpu(vcpuFd: number, buf: Uint8Array): void;
  /** struct kvm_msrs with nmsrs and indices preset; returns the number of MSRs read. */
  kvmGetMsrs(vcpuFd: number, buf: Uint8Array): number;
  /** returns the number of MSRs written. */
  kvmSetMsrs(vcpuFd: number, buf: Uint8Array): number;
  kvmGetLapic(vcpuFd: number, buf: Uint8Array): void;     // struct kvm_lapic_state, 1024 bytes
  kvmSetLapic(vcpuFd: number, buf: Uint8Array): void;
  kvmGetXsave(vcpuFd: number, buf: Uint8Array): void;     // struct kvm_xsave, 4096 bytes
  kvmSetXsave(vcpuFd: number, buf: Uint8Array): void;
  kvmGetXcrs(vcpuFd: number, buf: Uint8Array): void;      // struct kvm_xcrs, 392 bytes
  kvmSetXcrs(vcpuFd: number, buf: Uint8Array): void;
  kvmGetVcpuEvents(vcpuFd: number, buf: Uint8Array): void; // struct kvm_vcpu_events, 64 bytes
  kvmSetVcpuEvents(vcpuFd: number, buf: Uint8Array): void;
  kvmGetMpState(vcpuFd: number, buf: Uint8Array): void;   // struct kvm_mp_state, 4 bytes
  kvmSetMpState(vcpuFd: number, buf: Uint8Array): void;
  kvmGetDebugregs(vcpuFd: number, buf: Uint8Array): void; // struct kvm_debugregs, 128 bytes
  kvmSetDebugregs(vcpuFd: number, buf: Uint8Array): void;
  /** struct kvm_cpuid2 with nent and entries filled. */
  kvmSetCpuid2(vcpuFd: number, buf: Uint8Array): void;

  // --- bulk helpers over bitmaps (no system call; see native/bitmap.cc) -------------------------
  /**
   * ORs the first `pages` bits of the KVM dirty log `log` into `dst` from page `firstPage`, atomically
   * per word; returns whether any of those bits was set.
   */
  bitmapOrLog(dst: Int32Array | Uint32Array, firstPage: number, log: Uint8Array, pages: number): boolean;
  /** The indices of the set bits of `bitmap` at or after `fromPage`, ascending, written into `out`
   *  until it is full; returns how many (fewer than out.length: no more are set). */
  bitmapPages(bitmap: Uint32Array, fromPage: number, out: Uint32Array): number;
  /**
   * Where mapped-ness (bit 63 present or 62 swapped) changes along /proc/self/pagemap `entries` (u64
   * each), starting from `startMapped` (0 or 1) before the first: the entry indices, ascending,
   * written into `out` (an element per entry at most); returns how many.
   */
  pagemapToggles(entries: Uint8Array, startMapped: number, out: Uint32Array): number;
  /**
   * Moves every set bit of `src` into `dst` (every word of `dst` up to src's length is written, zero
   * where `src` is clear), clearing `src` atomically per word; returns the number of bits moved.
   */
  bitmapTake(src: Int32Array | Uint32Array, dst: Int32Array | Uint32Array): number;
  /**
   * Moves every set bit of `src` into `dst` by OR (the rest of `dst` stays), clearing `src` atomically
   * per word; returns how many bits of `dst` it set that were clear.
   */
  bitmapTakeOr(src: Int32Array | Uint32Array, dst: Int32Array | Uint32Array): number;
  /** The number of set bits of `bitmap`. */
  bitmapCount(bitmap: Int32Array | Uint32Array): number;

  // --- bulk helpers over pages and stream bytes (no system call; see native/pages.cc) ----------
  /**
   * For each page of `pages`, writes its entry head (u32 index, u8 kind: `zeroKind` for an all-zero
   * page, else `dataKind`) to `out` at `headAt + 5i`, and for a data page its `pageBytes`, copied
   * from `bytes`, after the data pages before it from `dataAt`. Returns how many pages were data.
   * Throws RangeError for a page outside `bytes`, heads reaching `dataAt`, or an `out` too short to
   * hold every page as data.
   */
  packPages(bytes: Uint8Array, pageBytes: number, pages: Uint32Array, out: Uint8Array, headAt: number, dataAt: number, zeroKind: number, dataKind: number): number;
  /**
   * Feeds `bytes` into the running XXH3-64 kept in `state` (344 bytes, zeroed to begin): feeding in
   * pieces hashes the pieces joined. Throws RangeError for a state too short or not an XXH3 state.
   */
  xxh3Update(state: Uint8Array, bytes: Uint8Array): void;
  /** The XXH3-64 (seed 0) of everything fed into `state`, which stays as it was. */
  xxh3Digest(state: Uint8Array): bigint;
  /**
   * Writes zeros over each whole page (`pageBytes`) of `bytes` that is not all zero already, and
   * returns how many it wrote; a page already zero is only read.
   */
  clearPages(bytes: Uint8Array, pageBytes: number): number;

  // --- benchmark baseline (bench/ only) ---------------------------------------------------------
  /**
   * The C baseline for bench/exit-latency: calls KVM_RUN on `vcpuFd` in a loop, counting exits that
   * are KVM_EXIT_IO to `port`, and returns the count at the first exit that is anything else (the
   * exit is left in kvm_run for the caller to handle), or once `max` exits are counted (0: no limit).
   * `run` is that vCPU's mapped kvm_run.
   */
  benchCountPioExits(vcpuFd: number, run: ArrayBuffer, port: number, max: number): number;
  /**
   * The C baseline for bench/dirty-sync: for each (slot, pages, byte offset) u32 triple in `table`,
   * KVM_GET_DIRTY_LOG into `bitmaps` at that offset, then (if `manualProtect` and any bit is set)
   * KVM_CLEAR_DIRTY_LOG of the same bitmap. Returns how many slots had dirty pages.
   */
  benchSyncDirtyLogs(vmFd: number, table: Uint8Array, bitmaps: Uint8Array, manualProtect: number): number;
}

/** What fdWatch returns: opaque to JavaScript. */
export type FdWatchHandle = { readonly __fdWatchHandle: unique symbol };
