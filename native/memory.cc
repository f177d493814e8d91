// Guest RAM and kvm_run mappings, exposed to JS as external ArrayBuffers over the mapping itself.
//
// No finalizer unmaps them: KVM keeps using a mapping after the last JS view is gone (a memslot,
// a vCPU's kvm_run), so only the owner knows when munmap is safe, and it calls munmap explicitly.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <string>

#include "addon.h"
#include "args.h"

namespace tsvmm {
namespace {

Napi::Value memfdCreate(const Napi::CallbackInfo& info) {
  Args args(info, __func__);
  std::string name;
  if (!args.String(0, "name", &name)) return {};
  int fd = ::memfd_create(name.c_str(), MFD_CLOEXEC);
  if (fd < 0) return ThrowSyscallError(args.Env(), "memfd_create", errno);
  return Napi::Number::New(args.Env(), fd);
}

Napi::Value ftruncate(const Napi::CallbackInfo& info) {
  Args args(info, __func__);
  int32_t fd;
  uint64_t size;
  if (!args.Int32(0, "fd", &fd) || !args.BigUint64(1, "sizeBytes", &size)) return {};
  if (::ftruncate(fd, static_cast<off_t>(size)) != 0) {
    return ThrowSyscallError(args.Env(), "ftruncate", errno);
  }
  return args.Env().Undefined();
}

Napi::Value MappingToArrayBuffer(Napi::Env env, void* address, size_t length) {
  if (address == MAP_FAILED) return ThrowSyscallError(env, "mmap", errno);
  Napi::ArrayBuffer buffer = Napi::ArrayBuffer::New(env, address, length);
  if (env.IsExceptionPending()) {
    // V8 refused the buffer (Node 20 caps ArrayBuffers at 4 GiB): nobody else can ever unmap this.
    ::munmap(address, length);
    return {};
  }
  return buffer;
}

// Shared anonymous memory (guest RAM itself is mmapPrivate's, for huge pages). MAP_NORESERVE: a
// mapping sized for the worst case but mostly never touched must not be charged against overcommit.
Napi::Value mmapAnonymous(const Napi::CallbackInfo& info) {
  Args args(info, __func__);
  uint64_t size;
  if (!args.SafeUint(0, "sizeBytes", &size)) return {};
  void* address = ::mmap(nullptr, size, PROT_READ | PROT_WRITE,
                         MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  return MappingToArrayBuffer(args.Env(), address, size);
}

// Guest RAM: private anonymous memory, as QEMU's default RAM is, so that the kernel may back it with
// transparent huge pages (shared memory gets none while shmem_enabled=never, Debian's default).
// Threads of this process reach it through mappingView; other processes cannot. MAP_NORESERVE as
// for mmapAnonymous.
//
// The mapping starts on a 2 MiB boundary (mapped 2 MiB larger, the ends trimmed off, as QEMU's
// qemu_ram_mmap does): THP backs only aligned 2 MiB ranges, and KVM maps a guest 2 MiB page with
// one large entry only when its guest-physical and host addresses agree modulo 2 MiB. Kernels before
// 6.7 do not align large anonymous mappings themselves.
Napi::Value mmapPrivate(const Napi::CallbackInfo& info) {
  Args args(info, __func__);
  uint64_t size;
  if (!args.SafeUint(0, "sizeBytes", &size)) return {};
  const uint64_t kAlign = 2 << 20;
  if (size == 0) return ThrowSyscallError(args.Env(), "mmap", EINVAL);
  void* reserved = ::mmap(nullptr, size + kAlign, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (reserved == MAP_FAILED) return ThrowSyscallError(args.Env(), "mmap", errno);
  uintptr_t start = reinterpret_cast<uintptr_t>(reserved);
  uintptr_t aligned = (start + kAlign - 1) & ~static_cast<uintptr_t>(kAlign - 1);
  if (aligned > start) ::munmap(reserved, aligned - start);
  uintptr_t end = start + size + kAlign;
  if (end > aligned + size) ::munmap(reinterpret_cast<void*>(aligned + size), end - (aligned + size));
  return MappingToArrayBuffer(args.Env(), reinterpret_cast<void*>(aligned), size);
}

// mappingView(address, sizeBytes): an ArrayBuffer over memory this process already maps (guest RAM
// mapped by another thread's mmapPrivate). No system call and no ownership: the mapping's owner
// unmaps it, and only after every thread holding a view has let go. Never pass a view to munmap.
Napi::Value mappingView(const Napi::CallbackInfo& info) {
  Args args(info, __func__);
  uint64_t address, size;
  if (!args.BigUint64(0, "address", &address) || !args.SafeUint(1, "sizeBytes", &size)) return {};
  if (address == 0 || address % 4096 != 0 || size == 0) {
    Napi::RangeError::New(args.Env(), "mappingView: address must be a page-aligned mapping address, with a size above 0")
        .ThrowAsJavaScriptException();
    return {};
  }
  return Napi::ArrayBuffer::New(args.Env(), reinterpret_cast<void*>(static_cast<uintptr_t>(address)), size);
}

Napi::Value mmapShared(const Napi::CallbackInfo& info) {
  Args args(info, __func__);
  int32_t fd;
  uint64_t size, offset;
  if (!args.Int32(0, "fd", &fd) || !args.SafeUint(1, "sizeBytes", &size) ||
      !args.SafeUint(2, "offset", &offset)) {
    return {};
  }
  void* address = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
                         static_cast<off_t>(offset));
  return MappingToArrayBuffer(args.Env(), address, size);
}

// Detach before unmapping so that every JS view of the buffer reads as empty instead of faulting.
// The caller must only pass buffers from mmapAnonymous/mmapShared: nothing here can tell those
// apart from a V8-allocated ArrayBuffer.
Napi::Value munmap(const Napi::CallbackInfo& info) {
  Args args(info, __func__);
  Napi::ArrayBuffer buffer;
  if (!args.ArrayBuffer(0, "buffer", 0, &buffer)) return {};
  void* address = buffer.Data();
  size_t length = buffer.ByteLength();
  buffer.Detach();
  if (args.Env().IsExceptionPending()) return {};
  if (::munmap(address, length) != 0) return ThrowSyscallError(args.Env(), "munmap", errno);
  return args.Env().Undefined();
}

// madvise(buffer, offset, length, advice) over part of a mapping from mmapAnonymous/mmapShared
// (MADV_POPULATE_WRITE: fault a range in with one call instead of one page fault per page).
Napi::Value madvise(const Napi::CallbackInfo& info) {
  Args args(info, __func__);
  Napi::ArrayBuffer buffer;
  uint64_t offset, length;
  int32_t advice;
  if (!args.ArrayBuffer(0, "buffer", 0, &buffer) || !args.SafeUint(1, "offset", &offset) ||
      !args.SafeUint(2, "length", &length) || !args.Int32(3, "advice", &advice)) {
    return {};
  }
  if (offset + length > buffer.ByteLength()) {
    Napi::RangeError::New(args.Env(), "madvise: the range lies outside the buffer").ThrowAsJavaScriptException();
    return {};
  }
  if (::madvise(static_cast<uint8_t*>(buffer.Data()) + offset, length, advice) != 0) {
    return ThrowSyscallError(args.Env(), "madvise", errno);
  }
  return args.Env().Undefined();
}

Napi::Value bufferAddress(const Napi::CallbackInfo& info) {
  Args args(info, __func__);
  Napi::ArrayBuffer buffer;
  if (!args.ArrayBuffer(0, "buffer", 0, &buffer)) return {};
  return Napi::BigInt::New(args.Env(), static_cast<uint64_t>(
                                           reinterpret_cast<uintptr_t>(buffer.Data())));
}

}  // namespace

void RegisterMemory(Napi::Env env, Napi::Object exports) {
  EXPORT_FUNCTION(env, exports, memfdCreate);
  EXPORT_FUNCTION(env, exports, ftruncate);
  EXPORT_FUNCTION(env, exports, mmapAnonymous);
  EXPORT_FUNCTION(env, exports, mmapPrivate);
  EXPORT_FUNCTION(env, exports, mappingView);
  EXPORT_FUNCTION(env, exports, mmapShared);
  EXPORT_FUNCTION(env, exports, munmap);
  EXPORT_FUNCTION(env, exports, bufferAddress);
  EXPORT_FUNCTION(env, exports, madvise);
}

}  // namespace tsvmm
