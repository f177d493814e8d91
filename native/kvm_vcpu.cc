// ioctls on a vCPU fd: running it and moving its state in and out as <linux/kvm.h> structs.
#include <linux/kvm.h>

#include "fast-call.h"
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

// KVM_RUN returns the errno (0 for an exit to handle) instead of throwing: V8 calls it as a fast API
// call from the optimized run loop, where throwing is impossible, and the slow path must answer the
// same. Which errnos are expected (EINTR for a kick, EAGAIN for an AP's SIPI) and which become a
// KvmError is the caller's policy (src/kvm/kvm-run.ts).
int32_t KvmRunFast(v8::Local<v8::Value> /* receiver */, int32_t fd) {
  return ::ioctl(fd, KVM_RUN, 0UL) == 0 ? 0 : errno;
}

void kvmRun(const v8::FunctionCallbackInfo<v8::Value>& info) {
  int32_t fd;
  if (!FastArgInt32(info, __func__, 0, "vcpuFd", &fd)) return;
  info.GetReturnValue().Set(KvmRunFast(info.This(), fd));
}

const v8::CTypeInfo kKvmRunArgs[] = {v8::CTypeInfo(v8::CTypeInfo::Type::kV8Value),
                                     v8::CTypeInfo(v8::CTypeInfo::Type::kInt32)};
const v8::CFunctionInfo kKvmRunInfo(v8::CTypeInfo(v8::CTypeInfo::Type::kInt32), 2, kKvmRunArgs);
const v8::CFunction kKvmRunFast(reinterpret_cast<const void*>(&KvmRunFast), &kKvmRunInfo);

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
  ExportFastFunction(env, exports, "kvmRun", 1, kvmRun, &kKvmRunFast);
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
