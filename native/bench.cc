// The C baseline that bench/exit-latency compares the TypeScript exit path against. It must do no
// more work per exit than the minimum (KVM_RUN, two loads, a compare), or the comparison flatters
// TypeScript.
#include <linux/kvm.h>

#include <cstdint>

#include "ioctl.h"

namespace tsvmm {
namespace {

Napi::Value benchCountPioExits(const Napi::CallbackInfo& info) {
  Args args(info, __func__);
  int32_t fd;
  Napi::ArrayBuffer run_buffer;
  uint32_t port, max;
  if (!args.Int32(0, "vcpuFd", &fd) ||
      !args.ArrayBuffer(1, "run", sizeof(struct kvm_run), &run_buffer) ||
      !args.Uint32(2, "port", &port) || !args.Uint32(3, "max", &max)) {
    return {};
  }
  const struct kvm_run* run = static_cast<const struct kvm_run*>(run_buffer.Data());
  uint64_t count = 0;
  for (;;) {
    if (::ioctl(fd, KVM_RUN, 0UL) != 0) {
      int err = errno;
      if (err == EINTR) break;
      return ThrowSyscallError(args.Env(), REQUEST_NAME(KVM_RUN), err);
    }
    if (run->exit_reason != KVM_EXIT_IO || run->io.port != port) break;
    if (++count == max) break;
  }
  return Napi::Number::New(args.Env(), static_cast<double>(count));
}

// The C baseline of bench/dirty-sync: for each slot, KVM_GET_DIRTY_LOG into its part of `bitmaps`
// and, with manual protection, KVM_CLEAR_DIRTY_LOG of the same bitmap when any bit is set: the
// ioctls a sync needs and nothing else. `table` holds u32 triples (slot, pages, byte offset).
// Returns how many slots had dirty pages.
Napi::Value benchSyncDirtyLogs(const Napi::CallbackInfo& info) {
  Args args(info, __func__);
  int32_t fd;
  Bytes table;
  Bytes bitmaps;
  uint32_t manual_protect;
  if (!args.Int32(0, "vmFd", &fd) || !args.Uint8Array(1, "table", 0, &table) ||
      !args.Uint8Array(2, "bitmaps", 0, &bitmaps) || !args.Uint32(3, "manualProtect", &manual_protect)) {
    return {};
  }
  const uint32_t* t = reinterpret_cast<const uint32_t*>(table.data);
  size_t entries = table.length / 12;
  uint32_t dirty_slots = 0;
  for (size_t i = 0; i < entries; ++i) {
    uint32_t slot = t[i * 3], pages = t[i * 3 + 1], offset = t[i * 3 + 2];
    size_t words = (pages + 63) / 64;
    if (offset + words * 8 > bitmaps.length) {
      Napi::RangeError::New(args.Env(), "benchSyncDirtyLogs: table entry outside bitmaps").ThrowAsJavaScriptException();
      return {};
    }
    uint64_t* bitmap = reinterpret_cast<uint64_t*>(bitmaps.data + offset);
    struct kvm_dirty_log log = {};
    log.slot = slot;
    log.dirty_bitmap = bitmap;
    if (::ioctl(fd, KVM_GET_DIRTY_LOG, &log) != 0) return ThrowSyscallError(args.Env(), REQUEST_NAME(KVM_GET_DIRTY_LOG), errno);
    bool any = false;
    for (size_t w = 0; w < words && !any; ++w) any = bitmap[w] != 0;
    if (!any) continue;
    ++dirty_slots;
    if (!manual_protect) continue;
    struct kvm_clear_dirty_log clear = {};
    clear.slot = slot;
    clear.first_page = 0;
    clear.num_pages = pages;
    clear.dirty_bitmap = bitmap;
    if (::ioctl(fd, KVM_CLEAR_DIRTY_LOG, &clear) != 0) return ThrowSyscallError(args.Env(), REQUEST_NAME(KVM_CLEAR_DIRTY_LOG), errno);
  }
  return Napi::Number::New(args.Env(), dirty_slots);
}

}  // namespace

void RegisterBench(Napi::Env env, Napi::Object exports) {
  EXPORT_FUNCTION(env, exports, benchCountPioExits);
  EXPORT_FUNCTION(env, exports, benchSyncDirtyLogs);
}

}  // namespace tsvmm
