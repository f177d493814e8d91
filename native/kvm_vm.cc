// ioctls on a VM fd: guest memory, dirty logging, the in-kernel irqchip and PIT, interrupt and
// doorbell eventfds, the VM clock, vCPU creation.
#include <linux/kvm.h>

#include <cstring>

#include "ioctl.h"
#include "zero.h"

namespace tsvmm {
namespace {

static_assert(sizeof(struct kvm_clock_data) == 48);
static_assert(sizeof(struct kvm_irqchip) == 520);
static_assert(sizeof(struct kvm_pit_state2) == 112);

Napi::Value kvmSetUserMemoryRegion(const Napi::CallbackInfo& info) {
  Args args(info, __func__);
  int32_t fd;
  struct kvm_userspace_memory_region region = {};
  if (!args.Int32(0, "vmFd", &fd) || !args.Uint32(1, "slot", &region.slot) ||
      !args.Uint32(2, "flags", &region.flags) ||
      !args.BigUint64(3, "guestPhysAddr", &region.guest_phys_addr) ||
      !args.BigUint64(4, "memorySize", &region.memory_size) ||
      !args.BigUint64(5, "userspaceAddr", &region.userspace_addr)) {
    return {};
  }
  if (!IOCTL(args.Env(), fd, KVM_SET_USER_MEMORY_REGION, &region)) return {};
  return args.Env().Undefined();
}

// The bitmap's required size depends on the slot's size, which only the kernel knows here, so the
// caller is trusted to pass at least ceil(pages / 64) * 8 bytes. Returns how many bits of `bitmap`
// are set afterwards (KVM leaves those past the slot's last page clear): every caller needs the
// count, and a second addon call to make it was a third of a clean sync's time in nested KVM.
Napi::Value kvmGetDirtyLog(const Napi::CallbackInfo& info) {
  Args args(info, __func__);
  int32_t fd;
  struct kvm_dirty_log log = {};
  Bytes bitmap;
  if (!args.Int32(0, "vmFd", &fd) || !args.Uint32(1, "slot", &log.slot) ||
      !args.Uint8Array(2, "bitmap", 0, &bitmap)) {
    return {};
  }
  log.dirty_bitmap = bitmap.data;
  if (!IOCTL(args.Env(), fd, KVM_GET_DIRTY_LOG, &log)) return {};
  // Whether any bit is set: the scan stops at the first, as the caller needs no more to know whether to
  // clear (counting a clean 1 GiB log cost a sync ~2.5 us cold, bench/dirty-sync).
  return Napi::Boolean::New(args.Env(), !AllZeroBytes(bitmap.data, bitmap.length));
}

Napi::Value kvmClearDirtyLog(const Napi::CallbackInfo& info) {
  Args args(info, __func__);
  int32_t fd;
  struct kvm_clear_dirty_log log = {};
  uint64_t first_page;
  Bytes bitmap;
  if (!args.Int32(0, "vmFd", &fd) || !args.Uint32(1, "slot", &log.slot) ||
      !args.SafeUint(2, "firstPage", &first_page) ||
      !args.Uint32(3, "numPages", &log.num_pages)) {
    return {};
  }
  // A Number, not a BigInt: a page index is far below 2^53, and a BigInt argument cost the sync a
  // conversion it runs cold (bench/dirty-sync).
  log.first_page = first_page;
  // The kernel reads num_pages rounded up to whole u64 words.
  size_t bitmap_bytes = ((static_cast<size_t>(log.num_pages) + 63) / 64) * 8;
  if (!args.Uint8Array(4, "bitmap", bitmap_bytes, &bitmap)) return {};
  log.dirty_bitmap = bitmap.data;
  if (!IOCTL(args.Env(), fd, KVM_CLEAR_DIRTY_LOG, &log)) return {};
  return args.Env().Undefined();
}

Napi::Value kvmEnableCap(const Napi::CallbackInfo& info) {
  Args args(info, __func__);
  int32_t fd;
  struct kvm_enable_cap cap = {};
  Napi::BigUint64Array cap_args;
  if (!args.Int32(0, "fd", &fd) || !args.Uint32(1, "cap", &cap.cap) ||
      !args.Uint32(2, "flags", &cap.flags) || !args.BigUint64Array(3, "args", 4, &cap_args)) {
    return {};
  }
  std::memcpy(cap.args, cap_args.Data(), sizeof cap.args);
  if (!IOCTL(args.Env(), fd, KVM_ENABLE_CAP, &cap)) return {};
  return args.Env().Undefined();
}

Napi::Value kvmCreateIrqchip(const Napi::CallbackInfo& info) {
  Args args(info, __func__);
  int32_t fd;
  if (!args.Int32(0, "vmFd", &fd)) return {};
  if (!IOCTL(args.Env(), fd, KVM_CREATE_IRQCHIP, 0UL)) return {};
  return args.Env().Undefined();
}

Napi::Value kvmCreatePit2(const Napi::CallbackInfo& info) {
  Args args(info, __func__);
  int32_t fd;
  struct kvm_pit_config config = {};
  if (!args.Int32(0, "vmFd", &fd) || !args.Uint32(1, "flags", &config.flags)) return {};
  if (!IOCTL(args.Env(), fd, KVM_CREATE_PIT2, &config)) return {};
  return args.Env().Undefined();
}

Napi::Value kvmIrqLine(const Napi::CallbackInfo& info) {
  Args args(info, __func__);
  int32_t fd;
  struct kvm_irq_level level = {};
  if (!args.Int32(0, "vmFd", &fd) || !args.Uint32(1, "irq", &level.irq) ||
      !args.Uint32(2, "level", &level.level)) {
    return {};
  }
  if (!IOCTL(args.Env(), fd, KVM_IRQ_LINE, &level)) return {};
  return args.Env().Undefined();
}

// KVM_SET_TSS_ADDR takes the address by value; KVM_SET_IDENTITY_MAP_ADDR through a pointer.
Napi::Value kvmSetTssAddr(const Napi::CallbackInfo& info) {
  Args args(info, __func__);
  int32_t fd;
  uint64_t addr;
  if (!args.Int32(0, "vmFd", &fd) || !args.SafeUint(1, "addr", &addr)) return {};
  if (!IOCTL(args.Env(), fd, KVM_SET_TSS_ADDR, static_cast<unsigned long>(addr))) return {};
  return args.Env().Undefined();
}

Napi::Value kvmSetIdentityMapAddr(const Napi::CallbackInfo& info) {
  Args args(info, __func__);
  int32_t fd;
  __u64 addr;
  if (!args.Int32(0, "vmFd", &fd) || !args.BigUint64(1, "addr", &addr)) return {};
  if (!IOCTL(args.Env(), fd, KVM_SET_IDENTITY_MAP_ADDR, &addr)) return {};
  return args.Env().Undefined();
}

Napi::Value kvmIrqfd(const Napi::CallbackInfo& info) {
  Args args(info, __func__);
  int32_t fd, event_fd, resample_fd;
  struct kvm_irqfd irqfd = {};
  if (!args.Int32(0, "vmFd", &fd) || !args.Int32(1, "fd", &event_fd) ||
      !args.Uint32(2, "gsi", &irqfd.gsi) || !args.Uint32(3, "flags", &irqfd.flags) ||
      !args.Int32(4, "resampleFd", &resample_fd)) {
    return {};
  }
  irqfd.fd = static_cast<__u32>(event_fd);
  irqfd.resamplefd = static_cast<__u32>(resample_fd);
  if (!IOCTL(args.Env(), fd, KVM_IRQFD, &irqfd)) return {};
  return args.Env().Undefined();
}

Napi::Value kvmIoeventfd(const Napi::CallbackInfo& info) {
  Args args(info, __func__);
  int32_t fd;
  struct kvm_ioeventfd ioeventfd = {};
  if (!args.Int32(0, "vmFd", &fd) || !args.BigUint64(1, "addr", &ioeventfd.addr) ||
      !args.Uint32(2, "len", &ioeventfd.len) || !args.Int32(3, "fd", &ioeventfd.fd) ||
      !args.Uint32(4, "flags", &ioeventfd.flags) ||
      !args.BigUint64(5, "datamatch", &ioeventfd.datamatch)) {
    return {};
  }
  if (!IOCTL(args.Env(), fd, KVM_IOEVENTFD, &ioeventfd)) return {};
  return args.Env().Undefined();
}

IOCTL_BUFFER(kvmGetClock, KVM_GET_CLOCK, sizeof(struct kvm_clock_data))
IOCTL_BUFFER(kvmSetClock, KVM_SET_CLOCK, sizeof(struct kvm_clock_data))
IOCTL_BUFFER(kvmGetIrqchip, KVM_GET_IRQCHIP, sizeof(struct kvm_irqchip))
IOCTL_BUFFER(kvmSetIrqchip, KVM_SET_IRQCHIP, sizeof(struct kvm_irqchip))
IOCTL_BUFFER(kvmGetPit2, KVM_GET_PIT2, sizeof(struct kvm_pit_state2))
IOCTL_BUFFER(kvmSetPit2, KVM_SET_PIT2, sizeof(struct kvm_pit_state2))
IOCTL_VALUE(kvmCreateVcpu, KVM_CREATE_VCPU, id)

}  // namespace

void RegisterKvmVm(Napi::Env env, Napi::Object exports) {
  EXPORT_FUNCTION(env, exports, kvmSetUserMemoryRegion);
  EXPORT_FUNCTION(env, exports, kvmGetDirtyLog);
  EXPORT_FUNCTION(env, exports, kvmClearDirtyLog);
  EXPORT_FUNCTION(env, exports, kvmEnableCap);
  EXPORT_FUNCTION(env, exports, kvmCreateIrqchip);
  EXPORT_FUNCTION(env, exports, kvmCreatePit2);
  EXPORT_FUNCTION(env, exports, kvmIrqLine);
  EXPORT_FUNCTION(env, exports, kvmSetTssAddr);
  EXPORT_FUNCTION(env, exports, kvmSetIdentityMapAddr);
  EXPORT_FUNCTION(env, exports, kvmIrqfd);
  EXPORT_FUNCTION(env, exports, kvmIoeventfd);
  EXPORT_FUNCTION(env, exports, kvmGetClock);
  EXPORT_FUNCTION(env, exports, kvmSetClock);
  EXPORT_FUNCTION(env, exports, kvmGetIrqchip);
  EXPORT_FUNCTION(env, exports, kvmSetIrqchip);
  EXPORT_FUNCTION(env, exports, kvmGetPit2);
  EXPORT_FUNCTION(env, exports, kvmSetPit2);
  EXPORT_FUNCTION(env, exports, kvmCreateVcpu);
}

}  // namespace tsvmm
