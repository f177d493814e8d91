// ioctls on a vCPU fd: running it and moving its state in and out as <linux/kvm.h> structs.
#include <linux/kvm.h>

#include "ioctl.h"

namespace tsvmm {
namespace {

// The sizes the TypeScript decoders (src/kvm/structs.ts) are written against.
static_assert(sizeof(struct kvm_regs) == 144);
static_assert(sizeof(struct kvm_sregs) == 312);
static_assert(sizeof(struct kvm_fpu) == 416);
static_assert(sizeof(struct kvm_lapic_state) == 1024);
constexpr size_t kXsaveSize = SIZE_THROUGH(struct kvm_xsave, region);
static_assert(kXsaveSize == 4096);
static_assert(sizeof(struct kvm_xcrs) == 392);
static_assert(sizeof(struct kvm_vcpu_events) == 64);
static_assert(sizeof(struct kvm_mp_state) == 4);
static_assert(sizeof(struct kvm_debugregs) == 128);
constexpr size_t kMsrsHeader = SIZE_THROUGH(struct kvm_msrs, pad);
static_assert(kMsrsHeader == 8 && sizeof(struct kvm_msr_entry) == 16);
constexpr size_t kCpuid2Header = SIZE_THROUGH(struct kvm_cpuid2, padding);
static_assert(kCpuid2Header == 8 && sizeof(struct kvm_cpuid_entry2) == 40);

// A kicked vCPU (signal or immediate_exit) is an expected outcome, so EINTR is a return value.
Napi::Value kvmRun(const Napi::CallbackInfo& info) {
  Args args(info, __func__);
  int32_t fd;
  if (!args.Int32(0, "vcpuFd", &fd)) return {};
  if (::ioctl(fd, KVM_RUN, 0UL) == 0) return Napi::Number::New(args.Env(), 0);
  int err = errno;
  if (err == EINTR) return Napi::Number::New(args.Env(), EINTR);
  return ThrowSyscallError(args.Env(), REQUEST_NAME(KVM_RUN), err);
}

IOCTL_BUFFER(kvmGetRegs, KVM_GET_REGS, sizeof(struct kvm_regs))
IOCTL_BUFFER(kvmSetRegs, KVM_SET_REGS, sizeof(struct kvm_regs))
IOCTL_BUFFER(kvmGetSregs, KVM_GET_SREGS, sizeof(struct kvm_sregs))
IOCTL_BUFFER(kvmSetSregs, KVM_SET_SREGS, sizeof(struct kvm_sregs))
IOCTL_BUFFER(kvmGetFpu, KVM_GET_FPU, sizeof(struct kvm_fpu))
IOCTL_BUFFER(kvmSetFpu, KVM_SET_FPU, sizeof(struct kvm_fpu))
IOCTL_COUNTED(kvmGetMsrs, KVM_GET_MSRS, kMsrsHeader, sizeof(struct kvm_msr_entry), kIoctlResult)
IOCTL_COUNTED(kvmSetMsrs, KVM_SET_MSRS, kMsrsHeader, sizeof(struct kvm_msr_entry), kIoctlResult)
IOCTL_BUFFER(kvmGetLapic, KVM_GET_LAPIC, sizeof(struct kvm_lapic_state))
IOCTL_BUFFER(kvmSetLapic, KVM_SET_LAPIC, sizeof(struct kvm_lapic_state))
IOCTL_BUFFER(kvmGetXsave, KVM_GET_XSAVE, kXsaveSize)
IOCTL_BUFFER(kvmSetXsave, KVM_SET_XSAVE, kXsaveSize)
IOCTL_BUFFER(kvmGetXcrs, KVM_GET_XCRS, sizeof(struct kvm_xcrs))
IOCTL_BUFFER(kvmSetXcrs, KVM_SET_XCRS, sizeof(struct kvm_xcrs))
IOCTL_BUFFER(kvmGetVcpuEvents, KVM_GET_VCPU_EVENTS, sizeof(struct kvm_vcpu_events))
IOCTL_BUFFER(kvmSetVcpuEvents, KVM_SET_VCPU_EVENTS, sizeof(struct kvm_vcpu_events))
IOCTL_BUFFER(kvmGetMpState, KVM_GET_MP_STATE, sizeof(struct kvm_mp_state))
IOCTL_BUFFER(kvmSetMpState, KVM_SET_MP_STATE, sizeof(struct kvm_mp_state))
IOCTL_BUFFER(kvmGetDebugregs, KVM_GET_DEBUGREGS, sizeof(struct kvm_debugregs))
IOCTL_BUFFER(kvmSetDebugregs, KVM_SET_DEBUGREGS, sizeof(struct kvm_debugregs))
IOCTL_COUNTED(kvmSetCpuid2, KVM_SET_CPUID2, kCpuid2Header, sizeof(struct kvm_cpuid_entry2),
              kNothing)

}  // namespace

void RegisterKvmVcpu(Napi::Env env, Napi::Object exports) {
  EXPORT_FUNCTION(env, exports, kvmRun);
  EXPORT_FUNCTION(env, exports, kvmGetRegs);
  EXPORT_FUNCTION(env, exports, kvmSetRegs);
  EXPORT_FUNCTION(env, exports, kvmGetSregs);
  EXPORT_FUNCTION(env, exports, kvmSetSregs);
  EXPORT_FUNCTION(env, exports, kvmGetFpu);
  EXPORT_FUNCTION(env, exports, kvmSetFpu);
  EXPORT_FUNCTION(env, exports, kvmGetMsrs);
  EXPORT_FUNCTION(env, exports, kvmSetMsrs);
  EXPORT_FUNCTION(env, exports, kvmGetLapic);
  EXPORT_FUNCTION(env, exports, kvmSetLapic);
  EXPORT_FUNCTION(env, exports, kvmGetXsave);
  EXPORT_FUNCTION(env, exports, kvmSetXsave);
  EXPORT_FUNCTION(env, exports, kvmGetXcrs);
  EXPORT_FUNCTION(env, exports, kvmSetXcrs);
  EXPORT_FUNCTION(env, exports, kvmGetVcpuEvents);
  EXPORT_FUNCTION(env, exports, kvmSetVcpuEvents);
  EXPORT_FUNCTION(env, exports, kvmGetMpState);
  EXPORT_FUNCTION(env, exports, kvmSetMpState);
  EXPORT_FUNCTION(env, exports, kvmGetDebugregs);
  EXPORT_FUNCTION(env, exports, kvmSetDebugregs);
  EXPORT_FUNCTION(env, exports, kvmSetCpuid2);
}

}  // namespace tsvmm
